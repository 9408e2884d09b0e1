"""Engine, ORM base and the numbered-migration runner.

SQLite (aiosqlite, WAL) is the embedded default; ``postgresql+asyncpg://`` works
for several instances. Migrations are modules ``state/migrations/mNNNN_<name>.py``
exposing ``VERSION: int`` and ``upgrade(conn: sqlalchemy.Connection) -> None``;
they are applied in order, each in its own transaction, and recorded in
``schema_version``. Migrations use Core DDL of their own (never the ORM models,
which move on), so an empty database always reaches the current schema.

Several instances on one PostgreSQL database (docs/several-instances.md) may
start at the same moment on an empty or older schema: the whole run holds a
session-level advisory lock (:data:`MIGRATION_LOCK`, ``pg_advisory_lock``) on a
connection of its own, so one instance migrates and the others, once they get
the lock, find every version recorded and do nothing. SQLite (one process per
file) takes no lock.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import ModuleType

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from bridge.errors import StoreError

log = logging.getLogger(__name__)


def aware(value: datetime) -> datetime:
    """``value`` with UTC attached when the database gave it back naive (SQLite does)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Declarative base of every ORM model."""


@dataclass(frozen=True)
class Migration:
    """One numbered schema step."""

    version: int
    name: str
    upgrade: Callable[[sa.Connection], None]


def _normalize_url(url: str) -> URL:
    u = make_url(url)
    if u.drivername in {"sqlite", "sqlite+pysqlite"}:
        u = u.set(drivername="sqlite+aiosqlite")
    elif u.drivername in {"postgresql", "postgres", "postgresql+psycopg2"}:
        u = u.set(drivername="postgresql+asyncpg")
    return u


def discover_migrations() -> list[Migration]:
    """Every migration module of ``state.migrations``, sorted by version."""
    from state import migrations as pkg

    found: list[Migration] = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("m"):
            continue
        mod: ModuleType = importlib.import_module(f"{pkg.__name__}.{info.name}")
        found.append(Migration(int(mod.VERSION), info.name, mod.upgrade))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise StoreError(f"duplicate migration versions: {versions}")
    return found


ADVISORY_NAMESPACE = 0x63627264
"""First key of every PostgreSQL advisory lock of the bridge (``'cbrd'``; the two-int form,
``pg_advisory_lock(int, int)``, so the second key says which lock)."""
MIGRATION_LOCK = (ADVISORY_NAMESPACE, 1)
"""The advisory lock held around a migration run (module docstring)."""
INSTANCE_NAMESPACE = 0x63627269
"""First key of the per-instance liveness locks (``'cbri'``; ``state.instances``)."""


_VERSION_TABLE = sa.Table(
    "schema_version",
    sa.MetaData(),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
)


class Database:
    """Owns the async engine and the session factory."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = _normalize_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs: dict[str, object] = {"echo": echo}
        if not self.is_sqlite:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )

    async def migrate(self) -> int:
        """Apply pending migrations; return the schema version reached.

        On PostgreSQL the run holds :data:`MIGRATION_LOCK` (module docstring).
        """
        if self.is_sqlite:
            return await self._migrate()
        async with self.engine.connect() as conn:
            key = {"a": MIGRATION_LOCK[0], "b": MIGRATION_LOCK[1]}
            await conn.execute(sa.text("SELECT pg_advisory_lock(:a, :b)"), key)
            await conn.commit()
            try:
                return await self._migrate()
            finally:
                try:
                    await conn.execute(sa.text("SELECT pg_advisory_unlock(:a, :b)"), key)
                    await conn.commit()
                except Exception:  # the lock must not go back to the pool with the connection
                    await conn.invalidate()
                    raise

    async def _migrate(self) -> int:
        migrations = discover_migrations()
        async with self.engine.begin() as conn:
            await conn.run_sync(lambda c: _VERSION_TABLE.create(c, checkfirst=True))
            rows = await conn.execute(sa.select(_VERSION_TABLE.c.version))
            done = {r[0] for r in rows}
        current = max(done, default=0)
        for m in migrations:
            if m.version in done:
                continue
            async with self.engine.begin() as conn:
                await conn.run_sync(m.upgrade)
                await conn.execute(_VERSION_TABLE.insert().values(version=m.version, name=m.name))
            log.info("- schema migrated to %d (%s)", m.version, m.name)
            current = m.version
        return current

    async def ping(self) -> bool:
        """True if the store answers a trivial query."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
            return True
        except Exception:  # any driver error means "not reachable"
            log.warning("x store ping failed", exc_info=True)
            return False

    async def close(self) -> None:
        """Dispose of every pooled connection."""
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()
