"""Several instances on one PostgreSQL database (issue 10; docs/several-instances.md).

* Instances starting together on an empty database migrate it once.
* Liveness: a peer is dead exactly when its advisory lock is free.
"""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

import state.models  # noqa: F401  (registers the ORM tables)
from bridge.errors import StoreError
from state import instances
from state.db import Base, Database, discover_migrations
from state.instances import InstanceRow, Instances
from tests.pg_fixture import create_database, drop_database

pytestmark = pytest.mark.integration


@pytest.fixture
async def pg_url(postgres_server):
    url, name = await create_database(postgres_server)
    yield url
    await drop_database(postgres_server, name)


def _columns(conn: sa.Connection) -> dict[str, set[str]]:
    insp = sa.inspect(conn)
    return {t: {c["name"] for c in insp.get_columns(t)} for t in insp.get_table_names()}


async def test_instances_starting_together_migrate_once(pg_url: str) -> None:
    """Six engines (six connections, as six instances would have) migrate an empty database
    at the same moment: one schema, each version recorded once, no error."""
    top = max(m.version for m in discover_migrations())
    databases = [Database(pg_url) for _ in range(6)]
    try:
        versions = await asyncio.gather(*(db.migrate() for db in databases))
        assert versions == [top] * 6
        async with databases[0].engine.connect() as conn:
            found = await conn.run_sync(_columns)
            recorded = (await conn.execute(sa.text("SELECT version FROM schema_version"))).all()
            held = await conn.scalar(
                sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
            )
        assert sorted(v for (v,) in recorded) == [m.version for m in discover_migrations()]
        for table in Base.metadata.sorted_tables:
            assert found.get(table.name) == {c.name for c in table.columns}, table.name
        assert held == 0  # every migration lock was given back
    finally:
        await asyncio.gather(*(db.close() for db in databases))


# --- identity and liveness (state.instances) ------------------------------------------


async def test_a_peer_is_dead_exactly_when_its_lock_is_free(pg_url: str) -> None:
    """Two instances: each sees the other live; once one's connection ends (as kill -9
    ends it), the other can take its lock, holds it while recovering, then frees it."""
    db1, db2, db3 = Database(pg_url), Database(pg_url), Database(pg_url)
    await db1.migrate()
    one, two = Instances(db1), Instances(db2)
    await one.start()
    await two.start()
    try:
        assert one.id != two.id
        assert await one.recoverable() == frozenset({one.id})
        assert await two.recoverable() == frozenset({two.id})
        gone = two.id
        await two.close()  # its lock connection ends, as with kill -9
        assert await one.recoverable() == frozenset({one.id, gone})
        three = Instances(db3)
        await three.start()
        try:  # one holds the dead one's lock while recovering it: nobody else takes it
            assert await three.recoverable() == frozenset({three.id})
            await one.release_dead()
            async with db1.sessions() as s:
                ids = set(await s.scalars(sa.select(InstanceRow.id)))
            assert ids == {one.id, three.id}  # the dead one's row is gone once recovered
        finally:
            await three.close()
    finally:
        await one.close()
        await asyncio.gather(db1.close(), db2.close(), db3.close())


async def test_owners_of_live_rows_are_tested_too(pg_url: str) -> None:
    """A row whose owner has no ``instances`` row (the legacy ``''``, or a row deleted by
    hand) is recovered: its lock is free."""
    db = Database(pg_url)
    await db.migrate()
    async with db.sessions.begin() as s:
        await s.execute(
            sa.text(
                "INSERT INTO focus_conferences (uri, creator_uri, created_at, owner)"
                " VALUES ('sip:conf-1@x', 'sip:a@x', now(), 'ghost'),"
                " ('sip:conf-2@x', 'sip:a@x', now(), '')"
            )
        )
    me = Instances(db, "me")
    await me.start()
    try:
        assert await me.recoverable() == frozenset({"me", "ghost", ""})
    finally:
        await me.close()
        await db.close()


async def test_a_configured_id_in_use_refuses_to_start(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(instances, "LOCK_WAIT", 0.6)
    db1, db2 = Database(pg_url), Database(pg_url)
    await db1.migrate()
    first = Instances(db1, "node-a")
    await first.start()
    try:
        with pytest.raises(StoreError, match="held by a live instance"):
            await Instances(db2, "node-a").start()
    finally:
        await first.close()
        await asyncio.gather(db1.close(), db2.close())
