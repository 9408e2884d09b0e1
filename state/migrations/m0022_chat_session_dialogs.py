"""Schema 22: the dialog state of each chat session's leg (RFC 3261 §12).

A bridge killed with live sessions leaves the peers with dialogs that nobody
will end. To send each of them a BYE after a restart, the store keeps what an
in-dialog request needs beyond Call-ID and tags (already in schema 20): our
name-addr and the peer's (From/To with tags), the remote target (the peer's
Contact), the route set and our last CSeq, plus which side of the dialog we
are. All nullable: rows written before this schema, and legs whose dialog was
never established, have none.
"""

from __future__ import annotations

import sqlalchemy as sa

VERSION = 22

_COLUMNS = (
    ("local_uri", "VARCHAR(1024)"),
    ("remote_uri", "VARCHAR(1024)"),
    ("remote_target", "VARCHAR(1024)"),
    ("route_set", "JSON"),
    ("local_cseq", "BIGINT"),
    ("dialog_uac", "BOOLEAN"),
)


def upgrade(conn: sa.Connection) -> None:
    """Add the nullable dialog columns to ``chat_sessions``."""
    for name, kind in _COLUMNS:
        conn.execute(sa.text(f"ALTER TABLE chat_sessions ADD COLUMN {name} {kind}"))
