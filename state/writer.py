"""A synchronous SQLite writer that runs on the event loop (one per writing component).

Why: through aiosqlite every statement is a hop to the driver's thread and back
(a queue, a thread switch, a loop wake-up), which costs far more than the
statement itself (tens of microseconds on a WAL file). A writer here has its
own synchronous connection whose transactions begin with ``BEGIN IMMEDIATE``
and a busy timeout of 0: when the begin gets the write lock at once, every
statement runs right on the event loop (WAL readers never wait, and the write
lock is ours until the commit); when another connection holds it, the begin
waits on the writer's own thread instead, so the loop never sleeps in SQLite's
busy handler. Writers of one process also queue on one asyncio lock
(``state.outbox.writer_lock``) from begin to commit, so they hand the file over
to each other without meeting SQLite's lock at all. WAL checkpoints run on the
thread every :attr:`SQLiteWriter.CHECKPOINT_EVERY` commits, in the background
(``wal_autocheckpoint`` is off on these connections): a passive pass while the
writers go on, then a short one with the writers held off on that lock, so the
WAL ends fully copied and the next transaction starts it over. (A passive
checkpoint alone never catches up with writers that commit every few
milliseconds: the WAL then grew without end, 660 MB in 45 s of chat load, and
every page look-up walked its index.) ``journal_size_limit`` truncates the
file when it starts over.

The ``async def`` store functions (``state.outbox``, ``state.repository``,
``state.chat_repository``) run unchanged on a writer through
:class:`InThreadSession`, an ``AsyncSession`` stand-in whose awaits complete at
once; :func:`run_now` drives such a coroutine to its end.

Users: the chat store's group commit (``state.chat_store``) and the
notification delivery worker (``rest.delivery``), each with its own writer.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from bridge.errors import StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")

WAL_SIZE_LIMIT = 16 * 1024 * 1024
"""Bytes a WAL file is truncated to when SQLite starts it over."""


class AwaitableValue:
    """An already-computed result that can be awaited (no suspension)."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __await__(self) -> Generator[None, None, object]:
        return self.value
        yield  # pragma: no cover - makes this a generator


class InThreadSession:
    """The ``AsyncSession`` calls the repository functions make, answered synchronously.

    The store's own connection runs the very same ``async def`` repository
    functions (``state.chat_repository``, ``state.repository.active_subscriptions``,
    ``state.outbox.enqueue``) so that their SQL stays in one place; here
    every awaited call completes at once (an ORM ``Session`` joined to the
    open transaction, or the connection itself), and :func:`run_now` drives
    the coroutine to its end. A function that really suspends (awaits I/O
    of its own) fails loudly with ``StoreError``.
    """

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn
        self._orm: Session | None = None

    @property
    def _session(self) -> Session:
        """An ORM session joined to the open transaction, made on first use."""
        if self._orm is None:
            self._orm = Session(
                bind=self._conn, expire_on_commit=False, join_transaction_mode="rollback_only"
            )
        return self._orm

    def close(self) -> None:
        """Release the ORM session, if one was made (the transaction stays open)."""
        if self._orm is not None:
            self._orm.close()

    def execute(self, *args: Any, **kw: Any) -> AwaitableValue:
        return AwaitableValue(self._session.execute(*args, **kw))

    def scalar(self, *args: Any, **kw: Any) -> AwaitableValue:
        return AwaitableValue(self._session.scalar(*args, **kw))

    def scalars(self, *args: Any, **kw: Any) -> AwaitableValue:
        return AwaitableValue(self._session.scalars(*args, **kw))

    def get(self, *args: Any, **kw: Any) -> AwaitableValue:
        return AwaitableValue(self._session.get(*args, **kw))

    def add(self, obj: object) -> None:
        self._session.add(obj)

    def flush(self) -> AwaitableValue:
        self._session.flush()
        return AwaitableValue(None)

    def connection(self) -> AwaitableValue:
        return AwaitableValue(InThreadConnection(self._conn))

    def get_bind(self) -> sa.Connection:
        return self._conn

    @asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[None]:
        with self._session.begin_nested():
            yield


class InThreadConnection:
    """``AsyncConnection.execute`` over a sync ``Connection`` (see :class:`InThreadSession`)."""

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def execute(self, *args: Any, **kw: Any) -> AwaitableValue:
        return AwaitableValue(self._conn.execute(*args, **kw))


