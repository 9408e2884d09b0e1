"""Schema 28: ``chat_owed_reports``, the IMDNs owed for received messages (issue 13, defect 9).

A received message's "delivered" (or "displayed") IMDN used to be decided in
memory: the status change was committed, then the IMDN went out. A crash
between the two, or before the peer had taken the IMDN, lost it for ever
(RFC 5438 §7 gives the sender no other way to learn of the delivery). One row
per (user, imdn.Message-ID, report kind) is now written in the transaction that
makes the report due and deleted once the report was acknowledged; recovery
sends the rows left after a restart. ``claimed_by``/``claimed_until`` let one
of several instances on PostgreSQL take a row for resending.
"""

from __future__ import annotations

import sqlalchemy as sa

VERSION = 28


def upgrade(conn: sa.Connection) -> None:
    """Create ``chat_owed_reports``."""
    meta = sa.MetaData()
    sa.Table(
        "chat_owed_reports",
        meta,
        sa.Column("user_uri", sa.String(512), primary_key=True),
        sa.Column("message_id", sa.String(256), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
    ).create(conn)
