"""Repository functions of the REST core: chat notification subscriptions.

Plain ``async def``s that take an ``AsyncSession`` and return the frozen
dataclasses of ``bridge.subscriptions``; the caller owns the transaction
(``async with db.sessions.begin() as session: ...``). Every read takes ``now``
so that an expired subscription is invisible at once, whether or not the
sweeper (:func:`delete_expired_subscriptions`) has removed it yet.

Idempotency (docs/decisions.md "Creating resources and idempotency"):
``(user_uri, client_correlator)`` is unique; :func:`create_subscription` returns
the live subscription with the same correlator instead of a second one, replaces
an expired one, and resolves a concurrent duplicate insert by re-reading the
winner.
"""

from __future__ import annotations

import secrets
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.errors import StoreError
from bridge.ids import SubscriptionId, UserUri
from bridge.subscriptions import NewSubscription, NotificationFormat, Subscription, expiry
from state.db import aware
from state.models import ChatSubscriptionRow

_T = ChatSubscriptionRow


def new_subscription_id() -> SubscriptionId:
    """A fresh, unguessable subscription id (URL-safe)."""
    return SubscriptionId("sub-" + secrets.token_hex(8))


def _to_subscription(row: ChatSubscriptionRow) -> Subscription:
    return Subscription(
        id=SubscriptionId(row.id),
        user=UserUri(row.user_uri),
        notify_url=row.notify_url,
        callback_data=row.callback_data,
        notification_format=NotificationFormat(row.notification_format),
        client_correlator=row.client_correlator,
        duration=row.duration,
        created_at=aware(row.created_at),
        expires_at=None if row.expires_at is None else aware(row.expires_at),
        confirmed_chat_supported=row.confirmed_chat_supported,
        adhoc_chat_supported=row.adhoc_chat_supported,
    )


def _live(now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(_T.expires_at.is_(None), _T.expires_at > now)


async def find_subscription_by_correlator(
    session: AsyncSession, user: UserUri, correlator: str, now: datetime
) -> Subscription | None:
    """The live subscription ``user`` created with ``correlator``, if any."""
    row = await session.scalar(
        sa.select(_T).where(_T.user_uri == user, _T.client_correlator == correlator, _live(now))
    )
    return None if row is None else _to_subscription(row)


async def create_subscription(
    session: AsyncSession, new: NewSubscription, now: datetime
) -> tuple[Subscription, bool]:
    """Store ``new``; return it and True, or the existing same-correlator one and False."""
    if new.client_correlator is not None:
        existing = await find_subscription_by_correlator(
            session, new.user, new.client_correlator, now
        )
        if existing is not None:
            return existing, False
        # an expired subscription keeps its correlator until swept: free it
        await session.execute(
            sa.delete(_T).where(
                _T.user_uri == new.user,
                _T.client_correlator == new.client_correlator,
                sa.not_(_live(now)),
            )
        )
    row = ChatSubscriptionRow(
        id=new_subscription_id(),
        user_uri=new.user,
        notify_url=new.notify_url,
        callback_data=new.callback_data,
        notification_format=new.notification_format.value,
        client_correlator=new.client_correlator,
        duration=new.duration,
        created_at=now,
        expires_at=expiry(now, new.duration),
        confirmed_chat_supported=new.confirmed_chat_supported,
        adhoc_chat_supported=new.adhoc_chat_supported,
    )
    try:
        async with session.begin_nested():
            session.add(row)
    except IntegrityError as exc:
        if new.client_correlator is None:
            raise StoreError(f"cannot store subscription: {exc.orig}") from exc
        winner = await find_subscription_by_correlator(
            session, new.user, new.client_correlator, now
        )
        if winner is None:
            raise StoreError(f"cannot store subscription: {exc.orig}") from exc
        return winner, False
    return _to_subscription(row), True


async def get_subscription(
    session: AsyncSession, user: UserUri, subscription_id: str, now: datetime
) -> Subscription | None:
    """The live subscription ``subscription_id`` of ``user``, or None."""
    row = await session.scalar(
        sa.select(_T).where(_T.id == subscription_id, _T.user_uri == user, _live(now))
    )
    return None if row is None else _to_subscription(row)


async def subscription_format(
    session: AsyncSession, subscription_id: str
) -> NotificationFormat | None:
    """The ``notificationFormat`` of a stored subscription (live or not), or None if unknown."""
    value = await session.scalar(sa.select(_T.notification_format).where(_T.id == subscription_id))
    return None if value is None else NotificationFormat(value)


async def list_subscriptions(
    session: AsyncSession, user: UserUri, now: datetime
) -> list[Subscription]:
    """Every live subscription of ``user``, oldest first."""
    rows = await session.scalars(
        sa.select(_T).where(_T.user_uri == user, _live(now)).order_by(_T.created_at, _T.id)
    )
    return [_to_subscription(r) for r in rows]


async def active_subscriptions(
    session: AsyncSession, user: UserUri, now: datetime
) -> list[Subscription]:
    """The subscriptions that receive ``user``'s notifications at ``now``."""
    return await list_subscriptions(session, user, now)


async def delete_subscription(
    session: AsyncSession, user: UserUri, subscription_id: str, now: datetime
) -> bool:
    """Delete a live subscription of ``user``; False if there was none."""
    result = await session.execute(
        sa.delete(_T).where(_T.id == subscription_id, _T.user_uri == user, _live(now))
    )
    return _rowcount(result) > 0


async def delete_expired_subscriptions(session: AsyncSession, now: datetime) -> int:
    """Remove every subscription whose lifetime has ended; return how many."""
    result = await session.execute(
        sa.delete(_T).where(_T.expires_at.is_not(None), _T.expires_at <= now)
    )
    return _rowcount(result)


async def delete_subscriptions_by_notify_url(
    session: AsyncSession, url: str, *, user: str | None = None, path_suffix: str | None = None
) -> int:
    """Remove every subscription notifying ``url`` (a deleted channel); return how many.

    With ``user`` and ``path_suffix`` (``/channels/{channelId}/callback``), that
    user's subscriptions whose notifyURL ends so go too: a callbackURL stored in
    another spelling by a bridge before notifyURLs were canonicalized at
    subscription time (channel ids are unique and hold no LIKE wildcard).
    """
    match: sa.ColumnElement[bool] = _T.notify_url == url
    if user is not None and path_suffix is not None:
        match = sa.or_(match, sa.and_(_T.user_uri == user, _T.notify_url.endswith(path_suffix)))
    result = await session.execute(sa.delete(_T).where(match))
    return _rowcount(result)


def _rowcount(result: object) -> int:
    count = getattr(result, "rowcount", 0)
    return int(count) if isinstance(count, int) and count > 0 else 0
