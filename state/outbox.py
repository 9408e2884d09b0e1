"""The notification outbox: ORM models and repository functions.

One table, ``notification_outbox``, holds every undelivered notification
(docs/decisions.md "Notification delivery"). A row with ``channel_id`` NULL
waits for an HTTP POST to its ``notify_url``; a row with ``channel_id`` set
sits in that channel's queue until a long poll hands it out (OMA
NotificationChannel v1.0). Rows are deleted once delivered (or
dropped), so the table is exactly the set of pending work and one id space
numbers every notification.

Lanes and claims
----------------
The callback rows of one subscription form a *lane*; the rows of one channel
form a channel queue. Only a lane's *head* may be attempted, so a failing head
blocks its own subscription only. Whoever claims the head owns the lane: a
claim is ``claimed_by``/``claimed_until`` set by a conditional
``UPDATE ... WHERE claimed_until IS NULL OR claimed_until <= now`` that only
one instance can win (rows are first locked with ``FOR UPDATE SKIP LOCKED``
on PostgreSQL, so two instances never wait on each other; one SQLite file has
one writer at a time). :func:`claim_lanes` claims, in one transaction, the
first ``per_lane`` rows of up to ``lanes`` due lanes whose head is free, and
returns them in delivery order; rows behind a head held by someone else are
never taken. A crashed owner's claims simply run out; a live owner extends
them (:func:`extend_claims`) before they would. Delivered rows are deleted in
batches (:func:`settle`). A channel queue works the same way with one lane per
channel: ``state.channels.claim_channel_items`` takes the first rows while the
queue's head is free (:func:`claim_prefix`), the long poll settles them once
its response is written, or releases them (:func:`release`) so the next poll
gets them again. The channels themselves live in ``state.channels``.

Order per subscription
----------------------
A lane is delivered in ``(lane_seq, id)`` order, rows without a ``lane_seq``
last. On SQLite the id is taken under the one write lock, so ids commit in
order and ``lane_seq`` stays NULL. On PostgreSQL a sequence value is taken at
insert, so a later id can commit before an earlier one: whichever the claim
holder sees committed first is delivered first, and to keep that order once
seen (across retries, restarts and other instances) the claim holder numbers
the unnumbered rows it takes (``lane_seq`` = the lane's last number + 1, ...,
in id order), in the claiming transaction. A row committed later is
therefore always delivered after every row already attempted, and a
notification whose transaction committed before another one started is always
delivered first (it has the smaller id and was visible earlier). A channel
queue is numbered the same way, per channel, by the long poll that takes it.
(Serializing enqueue per subscription would give id order too, but would make
chat transactions that notify several users wait on, or deadlock with, each
other.)

:func:`claim_if_alone` is the one exception to "claims only see committed
rows": the inserting transaction claims its own row when the lane holds no
other. It is used on SQLite only, where no other transaction can add to the
lane before the commit.

Every function takes an ``AsyncSession``; the caller owns the transaction
(docs/architecture.md "Store"). Timestamps are timezone-aware UTC; SQLite hands them back
naive, so they are re-tagged on the way out. Hot paths use Core statements
(no ORM unit of work).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import weakref
from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from bridge.ids import ChannelId, NotificationId, SubscriptionId, UserUri
from bridge.ports import JSONObject, Notification
from state.db import Base, Database, aware
from state.listen import CHANNEL_EVENTS

USER_URI_LEN = 512
URL_LEN = 2048
ERROR_LEN = 512


class ChannelRow(Base):
    """One Notification Channel (OMA NotificationChannel v1.0).

    Defined here rather than in ``state.channels``: :func:`enqueue` routes into
    channels and ``OutboxRow`` references them.
    """

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
    """One undelivered notification (docs/decisions.md "Notification delivery")."""

    __tablename__ = "notification_outbox"
    __table_args__ = (
        sa.Index("ix_notification_outbox_lane", "channel_id", "subscription_id", "id"),
        sa.Index(
            "ix_notification_outbox_channel_age",
            "created_at",
            sqlite_where=sa.text("channel_id IS NOT NULL"),
            postgresql_where=sa.text("channel_id IS NOT NULL"),
        ),
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
    lane_seq: Mapped[int | None] = mapped_column(sa.BigInteger)


_C = ChannelRow
_T: sa.Table = cast(sa.Table, OutboxRow.__table__)
_IN_CHUNK = 500
"""Ids per ``IN (...)`` list (SQLite allows 32766 bound values; stay well below)."""


@dataclass(frozen=True)
class OutboxEntry:
    """A callback notification with its retry state."""

    notification: Notification
    attempts: int
    next_attempt_at: datetime


@dataclass(frozen=True)
class LaneBatch:
    """The first rows of one lane, claimed by one owner, in delivery order."""

    subscription_id: SubscriptionId
    entries: tuple[OutboxEntry, ...]

    @property
    def ids(self) -> list[int]:
        """The row ids of the batch, in delivery order."""
        return [e.notification.id for e in self.entries]


@dataclass(frozen=True)
class Claimed:
    """What one :func:`claim_lanes` call won, and when the next free lane becomes due."""

    batches: list[LaneBatch]
    next_due: datetime | None


_WRITERS: weakref.WeakKeyDictionary[object, asyncio.Lock] = weakref.WeakKeyDictionary()


class ClaimRound(Protocol):
    """A delivery worker's part in another writer's transaction (``InlineClaims``)."""

    async def run(self, session: AsyncSession, made: Sequence[Notification]) -> None:
        """In the transaction that inserted ``made``: settle and claim what can go at once."""

    def committed(self) -> None:
        """That transaction committed: dispatch what was claimed."""

    def failed(self) -> None:
        """That transaction rolled back: forget what was claimed, keep what was settled."""


class InlineClaims(Protocol):
    """A delivery worker that claims the rows of a SQLite writer inside its transaction.

    The chat store writes its notifications in its own batches; claiming their
    lanes in the same transaction (the writer is the only one: nothing can
    join a lane before the commit) spares the worker a transaction of its own
    and a re-read per batch.
    """

    def claim_round(self) -> ClaimRound | None:
        """A round for the next transaction, or None when claims are not done inline."""


def writer_lock(database: Database) -> asyncio.Lock | None:
    """The lock that SQLite writers of this process share for ``database`` (None elsewhere).

    SQLite has one writer at a time; two writers of one process that queue on
    different locks meet in SQLite's busy handler instead, which sleeps (1 ms
    and more) rather than waiting for the other's commit. Whoever writes the
    same SQLite file in this process should hold this lock for the transaction.
    """
    if not database.is_sqlite:
        return None
    lock = _WRITERS.get(database)
    if lock is None:
        lock = _WRITERS[database] = asyncio.Lock()
    return lock


@asynccontextmanager
async def write_session(database: Database) -> AsyncIterator[AsyncSession]:
    """A write transaction that queues on :func:`writer_lock` (SQLite) before it begins.

    Without it, a pooled connection waits for the write lock in SQLite's busy
    handler (sleeps), and while the chat store and the delivery worker commit
    back to back it can starve there until ``busy_timeout`` ends with
    "database is locked" (seen with 64 subscription POSTs under chat load).
    Writers that queue on the asyncio lock are served in order instead.
    """
    lock = writer_lock(database)
    if lock is None:
        async with database.sessions.begin() as session:
            yield session
        return
    async with lock, database.sessions.begin() as session:
        yield session


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def _to_notification(row: sa.RowMapping) -> Notification:
    channel_id = row["channel_id"]
    return Notification(
        id=NotificationId(row["id"]),
        user=UserUri(row["user_uri"]),
        subscription_id=SubscriptionId(row["subscription_id"]),
        notify_url=row["notify_url"],
        root=row["root"],
        body=row["body"],
        created_at=aware(row["created_at"]),
        channel_id=None if channel_id is None else ChannelId(channel_id),
    )


def _to_entry(row: sa.RowMapping) -> OutboxEntry:
    return OutboxEntry(_to_notification(row), row["attempts"], aware(row["next_attempt_at"]))


def _rowcount(result: object) -> int:
    count = getattr(result, "rowcount", 0)
    return int(count) if isinstance(count, int) and count > 0 else 0


def _free(
    claimed_until: sa.ColumnElement[datetime | None], now: datetime | sa.ColumnElement[datetime]
) -> sa.ColumnElement[bool]:
    return sa.or_(claimed_until.is_(None), claimed_until <= now)


def lane_order() -> tuple[sa.UnaryExpression[int | None], sa.ColumnElement[int]]:
    """The delivery order of a lane or a channel queue: ``lane_seq`` (unnumbered last), id."""
    return (_T.c.lane_seq.asc().nulls_last(), _T.c.id)


_Item = TypeVar("_Item")


def _chunks(ids: Sequence[_Item]) -> Iterator[Sequence[_Item]]:
    for start in range(0, len(ids), _IN_CHUNK):
        yield ids[start : start + _IN_CHUNK]


def _sequenced_in_order(session: AsyncSession) -> bool:
    # SQLite takes the id under its one write lock: id order is commit order.
    return session.get_bind().dialect.name == "sqlite"


_TS = sa.DateTime(timezone=True)


def _ranked_lanes(only: bool = False) -> sa.Subquery:
    lanes: sa.ColumnElement[bool] = _T.c.channel_id.is_(None)
    if only:
        lanes = sa.and_(lanes, _T.c.subscription_id.in_(sa.bindparam("only", expanding=True)))
    rn = (
        sa.func.row_number()
        .over(partition_by=_T.c.subscription_id, order_by=lane_order())
        .label("rn")
    )
    return (
        sa.select(_T.c.id, _T.c.subscription_id, _T.c.next_attempt_at, _T.c.claimed_until, rn)
        .where(lanes)
        .subquery("ranked")
    )


def _candidates(only: bool = False) -> sa.Select[tuple[int, str, int, datetime]]:
    """Every due free lane's first ``per_lane`` rows, and the head of each not-due one."""
    now = sa.bindparam("now", type_=_TS)
    ranked = _ranked_lanes(only)
    heads = (
        sa.select(ranked.c.subscription_id, ranked.c.next_attempt_at.label("due"))
        .where(ranked.c.rn == 1, _free(ranked.c.claimed_until, now))
        .order_by(ranked.c.next_attempt_at, ranked.c.id)
        .limit(sa.bindparam("lanes", type_=sa.Integer))
        .subquery("heads")
    )
    return (
        sa.select(ranked.c.id, ranked.c.subscription_id, ranked.c.rn, heads.c.due)
        .join(heads, heads.c.subscription_id == ranked.c.subscription_id)
        .where(
            ranked.c.rn <= sa.bindparam("per_lane", type_=sa.Integer),
            sa.or_(ranked.c.rn == 1, heads.c.due <= now),
        )
        .order_by(heads.c.due, ranked.c.subscription_id, ranked.c.rn)
    )


