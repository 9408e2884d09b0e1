"""The chat store: ``bridge.chat.store.ChatStore`` over a ``state.db.Database``.

A SQLite file gets the group commit explained below; PostgreSQL and in-memory
SQLite get the direct path (``state.chat_repository.SQLChatTransaction``).
Either way the SQL is that of the repository functions of
``state.chat_repository``, except the four hot writes (``state.chat_writes``)
and a few raw probes here.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bridge.chat.model import (
    ChatSession,
    Direction,
    Participant,
    SessionKind,
    StoredMessage,
    evolve,
)
from bridge.chat.store import ChatTransaction, OwedReport
from bridge.errors import Conflict, StoreError
from bridge.ids import ChatSessionId, SubscriptionId, UserUri
from bridge.ports import JSONObject, Notification
from bridge.subscriptions import Subscription
from state import outbox, repository
from state.chat_models import UNSENT_SQL, UNSENT_STATUSES
from state.chat_repository import (
    SQLChatTransaction,
    _to_message,
    _to_session,
    claim_owed_reports,
    detached_messages,
    message_by_correlator,
    messages_in_states,
    participants,
    purge_expired,
    session_by_correlator,
    session_by_id,
    session_by_leg,
    session_messages,
    sessions_in_states,
)
from state.chat_writes import (
    _MT,
    _ST,
    _MessageWrite,
    _OwedWrites,
    _ParticipantWrites,
    _Writes,
)
from state.db import Database
from state.writer import InThreadSession, SQLiteWriter, Step, run_now

CommitHook = Callable[[float, int], None]
"""``(seconds, units)`` of one commit of the chat store (metrics: docs/operations.md)."""

# --- the group-commit store ----------------------------------------------------------
#
# Why: every chat event used to be its own transaction of several statements, and
# on SQLite (aiosqlite: one thread hop per statement) that cost milliseconds per
# message. The store below keeps the chat guarantees with far less store work:
#
# * Group commit. Units (``transaction()``) still run one at a time, but they
#   share one database transaction: a unit's writes are buffered in memory and,
#   when it ends without error, join the current *batch*; the caller then waits
#   until that batch is committed, so nothing is acknowledged before it is
#   durable. A committer task, queued on the same lock behind the units already
#   waiting, writes the batch with one ``executemany`` per statement and commits
#   once. A failed commit fails every unit of the batch (each waiter gets a
#   ``StoreError``) and resets the caches from the database; a unit that raises
#   leaves no trace (its writes were never sent).
# * Read-through memory. Every session not ended is kept in memory (loaded at
#   open, kept up to date by the units), and recent messages in a bounded LRU;
#   a keyed read (session by id or leg, message by id) is answered from there
#   without SQL. Everything a batch has written but not yet committed is in
#   memory, so a keyed miss may read the database as is. List queries first
#   send the pending writes (inside the open transaction), then merge in the
#   running unit's own buffered writes.
# * One writer, no thread hops. The store has its own synchronous connection
#   (``SQLiteWriter``) whose transactions start with ``BEGIN IMMEDIATE``, so a batch
#   never meets ``SQLITE_BUSY_SNAPSHOT`` halfway. When that begin gets the write
#   lock at once, the batch's statements run right on the event loop (each a
#   few tens of microseconds; WAL readers never wait and the write lock is
#   ours); when another connection holds the lock, the begin waits on the
#   store's own thread, so the loop never sleeps in SQLite's busy handler. The
#   repository, subscription and outbox queries run unchanged on that
#   connection through a small in-thread session adapter (``InThreadSession``).
#   From begin to commit a batch also holds ``state.outbox.writer_lock``, the
#   asyncio lock the process's other SQLite writers (notification delivery)
#   queue on, so the two sides hand the file over without busy-handler sleeps.
#   Message ``seq`` numbers are handed out in memory (one process per SQLite file).
# * Subscriptions are kept in memory per user and checked once per batch against
#   ``chat_subscription_version`` (migration 21, kept by triggers), so a change
#   made by any connection is seen by the next batch.
# * The four hot writes (session insert/update, message insert/status) are SQL
#   text run with the DBAPI ``executemany`` (``state.chat_writes``); everything
#   else goes through SQLAlchemy as before.
#
# PostgreSQL (several instances may share it) and in-memory SQLite keep the
# direct path: one database transaction per unit, every read from the database.

log = logging.getLogger(__name__)

MESSAGE_CACHE = 20_000
"""Recent messages kept in memory (received messages wait there for their reports)."""
SUBSCRIPTION_CACHE = 50_000
"""Users whose subscriptions are kept in memory (all are dropped when it fills)."""


MessageKey = tuple[str, str, str]


def _key(user: str, message_id: str, direction: Direction) -> MessageKey:
    return (user, message_id, direction.value)


def _mkey(msg: StoredMessage) -> MessageKey:
    return (msg.user, msg.id, msg.direction.value)


@dataclass
class _Batch:
    """Units sharing one commit; ``done`` resolves when it is durable (or failed)."""

    done: asyncio.Future[None]
    scheduled: bool = False


class _Memory:
    """Sessions not ended (complete) and recent messages (bounded LRU)."""

    def __init__(self, message_limit: int) -> None:
        self.sessions: dict[str, ChatSession] = {}
        self.legs: dict[str, str] = {}
        self.pairs: dict[tuple[str, str], set[str]] = {}
        self.ended: set[str] = set()
        self.messages: OrderedDict[MessageKey, StoredMessage] = OrderedDict()
        self.message_limit = message_limit
        self.participants: dict[str, dict[str, Participant]] = {}
        """Members of live group sessions read once (session id → address → member)."""

    def put_session(self, cs: ChatSession) -> None:
        old = self.sessions.get(cs.id)
        if old is not None and old.leg is not None and old.leg != cs.leg:
            self.legs.pop(old.leg, None)
        self.sessions[cs.id] = cs
        if cs.leg is not None:
            self.legs[cs.leg] = cs.id
        if cs.kind is SessionKind.ADHOC:
            self.pairs.setdefault((cs.user, cs.peer), set()).add(cs.id)
        if cs.ended_at is not None:
            self.ended.add(cs.id)

    def drop_ended(self) -> None:
        """Forget ended sessions (after their end is committed)."""
        for sid in self.ended:
            cs = self.sessions.pop(sid, None)
            if cs is None:
                continue
            self.participants.pop(sid, None)
            if cs.leg is not None and self.legs.get(cs.leg) == sid:
                del self.legs[cs.leg]
            pair = self.pairs.get((cs.user, cs.peer))
            if pair is not None:
                pair.discard(sid)
                if not pair:
                    del self.pairs[(cs.user, cs.peer)]
        self.ended.clear()

    def message(self, key: MessageKey) -> StoredMessage | None:
        msg = self.messages.get(key)
        if msg is not None:
            self.messages.move_to_end(key)
        return msg

    def put_message(self, msg: StoredMessage) -> None:
        key = _mkey(msg)
        self.messages[key] = msg
        self.messages.move_to_end(key)

    def trim(self) -> None:
        """Drop the least recently used messages over the limit (nothing may be pending)."""
        while len(self.messages) > self.message_limit:
            self.messages.popitem(last=False)

    def clear(self) -> None:
        self.participants.clear()
        self.sessions.clear()
        self.legs.clear()
        self.pairs.clear()
        self.ended.clear()
        self.messages.clear()


class BatchedChatTransaction:
    """``bridge.chat.store.ChatTransaction`` of one unit in a group-commit batch.

    Writes are buffered here until the unit ends; reads see them first, then
    the store's memory, then the database.
    """

    def __init__(self, store: SQLChatStore) -> None:
        self._store = store
        self._sessions: dict[str, ChatSession] = {}
        self._new_sessions: set[str] = set()
        self._messages: dict[int, _MessageWrite] = {}
        self._keys: dict[MessageKey, int] = {}
        self._participants: _ParticipantWrites = {}
        self._owed: _OwedWrites = {}
        self._notes: list[dict[str, Any]] = []
        self.notifications: list[Notification] = []
        """The notifications enqueued by this unit, filled in when its batch is written."""

    # sessions

    async def insert_session(self, cs: ChatSession) -> ChatSession:
        self._sessions[cs.id] = cs
        self._new_sessions.add(cs.id)
        return cs

    async def save_session(self, cs: ChatSession) -> ChatSession:
        self._sessions[cs.id] = cs
        return cs

    async def _session(self, session_id: str) -> ChatSession | None:
        cs = self._sessions.get(session_id) or self._store.memory.sessions.get(session_id)
        if cs is not None:
            return cs
        return await self._store.read(lambda s: session_by_id(s, session_id))

    async def get_session(self, user: UserUri, session_id: str) -> ChatSession | None:
        cs = await self._session(session_id)
        return cs if cs is not None and cs.user == user else None

    async def session_by_id(self, session_id: str) -> ChatSession | None:
        return await self._session(session_id)

    async def session_by_leg(self, leg: str) -> ChatSession | None:
        for cs in self._sessions.values():
            if cs.leg == leg:
                return cs
        sid = self._store.memory.legs.get(leg)
        if sid is not None:
            return self._sessions.get(sid) or self._store.memory.sessions[sid]
        return await self._store.read(lambda s: session_by_leg(s, leg))

    async def session_by_correlator(self, user: UserUri, correlator: str) -> ChatSession | None:
        for cs in self._sessions.values():
            if cs.user == user and cs.client_correlator == correlator:
                return cs
        return await self._store.read(lambda s: session_by_correlator(s, user, correlator), True)

    async def live_adhoc_session(
        self, user: UserUri, peer: UserUri, states: Iterable[str]
    ) -> ChatSession | None:
        """From memory alone: every session not ended is there (module comment)."""
        wanted = set(states)
        memory = self._store.memory
        found = {sid: memory.sessions[sid] for sid in memory.pairs.get((user, peer), ())}
        for cs in self._sessions.values():
            if cs.kind is SessionKind.ADHOC and cs.user == user and cs.peer == peer:
                found[cs.id] = cs
        live = [cs for cs in found.values() if cs.state in wanted and cs.ended_at is None]
        return max(live, key=lambda cs: (cs.created_at, cs.id)) if live else None

    async def sessions_in_states(
        self, kind: SessionKind, states: Iterable[str], owners: Collection[str] | None = None
    ) -> list[ChatSession]:
        wanted = list(states)
        rows = await self._store.read(lambda s: sessions_in_states(s, kind, wanted, owners), True)
        found = {cs.id: cs for cs in rows}
        for cs in self._sessions.values():
            if owners is not None and cs.id not in found and self._store.owner not in owners:
                continue  # written by this unit and not returned: this instance's, not asked for
            if cs.kind is kind and cs.state in wanted:
                found[cs.id] = cs
            else:
                found.pop(cs.id, None)
        return sorted(found.values(), key=lambda cs: (cs.created_at, cs.id))

    # messages

    async def insert_message(self, msg: StoredMessage, *, expires_at: datetime) -> StoredMessage:
        if msg.client_correlator is not None and msg.direction is Direction.OUTGOING:
            if await self.message_by_correlator(msg.user, msg.client_correlator) is not None:
                raise Conflict("clientCorrelator already used for another message")
        stored = evolve(msg, seq=self._store.next_seq())
        self._messages[stored.seq] = _MessageWrite(stored, stored.created_at, expires_at)
        self._keys[_mkey(stored)] = stored.seq
        return stored

    async def get_message(
        self, user: UserUri, message_id: str, direction: Direction
    ) -> StoredMessage | None:
        key = _key(user, message_id, direction)
        seq = self._keys.get(key)
        if seq is not None:
            return self._messages[seq].msg
        memory = self._store.memory
        msg = memory.message(key)
        if msg is None:
            msg = await self._store.message(user, message_id, direction)
            if msg is not None:
                memory.put_message(msg)
        return msg

    async def find_messages(self, user: UserUri, message_id: str) -> list[StoredMessage]:
        found = []
        for direction in (Direction.OUTGOING, Direction.INCOMING):
            msg = await self.get_message(user, message_id, direction)
            if msg is not None:
                found.append(msg)
        return found

    async def message_by_correlator(self, user: UserUri, correlator: str) -> StoredMessage | None:
        for write in self._messages.values():
            m = write.msg
            if m.user == user and m.direction is Direction.OUTGOING:
                if m.client_correlator == correlator:
                    return m
        return await self._store.read(lambda s: message_by_correlator(s, user, correlator), True)

    async def set_message_status(
        self,
        msg: StoredMessage,
        status: str,
        *,
        now: datetime,
        session_id: ChatSessionId | None = None,
        detach: bool = False,
    ) -> StoredMessage:
        new_session = None if detach else (msg.session_id if session_id is None else session_id)
        updated = evolve(msg, status=status, session_id=new_session)
        before = self._messages.get(msg.seq)
        expires_at = None if before is None else before.expires_at
        self._messages[msg.seq] = _MessageWrite(updated, now, expires_at)
        self._keys[_mkey(updated)] = msg.seq
        return updated

    def _merge(
        self, rows: list[StoredMessage], match: Callable[[StoredMessage], bool]
    ) -> list[StoredMessage]:
        found = {m.seq: m for m in rows}
        for seq, write in self._messages.items():
            if match(write.msg):
                found[seq] = write.msg
            else:
                found.pop(seq, None)
        return [found[seq] for seq in sorted(found)]

    async def session_messages(
        self, session_id: str, direction: Direction, statuses: Iterable[str]
    ) -> list[StoredMessage]:
        wanted = list(statuses)
        rows = await self._store.read(
            lambda s: session_messages(s, session_id, direction, wanted), True
        )
        return self._merge(
            rows,
            lambda m: (
                m.session_id == session_id and m.direction is direction and m.status in wanted
            ),
        )

    async def detached_messages(
        self, user: UserUri, peer: UserUri, rest_session: str, status: str
    ) -> list[StoredMessage]:
        def match(m: StoredMessage) -> bool:
            return (
                m.user == user
                and m.peer == peer
                and m.direction is Direction.OUTGOING
                and m.rest_session == rest_session
                and m.session_id is None
                and m.status == status
            )

        store = self._store
        if not store.stored_detached(user, peer, rest_session, status):
            # None in the database: the answer is in the writes not yet flushed
            # (their latest versions), so no flush and no query (an adhoc send).
            pending = [w.msg for w in store._pending_messages.values() if match(w.msg)]
            return self._merge(pending, match)
        rows = await store.read(
            lambda s: detached_messages(s, user, peer, rest_session, status), True
        )
        return self._merge(rows, match)

    async def messages_in_states(
        self, direction: Direction, statuses: Iterable[str], owners: Collection[str] | None = None
    ) -> list[StoredMessage]:
        wanted = list(statuses)
        rows = await self._store.read(
            lambda s: messages_in_states(s, direction, wanted, owners), True
        )
        known = {m.seq for m in rows}
        return self._merge(
            rows,
            lambda m: (
                m.direction is direction
                and m.status in wanted
                and (owners is None or m.seq in known or self._store.owner in owners)
            ),
        )

    async def purge_expired(self, *, now: datetime, ended_before: datetime) -> int:
        """Runs at once (not buffered): deleting what expired is harmless to keep."""
        count = await self._store.read(
            lambda s: purge_expired(s, now=now, ended_before=ended_before), True
        )
        self._store.memory.messages.clear()
        return count

    # group participants

    async def participants(self, session_id: str) -> list[Participant]:
        """The members in memory (else the database's rows after the batch's pending
        writes, kept in memory while the session is live), then this unit's own."""
        memory = self._store.memory
        known = memory.participants.get(session_id)
        if known is None:
            rows = await self._store.read(lambda s: participants(s, session_id), True)
            known = {p.address: p for p in rows}
            if session_id in memory.sessions and session_id not in memory.ended:
                memory.participants[session_id] = known
        found = dict(known)
        for address, (p, _now) in self._participants.get(session_id, {}).items():
            found[address] = p
        return sorted(found.values(), key=lambda p: (not p.is_originator, p.address))

    async def save_participants(
        self, session_id: str, people: Iterable[Participant], now: datetime
    ) -> None:
        mine = self._participants.setdefault(session_id, {})
        for p in people:
            mine[p.address] = (p, now)

    # owed reports (buffered like the rest; the last word on a report wins)

    async def owe_reports(self, owed: Iterable[OwedReport], now: datetime) -> None:
        for o in owed:
            self._owed[o] = now

    async def reports_taken(self, taken: Iterable[OwedReport]) -> None:
        for o in taken:
            self._owed[o] = None

    async def claim_owed_reports(
        self, owner: str, now: datetime, until: datetime, created_before: datetime | None = None
    ) -> list[OwedReport]:
        mine = {
            o
            for o, when in self._owed.items()
            if when is not None and (created_before is None or when <= created_before)
        }
        found = await self._store.read(
            lambda s: claim_owed_reports(s, owner, now, until, created_before), True
        )
        return [*found, *(o for o in mine if o not in found)]

    # notifications

    async def active_subscriptions(self, user: UserUri, now: datetime) -> list[Subscription]:
        return await self._store.subscriptions(user, now)

    async def enqueue(
        self,
        *,
        user: UserUri,
        subscription_id: SubscriptionId,
        notify_url: str,
        root: str,
        body: JSONObject,
        now: datetime,
    ) -> None:
        self._notes.append(
            {
                "user": user,
                "subscription_id": subscription_id,
                "notify_url": notify_url,
                "root": root,
                "body": body,
                "now": now,
            }
        )


