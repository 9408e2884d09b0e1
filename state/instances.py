"""This instance in the shared store: its id, its liveness, and which peers are dead
(issue 10; docs/several-instances.md).

Identity: ``Settings.instance_id``, or when empty an id generated at each start
(:func:`generated_id`: host name, process id and 32 random bits). Every session,
message and conference row records the instance that created it (``owner``,
migration 41); a generated id makes each run a new owner, so a restarted instance
recovers its previous run exactly as it recovers any other dead instance.

Liveness on PostgreSQL is the database's own: each instance holds a session-level
advisory lock, ``pg_try_advisory_lock(INSTANCE_NAMESPACE, lock_key(id))``, on a
connection kept for it alone. PostgreSQL releases the lock when that connection
ends, so when the process dies (kill -9 included: the kernel closes its socket)
the lock is free; an instance whose lock can be taken is provably dead. Nothing
here relies on clocks. :meth:`Instances.recoverable` tries the lock of every other
owner it finds (the ``instances`` rows of migration 40 and the owners of rows still
live); it keeps the locks it won until :meth:`Instances.release_dead`, so two
instances never recover the same dead one at once, and a dead instance restarting
under a configured id waits (:data:`LOCK_WAIT`) until its recovery is over.

The heartbeat (``instance_heartbeat`` seconds) writes ``instances.heartbeat_at``
through the lock's own connection, which also checks that connection: when it
broke (PostgreSQL restarted, the network dropped it), the lock is gone and a peer
may already have taken this instance's work over, so the lock is taken again at
once, and if that fails :attr:`Instances.lost` is set (the composition root then
stops the instance).

SQLite: one process per file (``state.chat_store``), so there are no peers: the
row is written once at start, there is no heartbeat and no lock, and
:meth:`Instances.recoverable` answers None ("every owner").
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import socket
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Mapped, mapped_column

from bridge.errors import StoreError
from state.db import INSTANCE_NAMESPACE, Base, Database

log = logging.getLogger(__name__)

ID_LEN = 128
LOCK_WAIT = 30.0
"""Seconds a configured instance id waits for its lock at start (a peer may be
recovering that id's previous run) before the start fails."""
LEGACY_OWNER = ""
"""The ``owner`` of rows written before migration 41 (or by a bridge predating it)."""


class InstanceRow(Base):
    """One instance using the store (migration 40)."""

    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(sa.String(ID_LEN), primary_key=True)
    host: Mapped[str] = mapped_column(sa.String(255))
    pid: Mapped[int] = mapped_column(sa.Integer)
    started_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


_I = InstanceRow

_OWNERS = sa.text(
    "SELECT id FROM instances"
    " UNION SELECT owner FROM chat_sessions WHERE ended_at IS NULL"
    " UNION SELECT owner FROM focus_conferences WHERE ended_at IS NULL"
    " UNION SELECT owner FROM chat_messages WHERE direction = 'outgoing'"
    " AND status IN ('queued', 'sending')"
    " UNION SELECT owner FROM chat_messages WHERE direction = 'incoming' AND status = 'received'"
)
"""Every owner that may have work to recover: the registered instances and the owners of
the rows recovery touches (live sessions and conferences, unsent and unreported messages:
``bridge.chat.recovery``, ``bridge.focus.focus.ConferenceFocus.start``)."""


def generated_id() -> str:
    """``<host>-<pid>-<8 hex digits>``: unique per start."""
    host = socket.gethostname()[:64] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


def lock_key(instance_id: str) -> int:
    """The second key of ``instance_id``'s advisory lock (a signed 32-bit hash).

    Two ids with one key (odds about n²/2³³ for n instances) only make a dead
    instance look alive while the other lives: its work waits, nothing breaks.
    """
    digest = hashlib.blake2b(instance_id.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Instances:
    """This instance's id and liveness lock, and the dead peers it recovers (module docstring)."""

    def __init__(
        self,
        database: Database,
        instance_id: str = "",
        *,
        heartbeat: float = 10.0,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.database = database
        self.configured = bool(instance_id)
        self.id = instance_id or generated_id()
        """This instance's id (the ``owner`` of what it creates)."""
        self.heartbeat = heartbeat
        self.clock = clock
        self.lost = asyncio.Event()
        """Set when the liveness lock was lost and could not be taken again."""
        self.on_lost: Callable[[], None] | None = None
        """Called then too (the composition root stops the instance)."""
        self._conn: AsyncConnection | None = None
        self._gate = asyncio.Lock()  # the lock connection runs one statement at a time
        self._held: set[str] = set()
        self._beat: asyncio.Task[None] | None = None

    @property
    def shared(self) -> bool:
        """True on PostgreSQL, where other instances may share the store."""
        return not self.database.is_sqlite

    # --- lifetime ----------------------------------------------------------------------

    async def start(self) -> None:
        """Take this instance's lock (PostgreSQL), register it, start the heartbeat.

        Raises ``StoreError`` when a live instance holds the id (a configured
        id in use; after :data:`LOCK_WAIT` seconds).
        """
        if self.shared:
            self._conn = await self.database.engine.connect()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + (LOCK_WAIT if self.configured else 0.0)
            while not await self._try_lock(self.id):
                if loop.time() >= deadline:
                    await self.close()
                    raise StoreError(
                        f"instance id {self.id!r} is held by a live instance"
                        " (instance_id must differ between instances)"
                    )
                await asyncio.sleep(0.5)
        now = self.clock()
        async with self.database.sessions.begin() as session:
            if not self.shared:  # one instance per SQLite file: earlier runs are over
                await session.execute(sa.delete(_I))
            else:
                await session.execute(sa.delete(_I).where(_I.id == self.id))
            session.add(
                InstanceRow(
                    id=self.id,
                    host=socket.gethostname()[:255],
                    pid=os.getpid(),
                    started_at=now,
                    heartbeat_at=now,
                )
            )
        log.info("instance %s (%s)", self.id, "configured" if self.configured else "generated")
        if self.shared:
            self._beat = asyncio.create_task(self._heartbeat(), name="instance-heartbeat")

    async def close(self) -> None:
        """Stop the heartbeat and give back every lock (this instance's and the dead ones')."""
        if self._beat is not None:
            self._beat.cancel()
            await asyncio.gather(self._beat, return_exceptions=True)
            self._beat = None
        conn, self._conn = self._conn, None
        self._held.clear()
        if conn is None:
            return
        try:
            async with self._gate:
                await conn.execute(sa.text("SELECT pg_advisory_unlock_all()"))
                await conn.commit()
        except Exception:  # the locks must not go back to the pool with the connection
            await conn.invalidate()
        finally:
            await conn.close()

    # --- peers -------------------------------------------------------------------------

    async def recoverable(self, *, thorough: bool = True) -> frozenset[str] | None:
        """The owners whose work this instance may recover now: itself and every owner
        provably dead (its lock was free; held here until :meth:`release_dead`).

        ``thorough`` (at start): every owner of a row recovery touches, as well as
        the registered instances; else the registered instances only (an instance
        registers before it writes anything, and its row goes only once it was
        recovered). None on SQLite: every owner (one instance per file).
        """
        if not self.shared:
            return None
        query = _OWNERS if thorough else sa.select(_I.id)
        async with self.database.sessions() as session:
            owners = {str(o) for o in await session.scalars(query)}
        for owner in sorted(owners - self._held - {self.id}):
            if await self._try_lock(owner):
                self._held.add(owner)
                log.info("- instance %s is dead (its lock is free): recovering its work", owner)
        return frozenset({self.id, *self._held})

    async def dead_peers(self) -> frozenset[str]:
        """The other registered instances provably dead now (empty on SQLite): their
        locks are held until :meth:`release_dead` (the periodic takeover's question)."""
        found = await self.recoverable(thorough=False)
        return frozenset() if found is None else found - {self.id}

    async def release_dead(self) -> None:
        """After the recovery of the dead owners committed: forget them, free their locks."""
        dead, self._held = sorted(self._held), set()
        if not dead or self._conn is None:
            return
        async with self.database.sessions.begin() as session:
            await session.execute(sa.delete(_I).where(_I.id.in_(dead)))
        async with self._gate:
            for owner in dead:
                await self._conn.execute(
                    sa.text("SELECT pg_advisory_unlock(:a, :b)"),
                    {"a": INSTANCE_NAMESPACE, "b": lock_key(owner)},
                )
            await self._conn.commit()

    # --- the lock connection -------------------------------------------------------------

    async def _try_lock(self, instance_id: str) -> bool:
        assert self._conn is not None
        async with self._gate:
            got = await self._conn.scalar(
                sa.text("SELECT pg_try_advisory_lock(:a, :b)"),
                {"a": INSTANCE_NAMESPACE, "b": lock_key(instance_id)},
            )
            await self._conn.commit()
        return bool(got)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            await self.beat()

    async def beat(self) -> None:
        """One heartbeat: write ``heartbeat_at`` on the lock's connection; when that
        fails, take the lock again (:meth:`_relock`)."""
        try:
            if self._conn is None:
                raise StoreError("no liveness connection")
            async with self._gate:
                await self._conn.execute(
                    sa.update(_I).where(_I.id == self.id).values(heartbeat_at=self.clock())
                )
                await self._conn.commit()
        except Exception as exc:
            log.error("x instance %s: liveness connection failed (%s)", self.id, exc)
            await self._relock()

    async def _relock(self) -> None:
        """Take the lock again on a new connection; set :attr:`lost` when it cannot be."""
        old, self._conn = self._conn, None
        if old is not None:
            try:
                await old.invalidate()
                await old.close()
            except Exception:  # broken already
                log.debug("closing the broken liveness connection", exc_info=True)
        try:
            self._conn = await self.database.engine.connect()
            if await self._try_lock(self.id):
                log.warning("- instance %s: liveness lock taken again", self.id)
                return
        except Exception as exc:
            log.error("x instance %s: cannot reconnect for liveness (%s)", self.id, exc)
        log.critical("x instance %s lost its liveness lock: a peer may take its work over", self.id)
        self.lost.set()
        if self.on_lost is not None:
            self.on_lost()