# Hot statements, built once (parameters bound at execution).
_ENQUEUE = (
    sa.insert(_T)
    .values(
        channel_id=sa.select(_C.id)
        .where(
            _C.callback_url == sa.bindparam("cb_url", type_=sa.String),
            _C.user_uri == sa.bindparam("cb_user", type_=sa.String),
            _C.expires_at > sa.bindparam("now", type_=_TS),
        )
        .scalar_subquery()
    )
    .returning(_T.c.id, _T.c.channel_id)
)
_CANDIDATES = _candidates()
_CANDIDATES_OF = _candidates(only=True)
_CLAIM = (
    sa.update(_T)
    .where(
        _T.c.id.in_(sa.bindparam("ids", expanding=True)),
        _free(_T.c.claimed_until, sa.bindparam("now", type_=_TS)),
    )
    .values(
        claimed_by=sa.bindparam("owner", type_=sa.String),
        claimed_until=sa.bindparam("until", type_=_TS),
    )
    .returning(*_T.c)
)
_SETTLE = sa.delete(_T).where(_T.c.id.in_(sa.bindparam("ids", expanding=True)))
_others = sa.alias(_T, "others")
_CLAIM_ALONE = (
    sa.update(_T)
    .where(
        _T.c.id == sa.bindparam("ident", type_=sa.Integer),
        _T.c.channel_id.is_(None),
        _T.c.claimed_by.is_(None),
        ~sa.exists().where(
            _others.c.channel_id.is_(None),
            _others.c.subscription_id == _T.c.subscription_id,
            _others.c.id != _T.c.id,
        ),
    )
    .values(
        claimed_by=sa.bindparam("owner", type_=sa.String),
        claimed_until=sa.bindparam("until", type_=_TS),
    )
)

