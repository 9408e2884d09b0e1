"""Several instances on one PostgreSQL database (issue 10; docs/several-instances.md).

* Instances starting together on an empty database migrate it once.
"""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

import state.models  # noqa: F401  (registers the ORM tables)
from state.db import Base, Database, discover_migrations
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
