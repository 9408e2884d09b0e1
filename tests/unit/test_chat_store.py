"""The chat store: migration 20 equals the ORM models, repository round trips, retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from bridge.chat.model import (
    ChatSession,
    DialogIds,
    Direction,
    Disposition,
    LegId,
    RestStatus,
    SessionKind,
    StoredMessage,
)
from bridge.ids import ChatSessionId, MessageId, UserUri
from state import chat_repository as repo
from state.chat_models import ChatMessageRow, ChatSessionRow
from state.db import Base, Database

A = UserUri("tel:+15551230001")
B = UserUri("tel:+15551230002")
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
async def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'store.db'}")
    await database.migrate()
    yield database
    await database.close()


def session(sid: str = "s-1", **kw) -> ChatSession:
    values: dict[str, Any] = dict(
        id=ChatSessionId(sid),
        user=A,
        peer=B,
        kind=SessionKind.CONFIRMED,
        direction=Direction.OUTGOING,
        state="inviting",
        leg=LegId("leg-" + sid),
        subject="Hi",
        originator_name="Alice",
        t_participant_name=None,
        client_correlator=None,
        created_at=T0,
        updated_at=T0,
    )
    values.update(kw)
    return ChatSession(**values)


def message(mid: str = "m1", **kw) -> StoredMessage:
    values: dict[str, Any] = dict(
        id=MessageId(mid),
        user=A,
        peer=B,
        direction=Direction.OUTGOING,
        session_id=ChatSessionId("s-1"),
        rest_session="s-1",
        text="hello",
        content_type="text/plain",
        reports=frozenset({RestStatus.DELIVERED, RestStatus.SENT}),
        dispositions=frozenset({Disposition.POSITIVE_DELIVERY}),
        status="queued",
        date_time=T0,
        created_at=T0,
        report_route=("sip:rr@ims.test",),
    )
    values.update(kw)
    return StoredMessage(**values)


async def test_migrated_schema_matches_models(db: Database) -> None:
    def inspect(conn: sa.Connection) -> dict[str, set[str]]:
        insp = sa.inspect(conn)
        return {t: {c["name"] for c in insp.get_columns(t)} for t in insp.get_table_names()}

    async with db.engine.connect() as conn:
        tables = await conn.run_sync(inspect)
    for model in (ChatSessionRow, ChatMessageRow):
        table = Base.metadata.tables[model.__tablename__]
        assert tables[table.name] == {c.name for c in table.columns}


async def test_session_round_trip(db: Database) -> None:
    ids = DialogIds(call_id="c", local_tag="l", remote_tag="r", contribution_id="k")
    cs = session(ids=ids, client_correlator="corr")
    async with db.sessions.begin() as s:
        await repo.insert_session(s, cs)
    async with db.sessions.begin() as s:
        assert await repo.get_session(s, A, "s-1") == cs
        assert await repo.get_session(s, B, "s-1") is None
        assert await repo.session_by_leg(s, "leg-s-1") == cs
        assert await repo.session_by_correlator(s, A, "corr") == cs
        ended = session(ids=ids, client_correlator="corr", state="ended", ended_at=T0)
        await repo.save_session(s, ended)
    async with db.sessions.begin() as s:
        assert await repo.session_by_id(s, "s-1") == ended
        assert await repo.sessions_in_states(s, SessionKind.CONFIRMED, ["inviting"]) == []
    with pytest.raises(IntegrityError):
        async with db.sessions.begin() as s:
            await repo.insert_session(s, session("s-2", leg=LegId("leg-s-1")))


async def test_live_adhoc_session_picks_newest(db: Database) -> None:
    older = session("a-1", kind=SessionKind.ADHOC, state="connected")
    newer = session(
        "a-2", kind=SessionKind.ADHOC, state="connecting", created_at=T0 + timedelta(seconds=1)
    )
    closed = session("a-3", kind=SessionKind.ADHOC, state="closed")
    async with db.sessions.begin() as s:
        for cs in (older, newer, closed):
            await repo.insert_session(s, cs)
    async with db.sessions.begin() as s:
        live = await repo.live_adhoc_session(s, A, B, ["connecting", "connected"])
        assert live == newer
        assert await repo.live_adhoc_session(s, A, B, ["connected"]) == older
        assert await repo.live_adhoc_session(s, B, A, ["connected"]) is None


async def test_message_round_trip_and_dedupe(db: Database) -> None:
    async with db.sessions.begin() as s:
        await repo.insert_session(s, session())
        first = await repo.insert_message(s, message(), expires_at=T0 + timedelta(days=1))
        second = await repo.insert_message(
            s, message("m2", client_correlator="k"), expires_at=T0 + timedelta(days=1)
        )
        received = await repo.insert_message(
            s,
            message("m1", direction=Direction.INCOMING, status="received"),
            expires_at=T0 + timedelta(days=1),
        )
    assert first.seq < second.seq
    async with db.sessions.begin() as s:
        assert await repo.get_message(s, A, "m1", Direction.OUTGOING) == first
        found = await repo.find_messages(s, A, "m1")
        assert [m.direction for m in found] == [Direction.OUTGOING, Direction.INCOMING]
        assert found[1] == received
        assert await repo.message_by_correlator(s, A, "k") == second
        queued = await repo.session_messages(s, "s-1", Direction.OUTGOING, ["queued"])
        assert [m.id for m in queued] == ["m1", "m2"]
        moved = await repo.set_message_status(s, first, "sending", now=T0, detach=True)
        assert moved.session_id is None and moved.status == "sending"
        detached = await repo.detached_messages(s, A, B, "s-1", "sending")
        assert detached == [moved]
    with pytest.raises(IntegrityError):
        async with db.sessions.begin() as s:
            await repo.insert_message(s, message("m1"), expires_at=T0)


async def test_purge(db: Database) -> None:
    async with db.sessions.begin() as s:
        await repo.insert_session(s, session(state="ended", ended_at=T0))
        await repo.insert_session(s, session("s-2"))
        await repo.insert_message(s, message(), expires_at=T0)
        await repo.insert_message(s, message("m2"), expires_at=T0 + timedelta(days=2))
    async with db.sessions.begin() as s:
        gone = await repo.purge_expired(s, now=T0 + timedelta(days=1), ended_before=T0)
    assert gone == 2
    async with db.sessions.begin() as s:
        assert await repo.session_by_id(s, "s-1") is None
        assert await repo.session_by_id(s, "s-2") is not None
        kept = await repo.get_message(s, A, "m2", Direction.OUTGOING)
        assert kept is not None and kept.session_id is None  # its session was purged