_CLAIM_OWN = (
    sa.update(_T)
    .where(
        _T.c.id.in_(sa.bindparam("ids", expanding=True)),
        _T.c.channel_id.is_(None),
        _T.c.claimed_by.is_(None),
        ~sa.exists().where(
            _others.c.channel_id.is_(None),
            _others.c.subscription_id == sa.bindparam("sub", type_=sa.String),
            _others.c.id.not_in(sa.bindparam("ids", expanding=True)),
        ),
    )
    .values(
        claimed_by=sa.bindparam("owner", type_=sa.String),
        claimed_until=sa.bindparam("until", type_=_TS),
    )
)


# --- the outbox ----------------------------------------------------------------


def _enqueue_values(
    user: UserUri,
    subscription_id: SubscriptionId,
    notify_url: str,
    root: str,
    body: JSONObject,
    now: datetime,
) -> dict[str, Any]:
    """The bind values of ``_ENQUEUE`` for one notification (shared by both enqueue paths)."""
    if not root:
        raise ValueError("notification root must not be empty")
    return {
        "cb_url": notify_url,
        "cb_user": user,
        "now": now,
        "user_uri": user,
        "subscription_id": subscription_id,
        "notify_url": notify_url,
        "root": root,
        "body": dict(body),
        "created_at": now,
        "attempts": 0,
        "next_attempt_at": now,
    }


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
    """Add one notification inside the caller's transaction (at least once, in order).

    docs/decisions.md "Notification delivery".

    A ``notify_url`` equal to the ``callbackURL`` of a live channel of the same
    user queues the notification into that channel (§10); otherwise it waits
    for an HTTP POST (and another user's callbackURL is never filled).
    Call ``Notifier.wake(notification)`` after the transaction commits.
    """
    now = now or utcnow()
    values = _enqueue_values(user, subscription_id, notify_url, root, body, now)
    stored = values["body"]
    conn = await session.connection()
    row = (await conn.execute(_ENQUEUE, values)).one()
    if row.channel_id is not None:
        await announce(session, [row.channel_id])
    return Notification(
        id=NotificationId(row.id),
        user=user,
        subscription_id=subscription_id,
        notify_url=notify_url,
        root=root,
        body=stored,
        created_at=now,
        channel_id=None if row.channel_id is None else ChannelId(row.channel_id),
    )