T = TypeVar("T")


Query = Callable[[AsyncSession], Coroutine[Any, Any, T]]


class _GroupedUnit:
    """One unit of the group-commit store (``SQLChatStore.transaction``).

    A class rather than an ``@asynccontextmanager``: units are the hottest
    context of the chat core (several per message), and an async generator
    costs a generator, its first-iteration registration with the loop and
    contextlib's wrapping each time.
    """

    __slots__ = ("_store", "_batch", "_tx")

    def __init__(self, store: SQLChatStore) -> None:
        self._store = store
        self._batch: _Batch | None = None
        self._tx: BatchedChatTransaction | None = None

    async def __aenter__(self) -> ChatTransaction:
        store = self._store
        await store._lock.acquire()
        try:
            if store._closed:  # closed while this unit waited for the lock
                raise StoreError("the chat store is closed")
            if not store._opened:
                await store._open()
            batch = store._batch
            if batch is None:
                batch = store._batch = _Batch(asyncio.get_running_loop().create_future())
            self._batch = batch
            self._tx = BatchedChatTransaction(store)
        except BaseException:
            store._lock.release()
            raise
        return self._tx

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        store, batch = self._store, self._batch
        assert batch is not None and self._tx is not None
        try:
            if exc_type is None:
                store._absorb(self._tx)
        finally:  # even a failed unit may have begun the transaction: end it
            if not batch.scheduled:
                batch.scheduled = True
                store._schedule_commit(batch)
            store._lock.release()
        if exc_type is not None:
            return False
        try:
            await asyncio.shield(batch.done)
        except StoreError as failed:
            raise StoreError(f"chat store commit failed: {failed}") from failed
        return False


