"""The migrated store the repository contract tests run against (pytest plugin).

``db`` is parametrized: every test that asks for it runs once on a fresh SQLite file
and once (``integration``) on a throwaway PostgreSQL database (``postgres_database``),
so the state/ repositories are held to one contract on both engines. A test module
that only needs SQLite defines its own ``db`` fixture, which overrides this one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from state.db import Database
from tests.pg_fixture import create_database, drop_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """Yield a migrated Database on SQLite or PostgreSQL; close (and drop) it after."""
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'store.db'}")
        await database.migrate()
        yield database
        await database.close()
        return
    async with postgres_database(request.getfixturevalue("postgres_server")) as database:
        yield database


@asynccontextmanager
async def postgres_database(server_url: str) -> AsyncIterator[Database]:
    """A fresh, migrated database on the ``postgres_server``; closed and dropped after."""
    url, name = await create_database(server_url)
    database = Database(url)
    try:
        await database.migrate()
        yield database
    finally:
        await database.close()
        await drop_database(server_url, name)
