"""Schema 20: ``chat_sessions`` and ``chat_messages`` for 1-1 chat.

The ids they keep: docs/protocol-mapping.md "Identifiers".
"""

from __future__ import annotations

import sqlalchemy as sa

VERSION = 20


def upgrade(conn: sa.Connection) -> None:
    """Create the 1-1 session and message tables with their indexes."""
    meta = sa.MetaData()
    sessions = sa.Table(
        "chat_sessions",
        meta,
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("user_uri", sa.String(512), nullable=False),
        sa.Column("peer_uri", sa.String(512), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("leg_id", sa.String(128), nullable=True),
        sa.Column("subject", sa.Text, nullable=True),
        sa.Column("originator_name", sa.Text, nullable=True),
        sa.Column("t_participant_name", sa.Text, nullable=True),
        sa.Column("client_correlator", sa.String(256), nullable=True),
        sa.Column("call_id", sa.String(256), nullable=True),
        sa.Column("local_tag", sa.String(256), nullable=True),
        sa.Column("remote_tag", sa.String(256), nullable=True),
        sa.Column("contribution_id", sa.String(256), nullable=True),
        sa.Column("conversation_id", sa.String(256), nullable=True),
        sa.Column("msrp_local_uri", sa.String(1024), nullable=True),
        sa.Column("msrp_remote_path", sa.String(2048), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(256), nullable=True),
        sa.UniqueConstraint("leg_id", name="uq_chat_sessions_leg"),
        sa.UniqueConstraint("user_uri", "client_correlator", name="uq_chat_sessions_corr"),
    )
    sa.Index(
        "ix_chat_sessions_user_peer",
        sessions.c.user_uri,
        sessions.c.peer_uri,
        sessions.c.kind,
        sessions.c.state,
    )
    sa.Index("ix_chat_sessions_state", sessions.c.state)
    sa.Index("ix_chat_sessions_ended_at", sessions.c.ended_at)
    messages = sa.Table(
        "chat_messages",
        meta,
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("message_id", sa.String(256), nullable=False),
        sa.Column("user_uri", sa.String(512), nullable=False),
        sa.Column("peer_uri", sa.String(512), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column(
            "session_id",
            sa.String(128),
            sa.ForeignKey("chat_sessions.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("rest_session", sa.String(128), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("content_type", sa.String(128), nullable=False),
        sa.Column("reports", sa.String(64), nullable=False),
        sa.Column("dispositions", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("client_correlator", sa.String(256), nullable=True),
        sa.Column("sender_name", sa.Text, nullable=True),
        sa.Column("report_route", sa.JSON, nullable=False),
        sa.Column("date_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("user_uri", "message_id", "direction", name="uq_chat_messages_imdn"),
        sa.UniqueConstraint(
            "user_uri", "direction", "client_correlator", name="uq_chat_messages_corr"
        ),
    )
    sa.Index("ix_chat_messages_session", messages.c.session_id, messages.c.status, messages.c.seq)
    sa.Index("ix_chat_messages_status", messages.c.direction, messages.c.status)
    sa.Index("ix_chat_messages_expires_at", messages.c.expires_at)
    meta.create_all(conn)