class SQLChatStore:
    """``bridge.chat.store.ChatStore`` over a ``state.db.Database`` (module comment above).

    A SQLite file gets the group-commit store; PostgreSQL and in-memory SQLite
    the direct one. :meth:`close` writes what is pending and stops the
    store's writer.
    """

    def __init__(
        self,
        database: Database,
        *,
        message_cache: int = MESSAGE_CACHE,
        commit_interval: float = 0.0,
        claims: outbox.InlineClaims | None = None,
        owner: str = "",
        on_commit: CommitHook | None = None,
    ) -> None:
        self.database = database
        self.owner = owner
        """This instance's id (``state.instances``), recorded on the sessions and messages
        inserted through this store."""
        self.on_commit = on_commit
        """Called after each commit with its seconds and the units it made durable."""
        self.commit_interval = commit_interval
        """Least seconds between two commits' starts (group commit pacing)."""
        self.claims = claims
        """The delivery worker, claiming the lanes of each batch's notifications inline."""
        self._last_commit = float("-inf")
        self._pacing: tuple[asyncio.TimerHandle, _Batch] | None = None
        database_name = database.url.database or ""
        self.grouped = database.is_sqlite and database_name not in ("", ":memory:")
        self.batches = 0
        """Batches committed so far (tests, benchmarks)."""
        self._lock = asyncio.Lock()
        self.memory = _Memory(message_cache)
        self._writer: SQLiteWriter | None = None
        self._writes: _Writes | None = None
        self._batch: _Batch | None = None
        self._committers: set[asyncio.Task[None]] = set()
        self._seq = 0
        self._opened = False
        self._closed = False
        self._pending_sessions: dict[str, tuple[ChatSession, bool]] = {}
        self._pending_messages: dict[int, _MessageWrite] = {}
        self._pending_participants: _ParticipantWrites = {}
        self._pending_owed: _OwedWrites = {}
        self._pending_notes: list[tuple[BatchedChatTransaction, dict[str, Any]]] = []
        self._subscriptions: dict[UserUri, tuple[datetime, list[Subscription]]] = {}
        """Subscriptions read, per user, with the time they were read at."""
        self._subscriptions_version: int | None = None
        self._subscriptions_checked: _Batch | None = None

    @property
    def raw_statements(self) -> int:
        """Writes run on the DBAPI cursor directly (not seen by SQLAlchemy events)."""
        return 0 if self._writes is None else self._writes.statements

    @property
    def engine(self) -> sa.Engine | AsyncEngine:
        """The engine the chat SQL runs on (the writer's own one for a SQLite file)."""
        return self._writer.engine if self._writer is not None else self.database.engine

    # --- units ---------------------------------------------------------------------

    def transaction(self) -> AbstractAsyncContextManager[ChatTransaction]:
        """A unit of work: durable when the block returns, no trace when it raises."""
        if self._closed:
            raise StoreError("the chat store is closed")
        if self.grouped:
            return self._grouped()
        return self._direct()

    @asynccontextmanager
    async def _direct(self) -> AsyncIterator[ChatTransaction]:
        started = 0.0
        if not self.database.is_sqlite:
            async with self.database.sessions.begin() as session:
                yield SQLChatTransaction(session, self.owner)
                started = time.perf_counter()  # the commit runs as the block ends
        else:
            # SQLite in memory: units one at a time, or they meet SQLITE_BUSY
            async with self._lock, self.database.sessions.begin() as session:
                yield SQLChatTransaction(session, self.owner)
                started = time.perf_counter()
        if self.on_commit is not None:
            self.on_commit(time.perf_counter() - started, 1)

    def _grouped(self) -> _GroupedUnit:
        return _GroupedUnit(self)

    def _schedule_commit(self, batch: _Batch) -> None:
        """Start the batch's committer now, or once ``commit_interval`` has passed since
        the last commit began (the units meanwhile join the same batch)."""
        loop = asyncio.get_running_loop()
        wait = self._last_commit + self.commit_interval - loop.time()
        if wait <= 0:
            self._start_commit(batch)
        else:
            self._pacing = (loop.call_later(wait, self._start_commit, batch), batch)

    def _start_commit(self, batch: _Batch) -> None:
        self._pacing = None
        self._last_commit = asyncio.get_running_loop().time()
        task = asyncio.create_task(self._commit(batch), name="chat-store-commit")
        self._committers.add(task)
        task.add_done_callback(self._committers.discard)

    def next_seq(self) -> int:
        """The next message ``seq`` (store order)."""
        self._seq += 1
        return self._seq

    def _pending(self) -> bool:
        return bool(
            self._pending_sessions
            or self._pending_messages
            or self._pending_participants
            or self._pending_owed
            or self._pending_notes
        )

    def _take_pending(
        self,
    ) -> tuple[
        dict[str, tuple[ChatSession, bool]],
        dict[int, _MessageWrite],
        _ParticipantWrites,
        list[tuple[BatchedChatTransaction, dict[str, Any]]],
        _OwedWrites,
    ]:
        taken = (
            self._pending_sessions,
            self._pending_messages,
            self._pending_participants,
            self._pending_notes,
            self._pending_owed,
        )
        self._pending_sessions, self._pending_messages = {}, {}
        self._pending_participants, self._pending_notes = {}, []
        self._pending_owed = {}
        return taken

    def _writing(self) -> tuple[Step[list[Notification]], list[BatchedChatTransaction]]:
        """The pending writes as one writer-thread step, and the unit of each notification."""
        sessions, messages, people, notes, owed = self._take_pending()
        owners = [tx for tx, _ in notes]

        def step(conn: sa.Connection, db: InThreadSession) -> list[Notification]:
            if not (sessions or messages or people or notes or owed):
                return []
            assert self._writes is not None
            return self._writes.write(
                conn, db, sessions, messages, [n for _, n in notes], people, owed
            )

        return step, owners

    @staticmethod
    def _hand_out(owners: list[BatchedChatTransaction], made: list[Notification]) -> None:
        for tx, item in zip(owners, made, strict=True):
            tx.notifications.append(item)

    async def read(self, query: Query[T], flush: bool = False) -> T:
        """Run ``query`` in the open transaction, after the pending writes if ``flush``."""
        assert self._writer is not None
        write, owners = self._writing() if flush else (None, [])

        def step(conn: sa.Connection, db: InThreadSession) -> tuple[list[Notification], T]:
            made = [] if write is None else write(conn, db)
            return made, run_now(query(cast(AsyncSession, db)))

        made, result = await self._writer_call(step)
        self._hand_out(owners, made)
        return result

    async def subscriptions(self, user: UserUri, now: datetime) -> list[Subscription]:
        """``user``'s active subscriptions, from memory while none has changed.

        ``chat_subscription_version`` (migration 21) counts every change to
        ``chat_subscriptions``; it is compared once per batch, inside the
        batch's ``BEGIN IMMEDIATE`` transaction, so no other connection can
        change a subscription between that check and the commit. Expiry is
        checked here, against ``now``.
        """
        batch = self._batch
        if self._subscriptions_checked is not batch or batch is None:
            version = await self._writer_call(_subscription_version)
            if version is None or version != self._subscriptions_version:
                self._subscriptions.clear()
            self._subscriptions_version = version
            self._subscriptions_checked = batch
        found = self._subscriptions.get(user)
        if found is not None and now >= found[0]:
            return [sub for sub in found[1] if sub.is_active(now)]
        subs = await self.read(lambda s: repository.active_subscriptions(s, user, now))
        if len(self._subscriptions) >= SUBSCRIPTION_CACHE:
            self._subscriptions.clear()
        self._subscriptions[user] = (now, subs)
        return subs

    async def _writer_call(self, step: Step[T]) -> T:
        assert self._writer is not None
        try:
            return await self._writer.call(step)
        except Exception as exc:
            if self._batch is not None:  # the batch's transaction may be broken: fail it
                await self._fail(self._batch, exc)
            raise

    async def message(
        self, user: UserUri, message_id: str, direction: Direction
    ) -> StoredMessage | None:
        """One message from the database (a precompiled Core query, no ORM)."""
        params = {"u": user, "m": message_id, "d": direction.value}

        def step(conn: sa.Connection, _db: InThreadSession) -> StoredMessage | None:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            if self._writes is not None:
                self._writes.statements += 1
            probe = raw.cursor()
            try:  # most look-ups are duplicate checks of a new message: absent
                found = probe.execute(_PROBE_MESSAGE, (user, message_id, direction.value))
                if found.fetchone() is None:
                    return None
            finally:
                probe.close()
            row = conn.execute(_GET_MESSAGE, params).first()
            return None if row is None else _to_message(cast(Any, row))

        return await self._writer_call(step)

    def stored_detached(self, user: UserUri, peer: UserUri, rest_session: str, status: str) -> bool:
        """Whether the database (committed, or flushed into the open batch) holds a row
        :func:`detached_messages` would return; a raw probe that begins no transaction."""
        assert self._writer is not None
        if self._writes is not None:
            self._writes.statements += 1
        params = (user, peer, Direction.OUTGOING.value, rest_session, status)
        sql = _PROBE_DETACHED_UNSENT if status in UNSENT_STATUSES else _PROBE_DETACHED
        try:
            return self._writer.exists(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"chat store read failed: {exc}") from exc

    def _absorb(self, tx: BatchedChatTransaction) -> None:
        """A unit ended well: its writes join the batch and the memory."""
        for sid, cs in tx._sessions.items():
            before = self._pending_sessions.get(sid)
            inserted = sid in tx._new_sessions or (before is not None and before[1])
            self._pending_sessions[sid] = (cs, inserted)
            self.memory.put_session(cs)
        for seq, write in tx._messages.items():
            before_m = self._pending_messages.get(seq)
            if write.expires_at is None and before_m is not None:
                write = replace(write, expires_at=before_m.expires_at)
            self._pending_messages[seq] = write
            self.memory.put_message(write.msg)
        for sid, people in tx._participants.items():
            self._pending_participants.setdefault(sid, {}).update(people)
            cached = self.memory.participants.get(sid)
            if cached is not None:
                cached.update((address, p) for address, (p, _now) in people.items())
        if tx._owed:
            self._pending_owed.update(tx._owed)
        self._pending_notes.extend((tx, note) for note in tx._notes)

    async def _commit(self, batch: _Batch) -> None:
        """Write and commit ``batch`` (queued on the lock behind the units waiting)."""
        async with self._lock:
            if self._batch is batch:
                self._batch = None
            if batch.done.done():
                return  # failed already
            if self._writer is None:  # closed meanwhile: nothing can be written any more
                batch.done.set_exception(StoreError("the chat store is closed"))
                batch.done.exception()  # retrieved here: waiters may all be gone
                return
            if not self._pending() and not self._writer.in_transaction:
                batch.done.set_result(None)  # answered from memory: nothing to commit
                self.memory.drop_ended()
                return
            write, owners = self._writing()
            claims = None if self.claims is None else self.claims.claim_round()

            def step(conn: sa.Connection, db: InThreadSession) -> list[Notification]:
                try:
                    made = write(conn, db)
                    if claims is not None and conn.in_transaction():
                        run_now(claims.run(cast(AsyncSession, db), made))
                    if conn.in_transaction():
                        conn.commit()
                    return made
                except BaseException:
                    conn.rollback()
                    raise

            started = time.perf_counter()
            try:
                made = await self._writer.call(step)
            except BaseException as exc:  # cancelled: the batch is not known durable
                if claims is not None:
                    claims.failed()
                await self._fail(batch, exc)
                if isinstance(exc, Exception):
                    return
                raise
            if self.on_commit is not None:
                self.on_commit(time.perf_counter() - started, len(owners))
            if claims is not None:
                claims.committed()
            self._hand_out(owners, made)
            self.batches += 1
            batch.done.set_result(None)
            self.memory.drop_ended()
            self.memory.trim()
            self._writer.committed()  # may start a checkpoint; its failures are logged there

    async def _fail(self, batch: _Batch, exc: BaseException) -> None:
        log.error("x chat store batch failed, rolled back: %s", exc)
        self._take_pending()
        self._subscriptions.clear()
        if not batch.done.done():
            batch.done.set_exception(StoreError(f"{type(exc).__name__}: {exc}"))
            batch.done.exception()  # retrieved here: waiters may all be gone
        if self._batch is batch:
            self._batch = None
        if self._writer is not None:
            self._writer.rollback()
        self.memory.clear()
        try:
            await self._load()
        except Exception:
            log.exception("x chat store reload failed")

    # --- lifetime --------------------------------------------------------------------

    async def _open(self) -> None:
        self._writer = SQLiteWriter(
            self.database.url, outbox.writer_lock(self.database), name="chat-store"
        )
        self._writes = _Writes(self._writer.engine.dialect, self.owner)
        await self._load()
        self._opened = True

    async def _load(self) -> None:
        """Fill the memory with every session not ended; take up ``seq`` where it is."""
        assert self._writer is not None

        def step(conn: sa.Connection, _db: InThreadSession) -> tuple[list[ChatSession], int]:
            rows = conn.execute(sa.select(_ST).where(_ST.c.ended_at.is_(None))).all()
            top = conn.execute(sa.select(sa.func.max(_MT.c.seq))).scalar()
            conn.commit()
            return [_to_session(cast(Any, row)) for row in rows], int(top or 0)

        found, top = await self._writer.call(step)
        for cs in found:
            self.memory.put_session(cs)
        self._seq = max(self._seq, top)

    async def close(self) -> None:
        """Refuse new units, commit what the units before have left, then stop the writer.

        A unit running now ends normally (its batch is committed before the
        writer stops); a unit still waiting for the lock gets a ``StoreError``.
        """
        self._closed = True
        while True:
            if self._pacing is not None:  # a paced commit: start it now
                handle, batch = self._pacing
                handle.cancel()
                self._start_commit(batch)
            if self._committers:
                await asyncio.gather(*list(self._committers), return_exceptions=True)
                continue
            async with self._lock:  # after the unit holding it, if any
                if self._pacing is None and not self._committers:
                    if self._writer is not None:
                        await self._writer.close()
                        self._writer = None
                    return


