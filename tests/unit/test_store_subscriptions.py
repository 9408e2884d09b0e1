"""Repository contract for chat subscriptions, run against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

import state.models  # noqa: F401  (registers the ORM tables)
from bridge.ids import UserUri
from bridge.subscriptions import NewSubscription, NotificationFormat, grant_duration
from state import repository as repo
from state.db import Base, Database

ALICE = UserUri("tel:+15551230001")
BOB = UserUri("sip:bob@ims.test")
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def new(user: UserUri = ALICE, **kw) -> NewSubscription:
    kw.setdefault("notify_url", "https://app.example/cb")
    return NewSubscription(user=user, **kw)


async def test_create_get_list_delete(db: Database) -> None:
    async with db.sessions.begin() as s:
        sub, created = await repo.create_subscription(
            s, new(callback_data="abc", client_correlator="c1", duration=60), T0
        )
    assert created and sub.id.startswith("sub-")
    assert sub.expires_at == T0 + timedelta(seconds=60) and sub.created_at == T0
    assert (sub.confirmed_chat_supported, sub.adhoc_chat_supported) == (True, False)
    assert sub.notification_format is NotificationFormat.JSON
    async with db.sessions.begin() as s:
        got = await repo.get_subscription(s, ALICE, sub.id, T0)
        assert got == sub
        assert await repo.get_subscription(s, BOB, sub.id, T0) is None  # another user's
        assert await repo.list_subscriptions(s, ALICE, T0) == [sub]
        assert await repo.list_subscriptions(s, BOB, T0) == []
    async with db.sessions.begin() as s:
        assert not await repo.delete_subscription(s, BOB, sub.id, T0)
        assert await repo.delete_subscription(s, ALICE, sub.id, T0)
        assert not await repo.delete_subscription(s, ALICE, sub.id, T0)
        assert await repo.get_subscription(s, ALICE, sub.id, T0) is None


async def test_flags_and_unlimited(db: Database) -> None:
    async with db.sessions.begin() as s:
        sub, _ = await repo.create_subscription(
            s, new(confirmed_chat_supported=False, adhoc_chat_supported=True), T0
        )
    async with db.sessions.begin() as s:
        got = await repo.get_subscription(s, ALICE, sub.id, T0 + timedelta(days=3650))
    assert got is not None and got.expires_at is None and got.duration == 0
    assert (got.confirmed_chat_supported, got.adhoc_chat_supported) == (False, True)
    assert got.is_active(T0 + timedelta(days=3650)) and got.remaining(T0) == 0


async def test_correlator_idempotency(db: Database) -> None:
    async with db.sessions.begin() as s:
        first, created = await repo.create_subscription(s, new(client_correlator="x"), T0)
    async with db.sessions.begin() as s:
        again, created_again = await repo.create_subscription(
            s, new(client_correlator="x", notify_url="https://other/cb"), T0
        )
        other_user, created_other = await repo.create_subscription(
            s, new(BOB, client_correlator="x"), T0
        )
    assert created and not created_again and again == first
    assert created_other and other_user.id != first.id
    async with db.sessions.begin() as s:
        assert len(await repo.list_subscriptions(s, ALICE, T0)) == 1
        assert await repo.find_subscription_by_correlator(s, ALICE, "x", T0) == first


async def test_concurrent_correlator_creates_one(db: Database) -> None:
    async def create() -> tuple[str, bool]:
        async with db.sessions.begin() as s:
            sub, created = await repo.create_subscription(s, new(client_correlator="race"), T0)
            return sub.id, created

    results = await asyncio.gather(*(create() for _ in range(4)), return_exceptions=True)
    ok = [r for r in results if isinstance(r, tuple)]
    assert ok, results
    assert len({sub_id for sub_id, _ in ok}) == 1
    assert sum(created for _, created in ok) == 1
    async with db.sessions.begin() as s:
        assert len(await repo.list_subscriptions(s, ALICE, T0)) == 1


async def test_expiry(db: Database) -> None:
    async with db.sessions.begin() as s:
        short, _ = await repo.create_subscription(s, new(duration=10, client_correlator="k"), T0)
        long, _ = await repo.create_subscription(s, new(duration=100), T0)
    later = T0 + timedelta(seconds=10)
    assert short.remaining(T0 + timedelta(seconds=2.5)) == 8
    async with db.sessions.begin() as s:
        assert await repo.get_subscription(s, ALICE, short.id, later) is None
        assert [x.id for x in await repo.active_subscriptions(s, ALICE, later)] == [long.id]
        assert not await repo.delete_subscription(s, ALICE, short.id, later)
        # an expired correlator is free again
        fresh, created = await repo.create_subscription(s, new(client_correlator="k"), later)
        assert created and fresh.id != short.id
    async with db.sessions.begin() as s:
        assert await repo.delete_expired_subscriptions(s, T0 + timedelta(seconds=100)) == 1
        assert [x.id for x in await repo.list_subscriptions(s, ALICE, T0)] == [fresh.id]


async def test_delete_by_notify_url(db: Database) -> None:
    url = "http://127.0.0.1:8080/notificationchannel/v1/tel%3A%2B15551230001/channels/c1/cb"
    async with db.sessions.begin() as s:
        await repo.create_subscription(s, new(notify_url=url), T0)
        await repo.create_subscription(s, new(BOB, notify_url=url), T0)
        keep, _ = await repo.create_subscription(s, new(), T0)
    async with db.sessions.begin() as s:
        assert await repo.delete_subscriptions_by_notify_url(s, url) == 2
        assert await repo.delete_subscriptions_by_notify_url(s, url) == 0
        assert await repo.list_subscriptions(s, ALICE, T0) == [keep]


async def test_survives_restart(db: Database) -> None:
    async with db.sessions.begin() as s:
        sub, _ = await repo.create_subscription(s, new(duration=30, callback_data="d"), T0)
    again = Database(db.url.render_as_string(hide_password=False))
    try:
        assert await again.migrate() >= 1
        async with again.sessions.begin() as s:
            assert await repo.get_subscription(s, ALICE, sub.id, T0) == sub
    finally:
        await again.close()


async def test_migrated_schema_matches_models(db: Database) -> None:
    def inspect(conn: sa.Connection) -> dict[str, set[str]]:
        insp = sa.inspect(conn)
        return {t: {c["name"] for c in insp.get_columns(t)} for t in insp.get_table_names()}

    async with db.engine.connect() as conn:
        tables = await conn.run_sync(inspect)
    for table in Base.metadata.sorted_tables:
        assert table.name in tables, table.name
        assert tables[table.name] == {c.name for c in table.columns}, table.name


@pytest.mark.parametrize(
    ("requested", "default", "maximum", "granted"),
    [
        (None, 0, 0, 0),
        (None, 300, 0, 300),
        (0, 300, 0, 300),
        (900, 300, 0, 900),
        (900, 0, 600, 600),
        (None, 0, 600, 600),
        (100, 0, 600, 100),
    ],
)
def test_grant_duration(requested, default, maximum, granted) -> None:
    assert grant_duration(requested, default, maximum) == granted


def test_grant_duration_rejects_negative() -> None:
    with pytest.raises(ValueError):
        grant_duration(-1, 0, 0)
