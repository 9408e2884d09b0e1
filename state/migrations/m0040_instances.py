"""Schema 40: ``instances``, the bridge instances sharing the store (issue 10;
docs/several-instances.md).

One row per running (or crashed and not yet recovered) instance: its id, where it
runs, when it started and its last heartbeat. Liveness itself is not read from
this table on PostgreSQL: an instance is alive while it holds its advisory lock
(``state.instances``); the heartbeat is for operators, and for a SQLite store
(one instance) the row is written once at start.
"""

from __future__ import annotations

import sqlalchemy as sa

VERSION = 40


def upgrade(conn: sa.Connection) -> None:
    """Create ``instances``."""
    sa.Table(
        "instances",
        sa.MetaData(),
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    ).create(conn)