_PROBE_MESSAGE = (
    f"SELECT 1 FROM {_MT.name} WHERE user_uri = ? AND message_id = ? AND direction = ? LIMIT 1"
)
"""Whether :data:`_GET_MESSAGE` finds a row, on the DBAPI connection (no SQLAlchemy call)."""
_DETACHED_WHERE = (
    f"SELECT 1 FROM {_MT.name} WHERE user_uri = ? AND peer_uri = ? AND direction = ?"
    " AND rest_session = ? AND session_id IS NULL AND status = ?"
)
_PROBE_DETACHED = f"{_DETACHED_WHERE} LIMIT 1"
"""Whether :func:`detached_messages` finds a row, on the DBAPI connection."""
_PROBE_DETACHED_UNSENT = f"{_DETACHED_WHERE} AND {UNSENT_SQL} LIMIT 1"
"""The same for an unsent ``status``: the partial index of migration 26 answers it."""
_GET_MESSAGE = sa.select(_MT).where(
    _MT.c.user_uri == sa.bindparam("u"),
    _MT.c.message_id == sa.bindparam("m"),
    _MT.c.direction == sa.bindparam("d"),
)


def _subscription_version(conn: sa.Connection, _db: InThreadSession) -> int | None:
    """The subscription change counter (migration 21), or None without it.

    Read on the DBAPI cursor (once per batch; SQLAlchemy's statement path costs
    more than the statement).
    """
    raw = conn.connection.dbapi_connection
    assert raw is not None
    cursor = raw.cursor()
    try:  # a failed SELECT leaves a SQLite transaction as it was
        row = cursor.execute("SELECT version FROM chat_subscription_version").fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        cursor.close()
    return None if row is None or row[0] is None else int(row[0])
