"""Group participants in the chat store (migration 27): repository, both transactions, purge.

``db`` comes from ``tests.db_fixtures``: every test runs on a SQLite file (the
group-commit store) and, as ``integration``, on PostgreSQL (the direct store).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from bridge.chat.model import (
    ChatSession,
    Direction,
    LegId,
    Participant,
    ParticipantStatus,
    SessionKind,
)
from bridge.ids import ChatSessionId, UserUri
from state import chat_repository as repo
from state.chat_models import ChatParticipantRow
from state.chat_store import SQLChatStore
from state.db import Base, Database, discover_migrations

A = UserUri("tel:+15551230001")
B = UserUri("tel:+15551230002")
C = UserUri("sip:carol@ims.test")
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
P = ParticipantStatus


def group(sid: str = "g-1", **kw: object) -> ChatSession:
    values: dict[str, object] = dict(
        id=ChatSessionId(sid),
        user=A,
        peer=UserUri("sip:conference-factory@ims.test"),
        kind=SessionKind.GROUP,
        direction=Direction.OUTGOING,
        state="joining",
        leg=LegId("leg-" + sid),
        subject="Trip",
        originator_name=None,
        t_participant_name=None,
        client_correlator=None,
        created_at=T0,
        updated_at=T0,
    )
    values.update(kw)
    return ChatSession(**values)  # type: ignore[arg-type]


def test_migration_27_exists() -> None:
    versions = [m.version for m in discover_migrations()]
    assert 27 in versions and versions == sorted(versions)


async def test_migrated_table_matches_model(db: Database) -> None:
    def inspect(conn: sa.Connection) -> set[str]:
        return {c["name"] for c in sa.inspect(conn).get_columns("chat_participants")}

    async with db.engine.connect() as conn:
        columns = await conn.run_sync(inspect)
    table = Base.metadata.tables[ChatParticipantRow.__tablename__]
    assert columns == {c.name for c in table.columns}


async def test_repository_upsert_and_order(db: Database) -> None:
    async with db.sessions.begin() as s:
        await repo.insert_session(s, group())
        await repo.save_participants(
            s,
            "g-1",
            [
                Participant(C, P.INVITED, "Carol"),
                Participant(A, P.CONNECTED, "Alice", is_originator=True),
                Participant(B, P.INVITED),
            ],
            T0,
        )
    async with db.sessions.begin() as s:
        await repo.save_participants(s, "g-1", [Participant(B, P.DECLINED, "Bob")], T0)
        assert await repo.participants(s, "g-1") == [
            Participant(A, P.CONNECTED, "Alice", is_originator=True),
            Participant(C, P.INVITED, "Carol"),
            Participant(B, P.DECLINED, "Bob"),
        ][:1] + sorted(
            [Participant(C, P.INVITED, "Carol"), Participant(B, P.DECLINED, "Bob")],
            key=lambda p: p.address,
        )
        assert await repo.participants(s, "g-2") == []


async def test_store_transaction_reads_its_own_writes_and_commits(db: Database) -> None:
    store = SQLChatStore(db)
    try:
        async with store.transaction() as tx:
            await tx.insert_session(group())
            await tx.save_participants("g-1", [Participant(B, P.INVITED, "Bob")], T0)
            assert await tx.participants("g-1") == [Participant(B, P.INVITED, "Bob")]
            await tx.save_participants(
                "g-1", [Participant(B, P.CONNECTED, "Bob"), Participant(A, P.CONNECTED)], T0
            )
            assert [p.status for p in await tx.participants("g-1")] == [P.CONNECTED] * 2
        async with store.transaction() as tx:
            assert await tx.participants("g-1") == [
                Participant(A, P.CONNECTED),
                Participant(B, P.CONNECTED, "Bob"),
            ]
            await tx.save_participants("g-1", [Participant(B, P.DISCONNECTED, "Bob")], T0)
        async with store.transaction() as tx:
            assert (await tx.participants("g-1"))[1].status is P.DISCONNECTED
    finally:
        await store.close()
    async with db.sessions.begin() as s:  # what reached the database
        assert [p.address for p in await repo.participants(s, "g-1")] == [A, B]


async def test_purge_drops_the_participants_of_ended_groups(db: Database) -> None:
    async with db.sessions.begin() as s:
        await repo.insert_session(s, group(state="left", ended_at=T0))
        await repo.insert_session(s, group("g-2", leg=LegId("leg-g-2")))
        await repo.save_participants(s, "g-1", [Participant(B, P.CONNECTED)], T0)
        await repo.save_participants(s, "g-2", [Participant(B, P.CONNECTED)], T0)
    async with db.sessions.begin() as s:
        await repo.purge_expired(s, now=T0, ended_before=T0 + timedelta(seconds=1))
    async with db.sessions.begin() as s:
        assert await repo.participants(s, "g-1") == []
        assert await repo.participants(s, "g-2") == [Participant(B, P.CONNECTED)]
