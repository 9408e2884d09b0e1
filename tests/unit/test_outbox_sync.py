"""state.outbox.SyncEnqueue: the chat store writer's enqueue equals outbox.enqueue (SQLite)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from bridge.ids import SubscriptionId, UserUri
from bridge.ports import Notification
from state import channels, outbox
from state.db import Database

ALICE = UserUri("tel:+15551230001")
BOB = UserUri("sip:bob@ims.test")
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CB = "http://127.0.0.1:1/cb"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'store.db'}")
    await database.migrate()
    yield database
    await database.close()


@pytest.fixture
def raw(db: Database) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the same file, in autocommit-free default mode."""
    conn = sqlite3.connect(str(db.url.database))
    yield conn
    conn.close()


def new_channel(user: UserUri, lifetime: int = 60) -> channels.NewChannel:
    cid = channels.new_channel_id()
    return channels.NewChannel(
        id=cid,
        user=user,
        channel_type="LongPolling",
        client_correlator=None,
        application_tag=None,
        max_notifications=10,
        lifetime=lifetime,
        callback_url=f"http://bridge.test/notificationchannel/v1/x/channels/{cid}/callback",
    )


def put(
    raw: sqlite3.Connection, url: str, at: datetime, user: UserUri = ALICE, **body: object
) -> Notification:
    writer = outbox.SyncEnqueue(sqlite.dialect())
    n = writer.run(
        raw,
        user=user,
        subscription_id=SubscriptionId("sub-1"),
        notify_url=url,
        root="chatMessageNotification",
        body=body,
        now=at,
    )
    raw.commit()
    return n


async def test_sync_enqueue_stores_what_the_outbox_reads_back(
    db: Database, raw: sqlite3.Connection
) -> None:
    first = put(raw, CB, T0, text="héllo", nested={"a": [1, True, None]})
    second = put(raw, CB, T0 + timedelta(seconds=1), text="two")
    assert first.id < second.id and first.channel_id is None
    async with db.sessions.begin() as s:
        assert await outbox.pending_for(s, "sub-1") == [first, second]


async def test_sync_enqueue_routes_into_a_live_channel_of_the_same_user_only(
    db: Database, raw: sqlite3.Connection
) -> None:
    async with db.sessions.begin() as s:
        ch, _ = await channels.create_channel(s, new_channel(ALICE, lifetime=5), now=T0)
    queued = put(raw, ch.callback_url, T0, seq=1)
    other_user = put(raw, ch.callback_url, T0, user=BOB, seq=2)
    expired = put(raw, ch.callback_url, T0 + timedelta(seconds=6), seq=3)
    assert queued.channel_id == ch.id
    assert other_user.channel_id is None and expired.channel_id is None
    async with db.sessions.begin() as s:
        assert await channels.take_from_channel(s, ch.id, limit=5, now=T0) == [queued]


def test_sync_enqueue_refuses_an_empty_root_and_a_named_dialect(raw: sqlite3.Connection) -> None:
    writer = outbox.SyncEnqueue(sqlite.dialect())
    with pytest.raises(ValueError, match="root"):
        writer.run(
            raw, user=ALICE, subscription_id=SubscriptionId("s"), notify_url=CB, root="", body={}
        )
    with pytest.raises(ValueError, match="qmark"):
        outbox.SyncEnqueue(sa.create_engine("postgresql+asyncpg://x/y").dialect)


async def test_sync_enqueue_hands_out_the_document_it_stored_as_json(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'enc.db'}")
    await database.migrate()
    await database.close()
    raw = sqlite3.connect(tmp_path / "enc.db", isolation_level=None)
    try:
        raw.execute("BEGIN")
        body = {"text": "h\u00e9llo", "n": [1, 2], "callbackData": None}
        n = outbox.SyncEnqueue(sqlite.dialect()).run(
            raw,
            user=UserUri("tel:+1"),
            subscription_id=SubscriptionId("s1"),
            notify_url="http://127.0.0.1:1/cb",
            root="chatMessageNotification",
            body=body,
        )
        raw.execute("COMMIT")
        assert n.encoded == json.dumps(n.document()).encode()
        (stored,) = raw.execute("SELECT body FROM notification_outbox").fetchone()
        assert json.loads(stored) == body
    finally:
        raw.close()
