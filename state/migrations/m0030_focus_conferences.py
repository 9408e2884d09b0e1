"""Schema 30: the conferences of the bridge's own focus and their members (docs/group-chat.md).

``focus_conferences``: one row per conference URI (Contribution-/Conversation-ID, subject,
creator, created/ended time). ``focus_members``: one row per member, with its status and,
while its INVITE dialog is up, the RFC 3261 §12 dialog state a BYE needs after a restart
(Call-ID, tags, local and remote name-addr, remote target, route set, local CSeq, side).
"""

from __future__ import annotations

import sqlalchemy as sa

VERSION = 30


def upgrade(conn: sa.Connection) -> None:
    """Create ``focus_conferences`` and ``focus_members``."""
    meta = sa.MetaData()
    sa.Table(
        "focus_conferences",
        meta,
        sa.Column("uri", sa.String(1024), primary_key=True),
        sa.Column("creator_uri", sa.String(512), nullable=False),
        sa.Column("contribution_id", sa.String(256)),
        sa.Column("conversation_id", sa.String(256)),
        sa.Column("subject", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
        sa.Index("ix_focus_conferences_ended_at", "ended_at"),
    )
    sa.Table(
        "focus_members",
        meta,
        sa.Column(
            "conference_uri",
            sa.String(1024),
            sa.ForeignKey("focus_conferences.uri", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("user_uri", sa.String(512), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("display_name", sa.Text),
        sa.Column("chairman", sa.Boolean, nullable=False, default=False),
        sa.Column("cause", sa.Integer),
        sa.Column("call_id", sa.String(256)),
        sa.Column("local_tag", sa.String(256)),
        sa.Column("remote_tag", sa.String(256)),
        sa.Column("local_uri", sa.String(1024)),
        sa.Column("remote_uri", sa.String(1024)),
        sa.Column("remote_target", sa.String(1024)),
        sa.Column("route_set", sa.JSON),
        sa.Column("local_cseq", sa.BigInteger),
        sa.Column("dialog_uac", sa.Boolean),
    )
    meta.create_all(conn)