async def announce(session: AsyncSession, channel_ids: Collection[str]) -> None:
    """PostgreSQL: ``NOTIFY`` each channel's id on ``state.listen.CHANNEL_EVENTS``.

    Inside the transaction that queued the items, so it is sent on commit only
    (several instances: the long poll of that channel, wherever it waits, wakes).
    Nothing on SQLite: one process, whose writers wake its polls themselves.
    """
    if not channel_ids or session.get_bind().dialect.name != "postgresql":
        return
    conn = await session.connection()
    for channel_id in sorted(set(channel_ids)):
        await conn.execute(_ANNOUNCE, {"events": CHANNEL_EVENTS, "channel": channel_id})


_ANNOUNCE = sa.select(
    sa.func.pg_notify(
        sa.bindparam("events", type_=sa.String), sa.bindparam("channel", type_=sa.String)
    )
)


def _document_bytes(root: str, body_json: str) -> bytes:
    """``{root: body}`` as JSON bytes, from the body's JSON text."""
    return ("{" + json.dumps(root) + ": " + body_json + "}").encode()


class SyncEnqueue:
    """:func:`enqueue` on a synchronous SQLite DBAPI connection, for the chat store's writer.

    The very statement :func:`enqueue` runs (same channel routing), compiled
    once to SQL text with its bind processors, so a hot writer that already
    holds the open transaction pays no SQLAlchemy execution per notification.
    """

    _KEYS = (
        "user_uri",
        "subscription_id",
        "notify_url",
        "root",
        "body",
        "created_at",
        "attempts",
        "next_attempt_at",
    )

    def __init__(self, dialect: sa.Dialect) -> None:
        if dialect.paramstyle != "qmark":
            raise ValueError("SyncEnqueue needs a qmark-style (SQLite) dialect")
        compiled = _ENQUEUE.compile(dialect=dialect, column_keys=list(self._KEYS))
        self.sql = str(compiled)
        names = compiled.positiontup
        assert names is not None  # qmark is positional
        self._binds = [(n, compiled.binds[n].type.bind_processor(dialect)) for n in names]
        self._body = list(names).index("body")

    def run(
        self,
        raw: DBAPIConnection | sqlite3.Connection,
        *,
        user: UserUri,
        subscription_id: SubscriptionId,
        notify_url: str,
        root: str,
        body: JSONObject,
        now: datetime | None = None,
    ) -> Notification:
        """Add one notification inside ``raw``'s open transaction (as :func:`enqueue`)."""
        now = now or utcnow()
        values = _enqueue_values(user, subscription_id, notify_url, root, body, now)
        stored = values["body"]
        params = tuple(
            values[n] if p is None or values[n] is None else p(values[n]) for n, p in self._binds
        )
        text = params[self._body]  # the JSON text stored: the POST body reuses it
        cursor = raw.cursor()
        try:
            cursor.execute(self.sql, params)
            rows = cursor.fetchall()
        finally:
            cursor.close()
        ident, channel = rows[0]
        return Notification(
            id=NotificationId(ident),
            user=user,
            subscription_id=subscription_id,
            notify_url=notify_url,
            root=root,
            body=stored,
            created_at=now,
            channel_id=None if channel is None else ChannelId(channel),
            encoded=_document_bytes(root, text) if isinstance(text, str) else None,
        )


