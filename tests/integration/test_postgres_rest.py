"""The REST core on PostgreSQL: migrations from an empty database, subscriptions over HTTP,
concurrent correlator replays and restart survival (the store contract suite in
tests/unit/test_store_subscriptions.py also runs here, parametrized)."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

import state.models  # noqa: F401  (registers the ORM tables)
from bridge.config import Settings
from rest import app as rest_app
from state.db import Base, Database, discover_migrations
from tests.pg_fixture import create_database, drop_database

pytestmark = pytest.mark.integration

BASE = "/chat/v1/tel%3A%2B15551230001/subscriptions"
BODY = {
    "chatNotificationSubscription": {
        "callbackReference": {"notifyURL": "http://app.test/cb", "callbackData": "pg"},
        "clientCorrelator": "pg-1",
        "duration": 600,
    }
}


@pytest.fixture
async def pg_url(postgres_server):
    url, name = await create_database(postgres_server)
    yield url
    await drop_database(postgres_server, name)


async def test_migrations_from_empty_database(pg_url) -> None:
    db = Database(pg_url)
    try:
        version = await db.migrate()
        assert version == max(m.version for m in discover_migrations())
        assert await db.migrate() == version

        def columns(conn: sa.Connection) -> dict[str, set[str]]:
            insp = sa.inspect(conn)
            return {t: {c["name"] for c in insp.get_columns(t)} for t in insp.get_table_names()}

        async with db.engine.connect() as conn:
            found = await conn.run_sync(columns)
        assert found["schema_version"] == {"version", "name"}
        for table in Base.metadata.sorted_tables:
            assert found.get(table.name) == {c.name for c in table.columns}, table.name
    finally:
        await db.close()


async def test_subscriptions_over_http_survive_restart(pg_url, aiohttp_client) -> None:
    settings = Settings(server_root="http://api.test")
    db = Database(pg_url)
    await db.migrate()
    try:
        client = await aiohttp_client(rest_app.make_app(settings, db))
        replies = await asyncio.gather(*(client.post(BASE, json=BODY) for _ in range(5)))
        statuses = sorted(r.status for r in replies)
        assert statuses == [200, 200, 200, 200, 201]
        urls = {(await r.json())["chatNotificationSubscription"]["resourceURL"] for r in replies}
        assert len(urls) == 1
        (url,) = urls
        await client.close()
    finally:
        await db.close()

    db2 = Database(pg_url)
    await db2.migrate()
    try:
        client2 = await aiohttp_client(rest_app.make_app(settings, db2))
        resp = await client2.get(url.removeprefix("http://api.test"))
        assert resp.status == 200
        sub = (await resp.json())["chatNotificationSubscription"]
        assert sub["callbackReference"]["callbackData"] == "pg"
        assert 0 < sub["duration"] <= 600
        assert (await client2.delete(url.removeprefix("http://api.test"))).status == 204
        listed = await (await client2.get(BASE)).json()
        assert listed["chatSubscriptionList"]["chatNotificationSubscription"] == []
        await client2.close()
    finally:
        await db2.close()