def run_now(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends to its end (see :class:`InThreadSession`)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coro.close()
    raise StoreError("a store query suspended on the SQLite writer")


Step = Callable[[sa.Connection, "InThreadSession"], T]
"""A synchronous unit of database work run by :meth:`SQLiteWriter.call`."""


class SQLiteWriter:
    """A synchronous SQLite write connection, used on the event loop while that cannot block.

    Everything the store asks of the database (a read, or all the pending
    writes plus a read or a commit) is one synchronous step. A step runs on
    the event loop thread when the batch's ``BEGIN IMMEDIATE`` gets the write
    lock at once (busy timeout 0): inside it nothing else can wait (WAL
    readers never do, and the writer lock is ours). When another connection
    holds the write lock, the begin waits on the store's own thread instead,
    so the loop never sleeps in SQLite's busy handler. Checkpoints run on
    that thread too (``wal_autocheckpoint`` is off on this connection).
    """

    CHECKPOINT_EVERY = 200
    """Commits between two WAL checkpoints."""

    SHORT_WARNING = 10
    """Checkpoints in a row that leave frames behind before each warning."""

    def __init__(
        self, url: sa.URL, shared: asyncio.Lock | None = None, *, name: str = "sqlite-writer"
    ) -> None:
        self._shared = shared
        """``state.outbox.writer_lock``: held from a batch's begin to its commit."""
        self._holding = False
        self.engine = sa.create_engine(
            url.set(drivername="sqlite+pysqlite"),
            poolclass=sa.pool.StaticPool,
            connect_args={"check_same_thread": False},
        )
        event.listen(self.engine, "connect", _writer_connection)
        event.listen(self.engine, "begin", _begin_immediate)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sa.Connection | None = None
        self._checkpointer: sqlite3.Connection | None = None
        self._commits = 0
        self._checkpointing: asyncio.Task[None] | None = None
        self.checkpoints = 0
        """Checkpoints that ended with the whole WAL copied into the database."""
        self._short = 0
        """Checkpoints in a row that left frames behind (a reader on an old snapshot)."""
        self.waited = 0
        """Begins that found another writer and waited on the thread."""

    async def call(self, fn: Step[T]) -> T:
        """Run ``fn(connection, session)`` in the open transaction (begun if need be)."""
        conn = self._conn
        if conn is None:
            conn = self._conn = self.engine.connect()
        if not conn.in_transaction():
            if self._shared is not None and not self._holding:
                await self._shared.acquire()  # the process's SQLite writers queue here
                self._holding = True
            try:
                conn.begin()
            except sa.exc.OperationalError as exc:
                if getattr(exc.orig, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY:
                    self._release()
                    raise
                self.waited += 1
                try:
                    await asyncio.get_running_loop().run_in_executor(
                        self._thread, self._begin_waiting
                    )
                except BaseException:
                    self._release()
                    raise
        db = InThreadSession(conn)
        try:
            return fn(conn, db)
        finally:
            db.close()
            if not conn.in_transaction():  # committed or rolled back: let others write
                self._release()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A write transaction of its own: begun, committed (or rolled back), lock released.

        The session is an :class:`InThreadSession` typed as ``AsyncSession``: the
        ``state.outbox`` / ``state.repository`` functions run on it unchanged,
        synchronously. Not for use while a :meth:`call` batch is open.
        """
        if self._shared is None:
            self._shared = asyncio.Lock()
        await self._shared.acquire()  # the transactions of this writer queue here too
        self._holding = True
        try:
            if self.in_transaction:
                raise StoreError("SQLite writer: a transaction is already open")
            await self.call(_nothing)  # begins (on the thread if another process writes)
        except BaseException:
            self._release()
            raise
        conn = self._conn
        assert conn is not None
        session = InThreadSession(conn)
        try:
            yield cast(AsyncSession, session)
            session.close()
            conn.commit()
        except BaseException:
            session.close()
            self.rollback()
            raise
        finally:
            if not conn.in_transaction():
                self._release()
        self.committed()

    def exists(self, sql: str, params: tuple[object, ...]) -> bool:
        """Whether the SELECT ``sql`` finds a row, without beginning a transaction.

        Inside the open batch it sees the batch's writes; outside one it reads
        the committed state in autocommit mode (a WAL read never waits).
        """
        conn = self._conn
        if conn is None:
            conn = self._conn = self.engine.connect()
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cursor = raw.cursor()
        try:
            return cursor.execute(sql, params).fetchone() is not None
        finally:
            cursor.close()

    @property
    def in_transaction(self) -> bool:
        """True while a batch's transaction is open."""
        return self._conn is not None and self._conn.in_transaction()

    def _release(self) -> None:
        if self._holding and self._shared is not None:
            self._holding = False
            self._shared.release()

    def _begin_waiting(self) -> None:
        assert self._conn is not None
        raw = self._conn.connection.dbapi_connection
        assert raw is not None
        raw.execute("PRAGMA busy_timeout=5000")
        try:
            self._conn.begin()
        finally:
            raw.execute("PRAGMA busy_timeout=0")

    def committed(self) -> None:
        """Count a commit; every :attr:`CHECKPOINT_EVERY`, start a WAL checkpoint.

        The checkpoint runs in the background (at most one at a time), on
        the thread and on a connection of its own: the writer's connection may
        begin its next transaction on the loop meanwhile (one sqlite3
        connection must never be used by two threads at once).
        """
        self._commits += 1
        if self._commits % self.CHECKPOINT_EVERY or self._checkpointing is not None:
            return
        self._checkpointing = asyncio.get_running_loop().create_task(
            self._checkpoint_wal(), name="sqlite-checkpoint"
        )

    async def _checkpoint_wal(self) -> None:
        """Copy the WAL into the database so that the next transaction starts it over.

        First a passive pass with the writers going on (it copies nearly
        everything, fsyncs included); then a second one holding the process's
        writer lock, which only has the frames committed meanwhile to copy.
        Ending with the whole WAL copied is what lets SQLite start the WAL over
        at the next ``BEGIN``; a reader still on an older snapshot leaves it
        for the next round. A failed checkpoint is only logged.
        """
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._thread, self._checkpoint)
            if self._shared is None:
                self._shared = asyncio.Lock()
            async with self._shared:
                complete = await loop.run_in_executor(self._thread, self._checkpoint)
        except sqlite3.Error as exc:
            log.warning("x WAL checkpoint failed: %s", exc)
            complete = False
        finally:
            self._checkpointing = None
        if complete:
            self.checkpoints += 1
            self._short = 0
            return
        self._short += 1
        if self._short % self.SHORT_WARNING == 0:
            wal = Path(f"{self.engine.url.database}-wal")
            size = wal.stat().st_size if wal.exists() else 0
            log.warning(
                "x WAL not copied whole by %d checkpoints in a row (a reader holds an old"
                " snapshot?): %s is %.1f MiB and grows until it is",
                self._short,
                wal,
                size / 2**20,
            )

    def _checkpoint(self) -> bool:
        """A passive checkpoint; True when it copied the whole WAL."""
        if self._checkpointer is None:
            path = self.engine.url.database or ""
            self._checkpointer = sqlite3.connect(path, check_same_thread=False)
            self._checkpointer.execute("PRAGMA busy_timeout=0")
        busy, frames, copied = self._checkpointer.execute(
            "PRAGMA wal_checkpoint(PASSIVE)"
        ).fetchone()
        return not busy and frames == copied

    def rollback(self) -> None:
        """Drop the open transaction, if any (a failed batch)."""
        if self._conn is not None and self._conn.in_transaction():
            try:
                self._conn.rollback()
            except sa.exc.SQLAlchemyError:
                log.warning("x SQLite writer rollback failed", exc_info=True)
        self._release()

    async def close(self) -> None:
        """Roll back what is open, close the connection and stop the thread."""
        if self._checkpointing is not None:
            await asyncio.gather(self._checkpointing, return_exceptions=True)
        if self._conn is not None:
            self._conn.rollback()
            self._conn.close()
            self._conn = None
        self._release()
        self.engine.dispose()
        self._thread.shutdown(wait=True)
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None


def _nothing(_conn: sa.Connection, _db: InThreadSession) -> None:
    return None


def _writer_connection(dbapi_conn: Any, _record: object) -> None:
    dbapi_conn.isolation_level = None  # transactions are begun by _begin_immediate
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=0")  # never sleep on the event loop (see SQLiteWriter)
    cur.execute("PRAGMA wal_autocheckpoint=0")
    cur.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
    cur.close()


def _begin_immediate(conn: sa.Connection) -> None:
    """Begin on the DBAPI connection itself (SQLAlchemy's statement path costs more than
    the statement); an error is raised as SQLAlchemy would wrap it."""
    raw = conn.connection.dbapi_connection
    assert raw is not None
    try:
        raw.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise sa.exc.DBAPIError.instance("BEGIN IMMEDIATE", None, exc, sqlite3.Error) from exc
