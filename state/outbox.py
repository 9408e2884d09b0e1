"""The notification outbox and the Notification Channels: ORM models and repository functions.

One table, ``notification_outbox``, holds every undelivered notification
(oma-chat-api.md §5). A row with ``channel_id`` NULL waits for an HTTP POST to
its ``notify_url``; a row with ``channel_id`` set sits in that channel's queue
until a long poll hands it out (§10). Rows are deleted once delivered (or
dropped), so the table is exactly the set of pending work and one id space
numbers every notification.

Order per subscription: the rows of one subscription form a *lane*; only the
lane's head (lowest id) may be sent, so a failing head blocks its own
subscription only. Several instances share the table through *claims*: a
conditional ``UPDATE ... WHERE claimed_until IS NULL OR claimed_until <= now``
that only one of them can win (a real claim on PostgreSQL, best effort on one
SQLite file). A crashed owner's claim simply runs out.

Every function takes an ``AsyncSession``; the caller owns the transaction
(STYLE.md §9). Timestamps are timezone-aware UTC; SQLite hands them back
naive, so they are re-tagged on the way out.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from bridge.errors import StoreError
from bridge.ids import ChannelId, NotificationId, SubscriptionId, UserUri
from bridge.ports import JSONObject, Notification
from state.db import Base

log = logging.getLogger(__name__)

USER_URI_LEN = 512
URL_LEN = 2048
ERROR_LEN = 512


class ChannelRow(Base):
    """One Notification Channel (oma-chat-api.md §10)."""

    __tablename__ = "notification_channels"
    __table_args__ = (
        sa.UniqueConstraint("user_uri", "client_correlator", name="uq_notification_channels_corr"),
        sa.UniqueConstraint("callback_url", name="uq_notification_channels_callback"),
        sa.Index("ix_notification_channels_user", "user_uri"),
        sa.Index("ix_notification_channels_expires_at", "expires_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    user_uri: Mapped[str] = mapped_column(sa.String(USER_URI_LEN))
    channel_type: Mapped[str] = mapped_column(sa.String(32))
    client_correlator: Mapped[str | None] = mapped_column(sa.String(256))
    application_tag: Mapped[str | None] = mapped_column(sa.String(256))
    max_notifications: Mapped[int] = mapped_column(sa.Integer)
    lifetime: Mapped[int] = mapped_column(sa.Integer)
    callback_url: Mapped[str] = mapped_column(sa.String(URL_LEN))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


class OutboxRow(Base):
    """One undelivered notification (oma-chat-api.md §5)."""

    __tablename__ = "notification_outbox"
    __table_args__ = (
        sa.Index("ix_notification_outbox_lane", "channel_id", "subscription_id", "id"),
        sa.Index("ix_notification_outbox_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    user_uri: Mapped[str] = mapped_column(sa.String(USER_URI_LEN))
    subscription_id: Mapped[str] = mapped_column(sa.String(64))
    notify_url: Mapped[str] = mapped_column(sa.String(URL_LEN))
    channel_id: Mapped[str | None] = mapped_column(
        sa.String(64), sa.ForeignKey("notification_channels.id", ondelete="CASCADE")
    )
    root: Mapped[str] = mapped_column(sa.String(128))
    body: Mapped[dict[str, object]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(sa.Integer)
    next_attempt_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    claimed_by: Mapped[str | None] = mapped_column(sa.String(128))
    claimed_until: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(sa.String(ERROR_LEN))


_O = OutboxRow
_C = ChannelRow


@dataclass(frozen=True)
class OutboxEntry:
    """A callback notification with its retry state."""

    notification: Notification
    attempts: int
    next_attempt_at: datetime


@dataclass(frozen=True)
class Channel:
    """A Notification Channel as stored (oma-chat-api.md §10)."""

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


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _to_notification(row: OutboxRow) -> Notification:
    return Notification(
        id=NotificationId(row.id),
        user=UserUri(row.user_uri),
        subscription_id=SubscriptionId(row.subscription_id),
        notify_url=row.notify_url,
        root=row.root,
        body=row.body,
        created_at=_aware(row.created_at),
        channel_id=None if row.channel_id is None else ChannelId(row.channel_id),
    )


def _to_entry(row: OutboxRow) -> OutboxEntry:
    return OutboxEntry(_to_notification(row), row.attempts, _aware(row.next_attempt_at))


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
        created_at=_aware(row.created_at),
        expires_at=_aware(row.expires_at),
    )


def _rowcount(result: object) -> int:
    count = getattr(result, "rowcount", 0)
    return int(count) if isinstance(count, int) and count > 0 else 0


def _unclaimed(now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(_O.claimed_until.is_(None), _O.claimed_until <= now)


# --- the outbox ----------------------------------------------------------------


async def enqueue(
    session: AsyncSession,
    *,
    user: UserUri,
    subscription_id: SubscriptionId,
    notify_url: str,
    root: str,
    body: JSONObject,
    now: datetime | None = None,
) -> Notification:
    """Add one notification inside the caller's transaction (oma-chat-api.md §5).

    A ``notify_url`` equal to the ``callbackURL`` of a live channel of the same
    user queues the notification into that channel (§10); otherwise it waits
    for an HTTP POST (and another user's callbackURL is never filled).
    Call ``Notifier.wake(notification)`` after the transaction commits.
    """
    if not root:
        raise ValueError("notification root must not be empty")
    now = now or utcnow()
    channel_id = await session.scalar(
        sa.select(_C.id).where(
            _C.callback_url == notify_url, _C.user_uri == user, _C.expires_at > now
        )
    )
    row = OutboxRow(
        user_uri=user,
        subscription_id=subscription_id,
        notify_url=notify_url,
        channel_id=channel_id,
        root=root,
        body=dict(body),
        created_at=now,
        attempts=0,
        next_attempt_at=now,
    )
    session.add(row)
    await session.flush()
    return _to_notification(row)


async def lane_heads(session: AsyncSession, *, now: datetime, limit: int) -> list[OutboxEntry]:
    """The unclaimed head of every callback lane, soonest due first (at most ``limit``)."""
    heads = (
        sa.select(sa.func.min(_O.id).label("id"))
        .where(_O.channel_id.is_(None))
        .group_by(_O.subscription_id)
        .subquery()
    )
    rows = await session.scalars(
        sa.select(_O)
        .join(heads, _O.id == heads.c.id)
        .where(_unclaimed(now))
        .order_by(_O.next_attempt_at, _O.id)
        .limit(limit)
    )
    return [_to_entry(r) for r in rows]


async def lane_head(session: AsyncSession, subscription_id: str) -> OutboxEntry | None:
    """The oldest callback notification of one subscription, claimed or not."""
    row = await session.scalar(
        sa.select(_O)
        .where(_O.channel_id.is_(None), _O.subscription_id == subscription_id)
        .order_by(_O.id)
        .limit(1)
    )
    return None if row is None else _to_entry(row)


async def claim(
    session: AsyncSession, ident: int, *, owner: str, now: datetime, until: datetime
) -> bool:
    """Claim one row for ``owner`` until ``until``; False if held by another or gone."""
    result = await session.execute(
        sa.update(_O)
        .where(_O.id == ident, _unclaimed(now))
        .values(claimed_by=owner, claimed_until=until)
    )
    return _rowcount(result) == 1


async def settle_and_claim_next(
    session: AsyncSession,
    done: int,
    subscription_id: str,
    *,
    owner: str,
    now: datetime,
    until: datetime,
) -> OutboxEntry | None:
    """Delete a settled row and claim the next due row of the same lane, if there is one."""
    await session.execute(sa.delete(_O).where(_O.id == done))
    head = await lane_head(session, subscription_id)
    if head is None or head.next_attempt_at > now:
        return None
    if not await claim(session, head.notification.id, owner=owner, now=now, until=until):
        return None
    return head


async def record_failure(
    session: AsyncSession, ident: int, *, error: str, next_attempt_at: datetime
) -> None:
    """Count a failed attempt, schedule the next one and release the claim."""
    await session.execute(
        sa.update(_O)
        .where(_O.id == ident)
        .values(
            attempts=_O.attempts + 1,
            next_attempt_at=next_attempt_at,
            claimed_by=None,
            claimed_until=None,
            last_error=error[:ERROR_LEN],
        )
    )


async def delete_notification(session: AsyncSession, ident: int) -> bool:
    """Remove one notification (delivered or dropped); False if it was already gone."""
    result = await session.execute(sa.delete(_O).where(_O.id == ident))
    return _rowcount(result) == 1


async def release_claim(session: AsyncSession, ident: int, *, owner: str) -> None:
    """Hand one claimed row back untouched (no attempt was made)."""
    await session.execute(
        sa.update(_O)
        .where(_O.id == ident, _O.claimed_by == owner)
        .values(claimed_by=None, claimed_until=None)
    )


async def release_claims(session: AsyncSession, owner: str) -> int:
    """Release every claim held by ``owner`` (clean shutdown); return how many."""
    result = await session.execute(
        sa.update(_O).where(_O.claimed_by == owner).values(claimed_by=None, claimed_until=None)
    )
    return _rowcount(result)


async def count_pending(session: AsyncSession, *, channels: bool = False) -> int:
    """How many notifications wait for a callback POST (or, with ``channels``, in channels)."""
    column = _O.channel_id.is_not(None) if channels else _O.channel_id.is_(None)
    return int(await session.scalar(sa.select(sa.func.count()).where(column)) or 0)


async def pending_for(session: AsyncSession, subscription_id: str) -> list[Notification]:
    """Every undelivered notification of one subscription, oldest first."""
    rows = await session.scalars(
        sa.select(_O).where(_O.subscription_id == subscription_id).order_by(_O.id)
    )
    return [_to_notification(r) for r in rows]


async def drop_for_subscription(session: AsyncSession, subscription_id: str) -> int:
    """Remove every undelivered notification of a deleted subscription; return how many."""
    result = await session.execute(sa.delete(_O).where(_O.subscription_id == subscription_id))
    return _rowcount(result)


async def drop_stale_channel_items(session: AsyncSession, cutoff: datetime) -> int:
    """Remove channel-queued notifications created before ``cutoff``; return how many."""
    result = await session.execute(
        sa.delete(_O).where(_O.channel_id.is_not(None), _O.created_at < cutoff)
    )
    return _rowcount(result)


# --- channels -----------------------------------------------------------------


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

    An expired channel holding the correlator is removed first (oma-chat-api.md §8).
    """
    if new.client_correlator is not None:
        existing = await session.scalar(
            sa.select(_C).where(
                _C.user_uri == new.user, _C.client_correlator == new.client_correlator
            )
        )
        if existing is not None:
            if _aware(existing.expires_at) > now:
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
    dropped = await _delete_subscriptions(session, channel.callback_url)
    log.info("- channel %s of %s removed (%d subscriptions)", channel.id, channel.user, dropped)


async def _delete_subscriptions(session: AsyncSession, url: str) -> int:
    # The subscriptions table belongs to the REST core (state.repository).
    from state.repository import delete_subscriptions_by_notify_url

    return await delete_subscriptions_by_notify_url(session, url)


async def take_from_channel(
    session: AsyncSession, channel_id: str, *, limit: int
) -> list[Notification]:
    """Remove and return up to ``limit`` queued notifications of a channel, oldest first."""
    rows = list(
        await session.scalars(
            sa.select(_O)
            .where(_O.channel_id == channel_id)
            .order_by(_O.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if not rows:
        return []
    await session.execute(sa.delete(_O).where(_O.id.in_([r.id for r in rows])))
    return [_to_notification(r) for r in rows]


async def channel_alive(session: AsyncSession, channel_id: str, *, now: datetime) -> bool:
    """True while the channel exists and has not expired."""
    found = await session.scalar(sa.select(_C.id).where(_C.id == channel_id, _C.expires_at > now))
    return found is not None
