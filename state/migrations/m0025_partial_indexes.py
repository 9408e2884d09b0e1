"""Schema 25: the indexes only a few rows need become partial (fewer pages per commit).

Why: every message insert and status change used to rewrite entries in
``ix_chat_messages_status`` (direction, status) and ``ix_chat_messages_session``
(session_id, status, seq), and every notification one in
``ix_notification_outbox_created_at``, although their queries only ever look
for messages not yet sent (``queued``, ``sending``: ``session_messages``,
recovery's ``messages_in_states``) and for channel items (the stale-item
sweep). Partial indexes over exactly those rows keep the queries indexed
while a message that is sent, delivered or received (nearly all of them) and
a callback notification touch none of them: a commit writes fewer pages. The
queries repeat each index's predicate literally
(``state.chat_models.UNSENT_SQL``), which is what lets SQLite use a partial
index.
"""

from __future__ import annotations

import sqlalchemy as sa

VERSION = 25

UNSENT = "status IN ('queued', 'sending')"
"""Copied, not imported: a migration never changes with the code."""


def upgrade(conn: sa.Connection) -> None:
    """Replace three full indexes by partial ones (SQLite and PostgreSQL alike)."""
    for name in (
        "ix_chat_messages_status",
        "ix_chat_messages_session",
        "ix_notification_outbox_created_at",
    ):
        conn.execute(sa.text(f"DROP INDEX IF EXISTS {name}"))
    conn.execute(
        sa.text(
            f"CREATE INDEX ix_chat_messages_unsent ON chat_messages (direction, seq) WHERE {UNSENT}"
        )
    )
    conn.execute(
        sa.text(
            "CREATE INDEX ix_chat_messages_session_unsent"
            f" ON chat_messages (session_id, direction, seq) WHERE {UNSENT}"
        )
    )
    conn.execute(
        sa.text(
            "CREATE INDEX ix_notification_outbox_channel_age ON notification_outbox (created_at)"
            " WHERE channel_id IS NOT NULL"
        )
    )
