"""The Notification Channels (OMA NotificationChannel v1.0): repository functions.

A channel's queue is the outbox rows whose ``channel_id`` is the channel
(``state.outbox`` routes a notification there when its ``notify_url`` is the
``callbackURL`` of a live channel of the same user). The queue is one lane:
the long poll claims it from its head on (:func:`claim_channel_items`, with
``state.outbox.claim_prefix``), then settles or releases what it took
(``state.outbox``, "Lanes and claims"). Removing a channel removes its queue
and the subscriptions that notify its ``callbackURL``. Both tables
(``ChannelRow``, ``OutboxRow``) are defined in ``state.outbox``.

Every function takes an ``AsyncSession``; the caller owns the transaction
(docs/architecture.md "Store"). Timestamps are timezone-aware UTC; SQLite hands them back
naive, so they are re-tagged on the way out.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.errors import StoreError
from bridge.ids import ChannelId, UserUri
from bridge.ports import Notification
from state.db import aware
from state.outbox import ChannelRow, OutboxRow, claim_prefix, lane_order, settle, utcnow

log = logging.getLogger(__name__)

_O = OutboxRow
_C = ChannelRow
_T: sa.Table = cast(sa.Table, OutboxRow.__table__)
_TS = sa.DateTime(timezone=True)


@dataclass(frozen=True)
class Channel:
    """A Notification Channel as stored (OMA NotificationChannel v1.0)."""

    id: ChannelId
    user: UserUri
    channel_type: str
    client_correlator: str | None
    application_tag: str | None
    max_notifications: int
    lifetime: int
    callback_url: str
    created_at: datetime
    expires_at: datetime

    def remaining(self, now: datetime) -> int:
        """Whole seconds of lifetime left at ``now`` (rounded up, at least 0)."""
        left = (self.expires_at - now).total_seconds()
        return max(0, int(-(-left // 1)))


def _to_channel(row: ChannelRow) -> Channel:
    return Channel(
        id=ChannelId(row.id),
        user=UserUri(row.user_uri),
        channel_type=row.channel_type,
        client_correlator=row.client_correlator,
        application_tag=row.application_tag,
        max_notifications=row.max_notifications,
        lifetime=row.lifetime,
        callback_url=row.callback_url,
        created_at=aware(row.created_at),
        expires_at=aware(row.expires_at),
    )


_CHANNEL_HEAD = (
    sa.select(_T.c.id, _T.c.claimed_until)
    .where(
        _T.c.channel_id == sa.bindparam("channel_id", type_=sa.String),
        sa.exists().where(_C.id == _T.c.channel_id, _C.expires_at > sa.bindparam("now", type_=_TS)),
        _T.c.id.not_in(sa.bindparam("gone", expanding=True)),
    )
    .order_by(*lane_order())
    .limit(sa.bindparam("limit", type_=sa.Integer))
)


def new_channel_id() -> ChannelId:
    """A fresh, unguessable channel id (URL-safe)."""
    return ChannelId("ch-" + secrets.token_hex(8))


@dataclass(frozen=True)
class NewChannel:
    """What a create request grants: everything but the timestamps."""

    id: ChannelId
    user: UserUri
    channel_type: str
    client_correlator: str | None
    application_tag: str | None
    max_notifications: int
    lifetime: int
    callback_url: str


async def create_channel(
    session: AsyncSession, new: NewChannel, *, now: datetime
) -> tuple[Channel, bool]:
    """Store a channel; return it and True, or the live one with the same correlator and False.

    An expired channel holding the correlator is removed first (docs/decisions.md
    "Creating resources and idempotency").
    """
    if new.client_correlator is not None:
        existing = await session.scalar(
            sa.select(_C).where(
                _C.user_uri == new.user, _C.client_correlator == new.client_correlator
            )
        )
        if existing is not None:
            if aware(existing.expires_at) > now:
                return _to_channel(existing), False
            await _remove_channel(session, _to_channel(existing))
    row = ChannelRow(
        id=new.id,
        user_uri=new.user,
        channel_type=new.channel_type,
        client_correlator=new.client_correlator,
        application_tag=new.application_tag,
        max_notifications=new.max_notifications,
        lifetime=new.lifetime,
        callback_url=new.callback_url,
        created_at=now,
        expires_at=now + timedelta(seconds=new.lifetime),
    )
    try:
        async with session.begin_nested():
            session.add(row)
    except IntegrityError as exc:
        if new.client_correlator is None:
            raise StoreError(f"cannot store channel {new.id}: {exc.orig}") from exc
        winner = await session.scalar(
            sa.select(_C).where(
                _C.user_uri == new.user, _C.client_correlator == new.client_correlator
            )
        )
        if winner is None:
            raise StoreError(f"cannot store channel {new.id}: {exc.orig}") from exc
        return _to_channel(winner), False
    return _to_channel(row), True


async def get_channel(
    session: AsyncSession, user: str, channel_id: str, *, now: datetime
) -> Channel | None:
    """The live channel ``channel_id`` of ``user``, or None (unknown, other user's, or expired)."""
    row = await session.scalar(
        sa.select(_C).where(_C.id == channel_id, _C.user_uri == user, _C.expires_at > now)
    )
    return None if row is None else _to_channel(row)


async def list_channels(session: AsyncSession, user: str, *, now: datetime) -> list[Channel]:
    """Every live channel of ``user``, oldest first."""
    rows = await session.scalars(
        sa.select(_C).where(_C.user_uri == user, _C.expires_at > now).order_by(_C.created_at, _C.id)
    )
    return [_to_channel(r) for r in rows]


async def delete_channel(session: AsyncSession, user: str, channel_id: str) -> Channel | None:
    """Remove a channel of ``user``, its queue and the subscriptions notifying its callbackURL."""
    row = await session.scalar(sa.select(_C).where(_C.id == channel_id, _C.user_uri == user))
    if row is None:
        return None
    channel = _to_channel(row)
    await _remove_channel(session, channel)
    return channel


async def expire_channels(session: AsyncSession, *, now: datetime) -> list[Channel]:
    """Remove every channel whose lifetime ended (queue and subscriptions too); return them."""
    rows = await session.scalars(sa.select(_C).where(_C.expires_at <= now))
    gone = [_to_channel(r) for r in rows]
    for channel in gone:
        await _remove_channel(session, channel)
    return gone


async def _remove_channel(session: AsyncSession, channel: Channel) -> None:
    await session.execute(sa.delete(_O).where(_O.channel_id == channel.id))
    await session.execute(sa.delete(_C).where(_C.id == channel.id))
    dropped = await _delete_subscriptions(session, channel)
    log.info("- channel %s of %s removed (%d subscriptions)", channel.id, channel.user, dropped)


async def _delete_subscriptions(session: AsyncSession, channel: Channel) -> int:
    # The subscriptions table belongs to the REST core (state.repository).
    from state.repository import delete_subscriptions_by_notify_url

    return await delete_subscriptions_by_notify_url(
        session,
        channel.callback_url,
        user=channel.user,
        path_suffix=f"/channels/{channel.id}/callback",
    )


@dataclass(frozen=True)
class ChannelClaim:
    """What :func:`claim_channel_head` took, and until when someone else holds the head."""

    items: list[Notification]
    held_until: datetime | None = None
    """Set when nothing was taken because the head is claimed (a hand-out in progress)."""
    ready: bool = False
    """``peek``: a free item is queued (nothing was taken)."""


async def claim_channel_items(
    session: AsyncSession,
    channel_id: str,
    *,
    owner: str,
    now: datetime,
    until: datetime,
    limit: int,
    gone: Collection[int] = (),
) -> list[Notification]:
    """Claim up to ``limit`` queued items of a live channel from its head on, in order (§10).

    Nothing is taken while the head is claimed (a hand-out in progress), so a
    hand-out that fails and is released keeps its place in the queue; nothing
    is taken from an expired channel either. Rows in ``gone`` (handed out by
    the caller, not deleted yet) count as no longer queued.
    """
    claim = await claim_channel_head(
        session, channel_id, owner=owner, now=now, until=until, limit=limit, gone=gone
    )
    return claim.items


async def claim_channel_head(
    session: AsyncSession,
    channel_id: str,
    *,
    owner: str,
    now: datetime,
    until: datetime,
    limit: int,
    gone: Collection[int] = (),
    peek: bool = False,
) -> ChannelClaim:
    """:func:`claim_channel_items`, also telling until when a claimed head is held.

    ``peek``: claim nothing, write nothing (a read-only transaction will do);
    ``ready`` tells whether a free item is queued.
    """
    conn = await session.connection()
    rows = (
        await conn.execute(
            _CHANNEL_HEAD,
            {
                "channel_id": channel_id,
                "now": now,
                "limit": 1 if peek else limit,
                "gone": list(gone),
            },
        )
    ).all()
    wanted: list[int] = []
    for ident, claimed_until in rows:
        if claimed_until is not None and aware(claimed_until) > now:
            if not wanted:
                return ChannelClaim([], held_until=aware(claimed_until))
            break
        wanted.append(ident)
    if not wanted or peek:
        return ChannelClaim([], ready=bool(wanted))
    return ChannelClaim(await claim_prefix(session, wanted, owner=owner, now=now, until=until))


async def take_from_channel(
    session: AsyncSession, channel_id: str, *, limit: int, now: datetime | None = None
) -> list[Notification]:
    """Remove and return up to ``limit`` queued notifications of a channel, in order."""
    now = now or utcnow()
    items = await claim_channel_items(
        session, channel_id, owner="take", now=now, until=now, limit=limit
    )
    await settle(session, [n.id for n in items])
    return items


async def channel_alive(session: AsyncSession, channel_id: str, *, now: datetime) -> bool:
    """True while the channel exists and has not expired."""
    found = await session.scalar(sa.select(_C.id).where(_C.id == channel_id, _C.expires_at > now))
    return found is not None