@dataclass(frozen=True)
class Draft:
    """One notification to enqueue with :func:`enqueue_many` (the arguments of :func:`enqueue`)."""

    user: UserUri
    subscription_id: SubscriptionId
    notify_url: str
    root: str
    body: JSONObject


async def enqueue_many(
    session: AsyncSession, drafts: Sequence[Draft], *, now: datetime | None = None
) -> list[Notification]:
    """Add several notifications inside the caller's transaction, in order (§5, §10).

    Same routing as :func:`enqueue` (a live channel's callbackURL of the same
    user queues into that channel), with one look-up of the channels and one
    multi-row INSERT instead of a statement per notification.
    """
    if any(not d.root for d in drafts):
        raise ValueError("notification root must not be empty")
    if not drafts:
        return []
    now = now or utcnow()
    conn = await session.connection()
    urls = sorted({d.notify_url for d in drafts})
    channels: dict[tuple[str, str], str] = {}
    for chunk in _chunks(urls):
        found = await conn.execute(
            sa.select(_C.callback_url, _C.user_uri, _C.id).where(
                _C.callback_url.in_(chunk), _C.expires_at > now
            )
        )
        channels.update(((r.callback_url, r.user_uri), r.id) for r in found)
    bodies = [dict(d.body) for d in drafts]
    routed = [channels.get((d.notify_url, d.user)) for d in drafts]
    rows = [
        {
            "user_uri": d.user,
            "subscription_id": d.subscription_id,
            "notify_url": d.notify_url,
            "channel_id": channel,
            "root": d.root,
            "body": body,
            "created_at": now,
            "attempts": 0,
            "next_attempt_at": now,
        }
        for d, body, channel in zip(drafts, bodies, routed, strict=True)
    ]
    result = await conn.execute(
        sa.insert(_T).returning(_T.c.id, sort_by_parameter_order=True), rows
    )
    ids = list(result.scalars())
    await announce(session, [c for c in routed if c is not None])
    return [
        Notification(
            id=NotificationId(ident),
            user=d.user,
            subscription_id=d.subscription_id,
            notify_url=d.notify_url,
            root=d.root,
            body=body,
            created_at=now,
            channel_id=None if channel is None else ChannelId(channel),
        )
        for ident, d, body, channel in zip(ids, drafts, bodies, routed, strict=True)
    ]


