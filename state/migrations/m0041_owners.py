"""Schema 41: the ``owner`` of each session, message and conference (issue 10;
docs/several-instances.md).

The instance (``state.instances``) that created the row: the one holding its SIP
dialog, MSRP connection and timers. Start-up recovery touches only the rows of its
own instance and of instances provably dead. Rows from before this schema get
``''`` (``state.instances.LEGACY_OWNER``), an owner nobody holds: recovered by the
next start, as every live row was before.
"""

from __future__ import annotations

import sqlalchemy as sa

VERSION = 41

_TABLES = ("chat_sessions", "chat_messages", "focus_conferences")


def upgrade(conn: sa.Connection) -> None:
    """Add ``owner`` (not null, default ``''``) to the three tables."""
    for table in _TABLES:
        conn.execute(
            sa.text(f"ALTER TABLE {table} ADD COLUMN owner VARCHAR(128) NOT NULL DEFAULT ''")
        )
