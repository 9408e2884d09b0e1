"""Read-only counts for the metrics scrape (docs/operations.md): cheap aggregate queries.

Each runs on its own short connection when ``/metrics`` is scraped, never on the chat
hot path; the caller bounds it with a timeout.
"""

from __future__ import annotations

import sqlalchemy as sa

from state.chat_models import ChatSessionRow
from state.db import Database
from state.outbox import OutboxRow

__all__ = ["live_sessions", "outbox_backlog"]


async def live_sessions(database: Database) -> dict[tuple[str, str], int]:
    """Sessions not ended, counted by (kind, state) (``chat_sessions.ended_at`` is null)."""
    query = (
        sa.select(ChatSessionRow.kind, ChatSessionRow.state, sa.func.count())
        .where(ChatSessionRow.ended_at.is_(None))
        .group_by(ChatSessionRow.kind, ChatSessionRow.state)
    )
    async with database.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return {(str(kind), str(state)): int(count) for kind, state, count in rows}


async def outbox_backlog(database: Database) -> int:
    """Notifications in the outbox: queued, being delivered or waiting for a retry."""
    async with database.engine.connect() as conn:
        count = await conn.scalar(sa.select(sa.func.count()).select_from(OutboxRow))
    return int(count or 0)