async def claim_lanes(
    session: AsyncSession,
    *,
    owner: str,
    now: datetime,
    until: datetime,
    lanes: int,
    per_lane: int,
    busy: Collection[str] = (),
    only: Collection[str] | None = None,
) -> Claimed:
    """Claim the first ``per_lane`` rows of up to ``lanes`` due callback lanes with a free head.

    Lanes in ``busy`` (run by the caller already) are skipped; with ``only``,
    just those lanes are looked at. Each batch is
    contiguous from the lane's head, in delivery order; ``next_due`` is the
    soonest due time among free heads not due yet (docs/decisions.md "Notification delivery").
    """
    if lanes <= 0 or per_lane <= 0:
        return Claimed([], None)
    conn = await session.connection()
    params: dict[str, object] = {"now": now, "lanes": lanes + len(busy), "per_lane": per_lane}
    if only is not None:
        if not only:
            return Claimed([], None)
        params["only"] = list(only)
    statement = _CANDIDATES if only is None else _CANDIDATES_OF
    candidates = (await conn.execute(statement, params)).all()
    wanted: dict[str, list[int]] = {}
    next_due: datetime | None = None
    for row in candidates:
        ident, sub, due = row.id, row.subscription_id, aware(row.due)
        if sub in busy:
            continue
        if due > now:
            next_due = due if next_due is None else min(next_due, due)
            continue
        if sub not in wanted and len(wanted) >= lanes:
            continue
        wanted.setdefault(sub, []).append(ident)
    if not wanted:
        return Claimed([], next_due)
    rows = await _claim_rows(
        session, [i for ids in wanted.values() for i in ids], owner=owner, now=now, until=until
    )
    batches: list[LaneBatch] = []
    stray: list[int] = []
    for sub, ids in wanted.items():
        prefix = _contiguous(ids, rows)
        stray.extend(i for i in ids[len(prefix) :] if i in rows)
        if prefix:
            batches.append(
                LaneBatch(SubscriptionId(sub), tuple(_to_entry(rows[i]) for i in prefix))
            )
    if stray:  # claimed behind a gap (a race with another owner): hand them back
        await release(session, stray, owner=owner)
    if not _sequenced_in_order(session):
        await _sequence(session, [[rows[e.notification.id] for e in b.entries] for b in batches])
    return Claimed(batches, next_due)


async def _claim_rows(
    session: AsyncSession, ids: Sequence[int], *, owner: str, now: datetime, until: datetime
) -> dict[int, sa.RowMapping]:
    """Claim the free rows among ``ids``; return them (all columns) by id."""
    if not _sequenced_in_order(session):
        # lock first, in id order, skipping rows another instance is claiming right now
        ids = list(
            await session.scalars(
                sa.select(_T.c.id)
                .where(_T.c.id.in_(ids), _free(_T.c.claimed_until, now))
                .order_by(_T.c.id)
                .with_for_update(skip_locked=True)
            )
        )
    got: dict[int, sa.RowMapping] = {}
    conn = await session.connection()
    for chunk in _chunks(ids):
        params = {"ids": list(chunk), "now": now, "owner": owner, "until": until}
        result = await conn.execute(_CLAIM, params)
        got.update((r["id"], r) for r in result.mappings())
    return got


def _contiguous(ids: Sequence[int], claimed: Mapping[int, object]) -> list[int]:
    """The leading ids that were claimed (a lane may only be taken from its head on)."""
    prefix: list[int] = []
    for ident in ids:
        if ident not in claimed:
            break
        prefix.append(ident)
    return prefix


async def _sequence(session: AsyncSession, lanes: Sequence[Sequence[sa.RowMapping]]) -> None:
    """Number the unnumbered rows of each claimed prefix after the lane's last number."""
    params: list[dict[str, int]] = []
    for rows in lanes:
        last = max((r["lane_seq"] for r in rows if r["lane_seq"] is not None), default=0)
        for r in rows:
            if r["lane_seq"] is None:
                last += 1
                params.append({"ident": r["id"], "seq": last})
    if params:
        await session.execute(
            sa.update(_T)
            .where(_T.c.id == sa.bindparam("ident"))
            .values(lane_seq=sa.bindparam("seq")),
            params,
        )


