"""Migration 22: a session's dialog state survives the store, on every store path.

The grouped SQLite store writes sessions with its own raw statements and loads
live ones at open (a restart); the direct store (in-memory SQLite, PostgreSQL)
goes through the repository functions. Both must hand back the ``DialogIds``
they were given, route set and CSeq included, and old rows (written before
schema 22) must read back with an empty dialog state.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from bridge.chat.model import ChatSession, DialogIds, Direction, LegId, SessionKind
from bridge.ids import ChatSessionId, MessageId, SubscriptionId, UserUri
from state import chat_repository as repo
from state import outbox
from state.chat_backlog import OutboxBacklog
from state.chat_store import SQLChatStore
from state.db import Database, discover_migrations

A = UserUri("tel:+15551230001")
B = UserUri("tel:+15551230002")
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
IDS = DialogIds(
    call_id="c1@bridge",
    local_tag="lt",
    remote_tag="rt",
    contribution_id="k",
    conversation_id="v",
    msrp_local_uri="msrp://127.0.0.1:1/s;tcp",
    msrp_remote_path="msrp://127.0.0.1:2/p;tcp",
    local_uri='"Alice" <tel:+15551230001>;tag=lt',
    remote_uri="<tel:+15551230002>;tag=rt",
    remote_target="sip:+15551230002@127.0.0.1:5070;transport=tcp",
    route_set=("<sip:127.0.0.1:5060;transport=tcp;r2=on;lr;ftag=lt>", "<sip:127.0.0.1;r2=on;lr>"),
    local_cseq=3,
    uac=True,
)


def session(sid: str = "s-1", ids: DialogIds = IDS, state: str = "connected") -> ChatSession:
    return ChatSession(
        id=ChatSessionId(sid),
        user=A,
        peer=B,
        kind=SessionKind.CONFIRMED,
        direction=Direction.OUTGOING,
        state=state,
        leg=LegId("leg-" + sid),
        subject=None,
        originator_name=None,
        t_participant_name=None,
        client_correlator=None,
        created_at=T0,
        updated_at=T0,
        ids=ids,
    )


def test_migration_22_is_the_latest_chat_one() -> None:
    versions = [m.version for m in discover_migrations()]
    assert 22 in versions and versions == sorted(versions)


async def test_grouped_store_keeps_dialog_state_across_a_restart(tmp_path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'chat.db'}")
    await db.migrate()
    store = SQLChatStore(db)
    try:
        assert store.grouped
        async with store.transaction() as tx:
            await tx.insert_session(session("s-1"))
            await tx.insert_session(session("s-2", ids=DialogIds(call_id="c2")))
        async with store.transaction() as tx:
            await tx.save_session(replace(session("s-1"), ids=replace(IDS, local_cseq=9)))
        await store.close()
        again = SQLChatStore(db)  # a restart: live sessions are loaded from the file
        try:
            async with again.transaction() as tx:
                got = await tx.session_by_id("s-1")
                assert got is not None and got.ids == replace(IDS, local_cseq=9)
                empty = await tx.session_by_id("s-2")
                assert empty is not None and empty.ids == DialogIds(call_id="c2")
                assert empty.ids.route_set == () and not empty.ids.can_bye
        finally:
            await again.close()
    finally:
        await db.close()


async def test_direct_repository_round_trip_and_rows_from_before_schema_22(db: Database) -> None:
    # ``db`` (tests.db_fixtures): a SQLite file, and PostgreSQL with the integration tests
    async with db.sessions.begin() as s:
        await repo.insert_session(s, session("s-1"))
        await repo.insert_session(s, session("s-old", ids=DialogIds(call_id="old")))
        # what a row of schema 21 looks like once migrated: the new columns NULL
        await s.execute(
            sa.text(
                "UPDATE chat_sessions SET local_uri = NULL, remote_uri = NULL,"
                " remote_target = NULL, route_set = NULL, local_cseq = NULL,"
                " dialog_uac = NULL WHERE id = 's-old'"
            )
        )
    async with db.sessions() as s:
        assert await repo.session_by_id(s, "s-1") == session("s-1")
        old = await repo.session_by_id(s, "s-old")
    assert old is not None and old.ids == DialogIds(call_id="old")
    store = SQLChatStore(db)  # the direct store on this engine keeps the same contract
    try:
        async with store.transaction() as tx:
            await tx.save_session(replace(session("s-1"), ids=replace(IDS, route_set=())))
        async with store.transaction() as tx:
            got = await tx.session_by_id("s-1")
        assert got is not None and got.ids == replace(IDS, route_set=())
    finally:
        await store.close()


async def test_outbox_backlog_lists_queued_chat_message_notifications(db: Database) -> None:
    async with db.sessions.begin() as s:
        for user, root, body in (
            (A, "chatMessageNotification", {"messageId": "m1", "chatMessage": {"text": "x"}}),
            (A, "chatMessageNotification", {"isComposing": {"state": "active"}}),
            (A, "chatEventNotification", {"messageId": "not-a-message", "eventType": "x"}),
            (B, "chatMessageNotification", {"messageId": "m2"}),
        ):
            await outbox.enqueue(
                s,
                user=user,
                subscription_id=SubscriptionId("sub-" + user),
                notify_url="http://app.test/cb",
                root=root,
                body=body,
            )
    backlog = OutboxBacklog(db)
    assert await backlog.queued_message_notifications([A, B]) == {
        (A, MessageId("m1")),
        (B, MessageId("m2")),
    }
    assert await backlog.queued_message_notifications([A]) == {(A, MessageId("m1"))}
    assert await backlog.queued_message_notifications([]) == set()


@pytest.mark.parametrize("missing", ["call_id", "local_tag", "remote_tag", "remote_target"])
def test_can_bye_needs_every_identifying_field(missing: str) -> None:
    cleared: dict[str, Any] = {missing: None}
    assert not replace(IDS, **cleared).can_bye
