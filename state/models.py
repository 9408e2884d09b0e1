"""ORM models of the REST core (chat notification subscriptions).

The schema itself is created by the numbered migrations (``m0001_…``), which use
Core DDL of their own; ``tests/unit/test_store*.py`` checks that the migrated
tables and columns equal this metadata. Timestamps are timezone-aware UTC;
SQLite hands them back naive, so ``state.repository`` re-attaches UTC.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from state.db import Base

USER_URI_LEN = 512
URL_LEN = 2048
CORRELATOR_LEN = 256


class ChatSubscriptionRow(Base):
    """One chat notification subscription (OMA REST Chat v1.0 ChatNotificationSubscription)."""

    __tablename__ = "chat_subscriptions"
    __table_args__ = (
        sa.UniqueConstraint("user_uri", "client_correlator", name="uq_chat_subscriptions_corr"),
        sa.Index("ix_chat_subscriptions_user", "user_uri"),
        sa.Index("ix_chat_subscriptions_notify_url", "notify_url"),
        sa.Index("ix_chat_subscriptions_expires_at", "expires_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    user_uri: Mapped[str] = mapped_column(sa.String(USER_URI_LEN))
    notify_url: Mapped[str] = mapped_column(sa.String(URL_LEN))
    callback_data: Mapped[str | None] = mapped_column(sa.Text)
    notification_format: Mapped[str] = mapped_column(sa.String(8))
    client_correlator: Mapped[str | None] = mapped_column(sa.String(CORRELATOR_LEN))
    duration: Mapped[int] = mapped_column(sa.Integer)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    confirmed_chat_supported: Mapped[bool] = mapped_column(sa.Boolean)
    adhoc_chat_supported: Mapped[bool] = mapped_column(sa.Boolean)