async def claim_prefix(
    session: AsyncSession, ids: Sequence[int], *, owner: str, now: datetime, until: datetime
) -> list[Notification]:
    """Claim the rows ``ids`` of one queue, taken in delivery order from its head on.

    Returns the leading rows that were all won (a queue is only taken from its
    head on) and hands back those won behind a gap; on PostgreSQL the rows
    kept are numbered like a lane's (see the module notes on order). A channel
    queue's long poll claims with it (``state.channels.claim_channel_items``).
    """
    got = await _claim_rows(session, ids, owner=owner, now=now, until=until)
    prefix = _contiguous(ids, got)
    stray = [i for i in ids[len(prefix) :] if i in got]
    if stray:
        await release(session, stray, owner=owner)
    if not _sequenced_in_order(session):
        await _sequence(session, [[got[i] for i in prefix]])
    return [_to_notification(got[i]) for i in prefix]


async def claim_if_alone(session: AsyncSession, ident: int, *, owner: str, until: datetime) -> bool:
    """Claim a callback row that is the only row of its lane (it is then its head).

    Meant for the transaction that inserted the row, on a store with one
    writer (SQLite): no other transaction can add to the lane before it
    commits, so the lane is the caller's (see the module notes on claims).
    """
    conn = await session.connection()
    result = await conn.execute(_CLAIM_ALONE, {"ident": ident, "owner": owner, "until": until})
    return _rowcount(result) == 1


async def claim_own_rows(
    session: AsyncSession, subscription_id: str, ids: Sequence[int], *, owner: str, until: datetime
) -> bool:
    """Claim the callback rows ``ids`` of one lane if they are all the lane holds.

    :func:`claim_if_alone` for the several rows one transaction inserted in a
    lane (SQLite, one writer): with no other row in the lane, they are its
    head, in id order. All or nothing.
    """
    if not ids:
        return False
    if len(ids) == 1:
        return await claim_if_alone(session, ids[0], owner=owner, until=until)
    conn = await session.connection()
    result = await conn.execute(
        _CLAIM_OWN, {"ids": list(ids), "sub": subscription_id, "owner": owner, "until": until}
    )
    won = _rowcount(result)
    if 0 < won < len(ids):  # some row was not ours to take: give the others back
        await release(session, ids, owner=owner)
    return won == len(ids)


async def extend_claims(
    session: AsyncSession, ids: Sequence[int], *, owner: str, until: datetime
) -> bool:
    """Push ``owner``'s claims on ``ids`` to ``until``; False if any of them was lost."""
    held = 0
    for chunk in _chunks(ids):
        result = await session.execute(
            sa.update(_T)
            .where(_T.c.id.in_(chunk), _T.c.claimed_by == owner)
            .values(claimed_until=until)
        )
        held += _rowcount(result)
    return held == len(ids)


async def settle(session: AsyncSession, ids: Sequence[int]) -> int:
    """Delete delivered (or dropped) rows; return how many were still there."""
    gone = 0
    if ids:
        conn = await session.connection()
        for chunk in _chunks(ids):
            gone += _rowcount(await conn.execute(_SETTLE, {"ids": list(chunk)}))
    return gone


async def release(session: AsyncSession, ids: Sequence[int], *, owner: str) -> int:
    """Hand ``owner``'s claimed rows among ``ids`` back untouched; return how many."""
    released = 0
    for chunk in _chunks(ids):
        result = await session.execute(
            sa.update(_T)
            .where(_T.c.id.in_(chunk), _T.c.claimed_by == owner)
            .values(claimed_by=None, claimed_until=None)
        )
        released += _rowcount(result)
    return released


async def lane_heads(session: AsyncSession, *, now: datetime, limit: int) -> list[OutboxEntry]:
    """The unclaimed head of every callback lane, soonest due first (at most ``limit``)."""
    rn = (
        sa.func.row_number()
        .over(partition_by=_T.c.subscription_id, order_by=lane_order())
        .label("rn")
    )
    ranked = sa.select(_T, rn).where(_T.c.channel_id.is_(None)).subquery("ranked")
    rows = await session.execute(
        sa.select(ranked)
        .where(ranked.c.rn == 1, _free(ranked.c.claimed_until, now))
        .order_by(ranked.c.next_attempt_at, ranked.c.id)
        .limit(limit)
    )
    return [_to_entry(r) for r in rows.mappings()]


