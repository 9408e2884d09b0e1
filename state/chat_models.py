"""ORM models of chat: sessions, messages and group participants.

The ids they keep: docs/protocol-mapping.md "Identifiers".

``chat_sessions`` maps each user's REST sessionId to its signalling leg and
the SIP/MSRP identifiers of that leg (Call-ID, tags, Contribution-ID,
Conversation-ID, MSRP URIs). ``chat_messages`` maps each REST messageId
(= imdn.Message-ID) to its session, peer and status; the IMDN correlation of
§3.2 (``imdn_routes``: original sender, IMDN-Record-Route, DateTime) is folded
into the received message's row, since every report needs the message anyway.
The schema is created by ``state/migrations/m0020_chat_sessions_messages.py``;
``m0022_chat_session_dialogs.py`` adds the RFC 3261 §12 dialog state of each
session's leg (local and remote name-addr, remote target, route set, local
CSeq, UAC or UAS), which restart recovery needs to send a BYE.
``m0027_group_participants.py`` adds ``chat_participants``: the members of each
user's group session (kind ``group``), keyed by (session, address).
``m0041_owners.py`` adds ``owner`` to sessions and messages: the instance that
created the row (several instances on PostgreSQL, docs/several-instances.md).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from bridge.chat import delivery
from state.db import Base

USER_URI_LEN = 512
ID_LEN = 128
SIP_ID_LEN = 256
SIP_URI_LEN = 1024
OWNER_LEN = 128


class ChatSessionRow(Base):
    """One user's 1-1 session, confirmed or implicit."""

    __tablename__ = "chat_sessions"
    __table_args__ = (
        sa.UniqueConstraint("leg_id", name="uq_chat_sessions_leg"),
        sa.UniqueConstraint("user_uri", "client_correlator", name="uq_chat_sessions_corr"),
        sa.Index("ix_chat_sessions_user_peer", "user_uri", "peer_uri", "kind", "state"),
        sa.Index("ix_chat_sessions_state", "state"),
        sa.Index("ix_chat_sessions_ended_at", "ended_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(ID_LEN), primary_key=True)
    user_uri: Mapped[str] = mapped_column(sa.String(USER_URI_LEN))
    peer_uri: Mapped[str] = mapped_column(sa.String(USER_URI_LEN))
    kind: Mapped[str] = mapped_column(sa.String(16))
    direction: Mapped[str] = mapped_column(sa.String(8))
    state: Mapped[str] = mapped_column(sa.String(16))
    leg_id: Mapped[str | None] = mapped_column(sa.String(ID_LEN))
    subject: Mapped[str | None] = mapped_column(sa.Text)
    originator_name: Mapped[str | None] = mapped_column(sa.Text)
    t_participant_name: Mapped[str | None] = mapped_column(sa.Text)
    client_correlator: Mapped[str | None] = mapped_column(sa.String(256))
    call_id: Mapped[str | None] = mapped_column(sa.String(SIP_ID_LEN))
    local_tag: Mapped[str | None] = mapped_column(sa.String(SIP_ID_LEN))
    remote_tag: Mapped[str | None] = mapped_column(sa.String(SIP_ID_LEN))
    contribution_id: Mapped[str | None] = mapped_column(sa.String(SIP_ID_LEN))
    conversation_id: Mapped[str | None] = mapped_column(sa.String(SIP_ID_LEN))
    msrp_local_uri: Mapped[str | None] = mapped_column(sa.String(1024))
    msrp_remote_path: Mapped[str | None] = mapped_column(sa.String(2048))
    local_uri: Mapped[str | None] = mapped_column(sa.String(SIP_URI_LEN))
    remote_uri: Mapped[str | None] = mapped_column(sa.String(SIP_URI_LEN))
    remote_target: Mapped[str | None] = mapped_column(sa.String(SIP_URI_LEN))
    route_set: Mapped[list[str] | None] = mapped_column(sa.JSON)
    local_cseq: Mapped[int | None] = mapped_column(sa.BigInteger)
    dialog_uac: Mapped[bool | None] = mapped_column(sa.Boolean)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    end_reason: Mapped[str | None] = mapped_column(sa.String(256))
    owner: Mapped[str] = mapped_column(sa.String(OWNER_LEN), default="", server_default="")
    """The instance holding the session's dialog and timers (migration 41; ``state.instances``)."""


UNSENT_STATUSES = ("queued", "sending")
"""Statuses of an outgoing message not yet acknowledged (``bridge.chat.delivery.UNSENT``)."""
UNSENT_SQL = "status IN ('queued', 'sending')"
"""The predicate of the partial indexes over unsent messages (migration 25); a query
must carry it literally for SQLite to use them."""
DETACHED_SQL = f"session_id IS NULL AND {UNSENT_SQL}"
"""The predicate of the partial index over unsent messages on no session (migration 26)."""


def _status_sources() -> dict[str, tuple[str, ...]]:
    sources: dict[str, set[str]] = {}
    for table in (delivery.OUTGOING, delivery.INCOMING):
        for (old, _event), new in table.items():
            sources.setdefault(new.value, {new.value}).add(old.value)
    return {new: tuple(sorted(olds)) for new, olds in sorted(sources.items())}


STATUS_SOURCES = _status_sources()
"""For each message status, the stored statuses it may be written over: those the status
machines (``bridge.chat.delivery.OUTGOING``, ``INCOMING``) move to it, and itself. A status
update is conditional on them (never backwards: a late ``sent`` cannot overwrite
``delivered`` written meanwhile by another instance; docs/several-instances.md)."""
STATUS_FORWARD_SQL = (
    "CASE ? "
    + " ".join(
        f"WHEN '{new}' THEN status IN ({', '.join(repr(o) for o in olds)})"
        for new, olds in STATUS_SOURCES.items()
    )
    + " ELSE 0 END"
)
""":data:`STATUS_SOURCES` as a SQL condition on the stored ``status``, the new status as
its one ``?`` parameter (the group-commit store's raw ``executemany``)."""


class ChatMessageRow(Base):
    """One message of one user, sent or received."""

    __tablename__ = "chat_messages"
    __table_args__ = (
        sa.UniqueConstraint("user_uri", "message_id", "direction", name="uq_chat_messages_imdn"),
        sa.UniqueConstraint(
            "user_uri", "direction", "client_correlator", name="uq_chat_messages_corr"
        ),
        sa.Index(
            "ix_chat_messages_unsent",
            "direction",
            "seq",
            sqlite_where=sa.text(UNSENT_SQL),
            postgresql_where=sa.text(UNSENT_SQL),
        ),
        sa.Index(
            "ix_chat_messages_session_unsent",
            "session_id",
            "direction",
            "seq",
            sqlite_where=sa.text(UNSENT_SQL),
            postgresql_where=sa.text(UNSENT_SQL),
        ),
        sa.Index(
            "ix_chat_messages_detached",
            "user_uri",
            "peer_uri",
            "rest_session",
            "seq",
            sqlite_where=sa.text(DETACHED_SQL),
            postgresql_where=sa.text(DETACHED_SQL),
        ),
        sa.Index("ix_chat_messages_expires_at", "expires_at"),
    )

    seq: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    message_id: Mapped[str] = mapped_column(sa.String(ID_LEN * 2))
    user_uri: Mapped[str] = mapped_column(sa.String(USER_URI_LEN))
    peer_uri: Mapped[str] = mapped_column(sa.String(USER_URI_LEN))
    direction: Mapped[str] = mapped_column(sa.String(8))
    session_id: Mapped[str | None] = mapped_column(
        sa.String(ID_LEN), sa.ForeignKey("chat_sessions.id", ondelete="SET NULL")
    )
    rest_session: Mapped[str] = mapped_column(sa.String(ID_LEN))
    text: Mapped[str] = mapped_column(sa.Text)
    content_type: Mapped[str] = mapped_column(sa.String(128))
    reports: Mapped[str] = mapped_column(sa.String(64))
    dispositions: Mapped[str] = mapped_column(sa.String(128))
    status: Mapped[str] = mapped_column(sa.String(16))
    client_correlator: Mapped[str | None] = mapped_column(sa.String(256))
    sender_name: Mapped[str | None] = mapped_column(sa.Text)
    report_route: Mapped[list[str]] = mapped_column(sa.JSON)
    date_time: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    owner: Mapped[str] = mapped_column(sa.String(OWNER_LEN), default="", server_default="")
    """The instance that stored the message (migration 41; ``state.instances``)."""


class ChatParticipantRow(Base):
    """One member of one user's group chat session (migration 27)."""

    __tablename__ = "chat_participants"

    session_id: Mapped[str] = mapped_column(
        sa.String(ID_LEN), sa.ForeignKey("chat_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    address: Mapped[str] = mapped_column(sa.String(USER_URI_LEN), primary_key=True)
    name: Mapped[str | None] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(16))
    is_originator: Mapped[bool] = mapped_column(sa.Boolean)
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


class ChatOwedReportRow(Base):
    """One IMDN the bridge decided to send for a received message and not yet saw taken
    (migration 28; ``bridge.chat.core.ChatCore.send_reports``, ``bridge.chat.recovery``).

    Written in the transaction that moves the message to the status making the
    report due, deleted once the report was acknowledged (MSRP 200 / SIP 2xx)
    and a grace period passed; whatever is left at start is sent again.
    ``claimed_by``/``claimed_until``: the instance resending it after a restart
    (several instances on PostgreSQL).
    """

    __tablename__ = "chat_owed_reports"

    user_uri: Mapped[str] = mapped_column(sa.String(USER_URI_LEN), primary_key=True)
    message_id: Mapped[str] = mapped_column(sa.String(ID_LEN * 2), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    claimed_by: Mapped[str | None] = mapped_column(sa.String(128))
    claimed_until: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
