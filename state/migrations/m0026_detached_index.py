"""Schema 26: a partial index for the adhoc queue look-up (queued messages on no session).

Why: every adhoc message asks whether its pair has queued messages not yet on
a session (``chat_repository.detached_messages`` and the store's raw probe of
it). Since migration 25 dropped ``ix_chat_messages_status``, the only index
that query could use was ``uq_chat_messages_corr`` on (user, direction), so it
walked every message the user ever sent: adhoc throughput fell from 317 to
150 msg/s between a 3,000 and a 12,000 message run. This index holds only the
messages queued or sending on no session (nearly always none), keyed by the
pair and the REST session, so the look-up is one seek whatever the history.
"""

from __future__ import annotations

import sqlalchemy as sa

VERSION = 26

DETACHED = "session_id IS NULL AND status IN ('queued', 'sending')"
"""Copied, not imported: a migration never changes with the code."""


def upgrade(conn: sa.Connection) -> None:
    conn.execute(
        sa.text(
            "CREATE INDEX ix_chat_messages_detached"
            f" ON chat_messages (user_uri, peer_uri, rest_session, seq) WHERE {DETACHED}"
        )
    )