async def lane_head(session: AsyncSession, subscription_id: str) -> OutboxEntry | None:
    """The first callback notification of one subscription, claimed or not."""
    row = (
        (
            await session.execute(
                sa.select(_T)
                .where(_T.c.channel_id.is_(None), _T.c.subscription_id == subscription_id)
                .order_by(*lane_order())
                .limit(1)
            )
        )
        .mappings()
        .first()
    )
    return None if row is None else _to_entry(row)


async def claim(
    session: AsyncSession, ident: int, *, owner: str, now: datetime, until: datetime
) -> bool:
    """Claim one row for ``owner`` until ``until``; False if held by another or gone."""
    result = await session.execute(
        sa.update(_T)
        .where(_T.c.id == ident, _free(_T.c.claimed_until, now))
        .values(claimed_by=owner, claimed_until=until)
    )
    return _rowcount(result) == 1


async def record_failure(
    session: AsyncSession, ident: int, *, error: str, next_attempt_at: datetime
) -> None:
    """Count a failed attempt, schedule the next one and release the claim."""
    await session.execute(
        sa.update(_T)
        .where(_T.c.id == ident)
        .values(
            attempts=_T.c.attempts + 1,
            next_attempt_at=next_attempt_at,
            claimed_by=None,
            claimed_until=None,
            last_error=error[:ERROR_LEN],
        )
    )


async def delete_notification(session: AsyncSession, ident: int) -> bool:
    """Remove one notification (delivered or dropped); False if it was already gone."""
    return await settle(session, [ident]) == 1


async def release_claim(session: AsyncSession, ident: int, *, owner: str) -> None:
    """Hand one claimed row back untouched (no attempt was made)."""
    await release(session, [ident], owner=owner)


async def release_claims(session: AsyncSession, owner: str) -> int:
    """Release every claim held by ``owner`` (clean shutdown); return how many."""
    result = await session.execute(
        sa.update(_T).where(_T.c.claimed_by == owner).values(claimed_by=None, claimed_until=None)
    )
    return _rowcount(result)


async def count_pending(session: AsyncSession, *, channels: bool = False) -> int:
    """How many notifications wait for a callback POST (or, with ``channels``, in channels)."""
    column = _T.c.channel_id.is_not(None) if channels else _T.c.channel_id.is_(None)
    return int(await session.scalar(sa.select(sa.func.count()).where(column)) or 0)


async def pending_for(session: AsyncSession, subscription_id: str) -> list[Notification]:
    """Every undelivered notification of one subscription, in delivery order."""
    rows = await session.execute(
        sa.select(_T).where(_T.c.subscription_id == subscription_id).order_by(*lane_order())
    )
    return [_to_notification(r) for r in rows.mappings()]


async def drop_for_subscription(session: AsyncSession, subscription_id: str) -> int:
    """Remove every undelivered notification of a deleted subscription; return how many."""
    result = await session.execute(sa.delete(_T).where(_T.c.subscription_id == subscription_id))
    return _rowcount(result)


async def drop_for_expired_subscriptions(session: AsyncSession, now: datetime) -> int:
    """Remove the undelivered notifications of every subscription expired at ``now``."""
    # The subscriptions table belongs to the REST core (state.models).
    from state.models import ChatSubscriptionRow as S

    expired = sa.select(S.id).where(S.expires_at.is_not(None), S.expires_at <= now)
    result = await session.execute(sa.delete(_T).where(_T.c.subscription_id.in_(expired)))
    return _rowcount(result)


async def drop_stale_channel_items(session: AsyncSession, cutoff: datetime) -> int:
    """Remove channel-queued notifications created before ``cutoff``; return how many."""
    result = await session.execute(
        sa.delete(_T).where(_T.c.channel_id.is_not(None), _T.c.created_at < cutoff)
    )
    return _rowcount(result)
