"""Schema 1: the ``chat_subscriptions`` table (OMA REST Chat v1.0 ChatNotificationSubscription)."""

from __future__ import annotations

import sqlalchemy as sa

VERSION = 1


def upgrade(conn: sa.Connection) -> None:
    """Create ``chat_subscriptions`` with its indexes."""
    meta = sa.MetaData()
    table = sa.Table(
        "chat_subscriptions",
        meta,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_uri", sa.String(512), nullable=False),
        sa.Column("notify_url", sa.String(2048), nullable=False),
        sa.Column("callback_data", sa.Text, nullable=True),
        sa.Column("notification_format", sa.String(8), nullable=False),
        sa.Column("client_correlator", sa.String(256), nullable=True),
        sa.Column("duration", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("confirmed_chat_supported", sa.Boolean, nullable=False),
        sa.Column("adhoc_chat_supported", sa.Boolean, nullable=False),
        sa.UniqueConstraint("user_uri", "client_correlator", name="uq_chat_subscriptions_corr"),
    )
    sa.Index("ix_chat_subscriptions_user", table.c.user_uri)
    sa.Index("ix_chat_subscriptions_notify_url", table.c.notify_url)
    sa.Index("ix_chat_subscriptions_expires_at", table.c.expires_at)
    meta.create_all(conn)
