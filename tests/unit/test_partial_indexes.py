"""Migrations 25 and 26: the partial indexes are used by the queries that need them."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from bridge.chat import delivery
from bridge.chat.model import Direction
from bridge.ids import UserUri
from state import chat_repository, chat_store, outbox
from state.chat_models import UNSENT_STATUSES
from state.db import Database


def test_unsent_statuses_match_the_domain() -> None:
    assert set(UNSENT_STATUSES) == {s.value for s in delivery.UNSENT}


async def _plan(database: Database, statement: sa.Executable) -> str:
    compiled = statement.compile(  # type: ignore[attr-defined]
        dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}
    )
    async with database.engine.connect() as conn:
        rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")
        return " | ".join(str(r[-1]) for r in rows)


class _Capture:
    """An AsyncSession stand-in that keeps the statement it is given."""

    def __init__(self) -> None:
        self.statement: sa.Executable | None = None

    async def scalars(self, statement: sa.Executable) -> list[object]:
        self.statement = statement
        return []


async def test_unsent_queries_use_the_partial_indexes(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    try:
        assert await database.migrate() >= 25
        capture = _Capture()
        await chat_repository.session_messages(
            capture,  # type: ignore[arg-type]
            "s1",
            Direction.OUTGOING,
            ["queued"],
        )
        assert capture.statement is not None
        assert "ix_chat_messages_session_unsent" in await _plan(database, capture.statement)
        await chat_repository.messages_in_states(
            capture,  # type: ignore[arg-type]
            Direction.OUTGOING,
            list(UNSENT_STATUSES),
        )
        assert "ix_chat_messages_unsent" in await _plan(database, capture.statement)
        # any other status set is answered correctly, without the partial index
        await chat_repository.messages_in_states(
            capture,  # type: ignore[arg-type]
            Direction.OUTGOING,
            ["sent"],
        )
        assert "unsent" not in await _plan(database, capture.statement)
        stale = sa.delete(outbox.OutboxRow).where(
            outbox.OutboxRow.channel_id.is_not(None),
            outbox.OutboxRow.created_at < sa.func.datetime("now"),
        )
        assert "ix_notification_outbox_channel_age" in await _plan(database, stale)
    finally:
        await database.close()


async def test_the_adhoc_queue_look_up_uses_the_detached_index(tmp_path: Path) -> None:
    """One seek whatever the user's history (it walked every message sent before)."""
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    try:
        assert await database.migrate() >= 26
        capture = _Capture()
        await chat_repository.detached_messages(
            capture,  # type: ignore[arg-type]
            UserUri("tel:+1"),
            UserUri("tel:+2"),
            "adhoc",
            "queued",
        )
        assert capture.statement is not None
        assert "ix_chat_messages_detached" in await _plan(database, capture.statement)
        async with database.engine.connect() as conn:
            rows = await conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {chat_store._PROBE_DETACHED_UNSENT}",
                ("tel:+1", "tel:+2", "out", "adhoc", "queued"),
            )
            assert "ix_chat_messages_detached" in " ".join(str(r[-1]) for r in rows)
        # another status is still answered, without the partial index
        await chat_repository.detached_messages(
            capture,  # type: ignore[arg-type]
            UserUri("tel:+1"),
            UserUri("tel:+2"),
            "adhoc",
            "failed",
        )
        assert "detached" not in await _plan(database, capture.statement)
    finally:
        await database.close()
