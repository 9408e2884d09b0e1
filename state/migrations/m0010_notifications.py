"""Schema 10: the notification outbox and the Notification Channels (OMA NotificationChannel)."""

from __future__ import annotations

import sqlalchemy as sa

VERSION = 10


def upgrade(conn: sa.Connection) -> None:
    """Create ``notification_channels`` and ``notification_outbox`` with their indexes."""
    meta = sa.MetaData()
    channels = sa.Table(
        "notification_channels",
        meta,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_uri", sa.String(512), nullable=False),
        sa.Column("channel_type", sa.String(32), nullable=False),
        sa.Column("client_correlator", sa.String(256), nullable=True),
        sa.Column("application_tag", sa.String(256), nullable=True),
        sa.Column("max_notifications", sa.Integer, nullable=False),
        sa.Column("lifetime", sa.Integer, nullable=False),
        sa.Column("callback_url", sa.String(2048), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("user_uri", "client_correlator", name="uq_notification_channels_corr"),
        sa.UniqueConstraint("callback_url", name="uq_notification_channels_callback"),
    )
    sa.Index("ix_notification_channels_user", channels.c.user_uri)
    sa.Index("ix_notification_channels_expires_at", channels.c.expires_at)
    outbox = sa.Table(
        "notification_outbox",
        meta,
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("user_uri", sa.String(512), nullable=False),
        sa.Column("subscription_id", sa.String(64), nullable=False),
        sa.Column("notify_url", sa.String(2048), nullable=False),
        sa.Column(
            "channel_id",
            sa.String(64),
            sa.ForeignKey("notification_channels.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("root", sa.String(128), nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(512), nullable=True),
    )
    sa.Index(
        "ix_notification_outbox_lane",
        outbox.c.channel_id,
        outbox.c.subscription_id,
        outbox.c.id,
    )
    sa.Index("ix_notification_outbox_created_at", outbox.c.created_at)
    meta.create_all(conn)
