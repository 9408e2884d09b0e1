"""Schema 27: ``chat_participants``, the members of each user's group chat session.

One row per (group session, participant address) as that user's session sees
it (OMA REST Chat v1.0 ParticipantInformation; docs/group-chat.md "Ids"): the REST participant id
is the address; status is a REST ParticipantStatus value, kept up to date from
the focus's conference events (RFC 4575; docs/protocol-mapping.md N12, N13). The group
sessions themselves are ``chat_sessions`` rows of kind ``group``.
"""

from __future__ import annotations

import sqlalchemy as sa

VERSION = 27


def upgrade(conn: sa.Connection) -> None:
    """Create ``chat_participants``."""
    meta = sa.MetaData()
    sa.Table("chat_sessions", meta, sa.Column("id", sa.String(128), primary_key=True))
    sa.Table(
        "chat_participants",
        meta,
        sa.Column(
            "session_id",
            sa.String(128),
            sa.ForeignKey("chat_sessions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("address", sa.String(512), primary_key=True),
        sa.Column("name", sa.Text, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("is_originator", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ).create(conn)
