"""The chat store port: what the chat use cases ask of persistence (``state.chat_store``).

A :class:`ChatStore` opens :class:`ChatTransaction` units; ``ChatCore.unit``
(``bridge.chat.core``) wraps each one with the notifications it enqueued
(the notification commits with the state that caused it). The signalling contract is
``bridge.chat.ports``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from bridge.chat.model import (
    ChatSession,
    Direction,
    Participant,
    ReportKind,
    SessionKind,
    StoredMessage,
)
from bridge.ids import ChatSessionId, MessageId, SubscriptionId, UserUri
from bridge.ports import JSONObject, Notification
from bridge.subscriptions import Subscription


@dataclass(frozen=True)
class OwedReport:
    """An IMDN decided for a received message and not yet known taken (migration 28)."""

    user: UserUri
    message_id: MessageId
    kind: ReportKind


class ChatTransaction(Protocol):
    """One store transaction of the chat side (``state.chat_store.SQLChatStore``).

    Chat state and the notifications it causes are written in the same
    transaction (:meth:`enqueue`), then ``Notifier.wake`` runs after commit
    with :attr:`notifications`. A transaction may be one unit of a group
    commit: its writes may reach the database only when it ends, so reads
    see the transaction's own writes first.
    """

    notifications: list[Notification]
    """What :meth:`enqueue` stored, complete once the transaction has committed."""

    async def insert_session(self, cs: ChatSession) -> ChatSession:
        """Store a new session."""
        ...

    async def save_session(self, cs: ChatSession) -> ChatSession:
        """Write every field of an existing session."""
        ...

    async def get_session(self, user: UserUri, session_id: str) -> ChatSession | None:
        """``user``'s session ``session_id``."""
        ...

    async def session_by_id(self, session_id: str) -> ChatSession | None:
        """The session with internal id ``session_id``."""
        ...

    async def session_by_leg(self, leg: str) -> ChatSession | None:
        """The session bound to ``leg``."""
        ...

    async def session_by_correlator(self, user: UserUri, correlator: str) -> ChatSession | None:
        """The session ``user`` created with ``correlator``."""
        ...

    async def live_adhoc_session(
        self, user: UserUri, peer: UserUri, states: Iterable[str]
    ) -> ChatSession | None:
        """The newest implicit session of the pair in one of ``states`` and not ended."""
        ...

    async def sessions_in_states(
        self, kind: SessionKind, states: Iterable[str], owners: Collection[str] | None = None
    ) -> list[ChatSession]:
        """Every session of ``kind`` in one of ``states`` owned by one of ``owners`` (the
        instance ids of ``state.instances``; None: anyone's)."""
        ...

    async def insert_message(self, msg: StoredMessage, *, expires_at: datetime) -> StoredMessage:
        """Store a new message (returns it with ``seq``)."""
        ...

    async def get_message(
        self, user: UserUri, message_id: str, direction: Direction
    ) -> StoredMessage | None:
        """``user``'s message ``message_id`` in ``direction``."""
        ...

    async def find_messages(self, user: UserUri, message_id: str) -> list[StoredMessage]:
        """``user``'s messages with ``message_id`` (sent first)."""
        ...

    async def message_by_correlator(self, user: UserUri, correlator: str) -> StoredMessage | None:
        """The message ``user`` sent with ``correlator``."""
        ...

    async def set_message_status(
        self,
        msg: StoredMessage,
        status: str,
        *,
        now: datetime,
        session_id: ChatSessionId | None = None,
        detach: bool = False,
    ) -> StoredMessage:
        """Write ``status``; move to ``session_id``, or off any session with ``detach``.

        Never backwards: the write is conditional on the stored status (the
        status machines of ``bridge.chat.delivery``); when another instance moved
        the message on meanwhile, nothing is written and the message comes back
        as stored (its ``status`` is then not ``status``).
        """
        ...

    async def session_messages(
        self, session_id: str, direction: Direction, statuses: Iterable[str]
    ) -> list[StoredMessage]:
        """A session's messages in ``direction`` with one of ``statuses``, in order."""
        ...

    async def detached_messages(
        self, user: UserUri, peer: UserUri, rest_session: str, status: str
    ) -> list[StoredMessage]:
        """Sent messages of the pair on no session, with ``status``, in order."""
        ...

    async def messages_in_states(
        self, direction: Direction, statuses: Iterable[str], owners: Collection[str] | None = None
    ) -> list[StoredMessage]:
        """Every message in ``direction`` with one of ``statuses``, in order; with ``owners``,
        only those on a session owned by one of them, or on none and stored by one of them."""
        ...

    async def purge_expired(self, *, now: datetime, ended_before: datetime) -> int:
        """Delete messages past retention (their owed IMDNs too) and sessions ended before
        ``ended_before``."""
        ...

    async def owe_reports(self, owed: Iterable[OwedReport], now: datetime) -> None:
        """Record IMDNs now due (sent after the commit; recovery resends what is left)."""
        ...

    async def reports_taken(self, taken: Iterable[OwedReport]) -> None:
        """Forget owed IMDNs that were acknowledged (gone already: no error)."""
        ...

    async def claim_owed_reports(
        self, owner: str, now: datetime, until: datetime, created_before: datetime | None = None
    ) -> list[OwedReport]:
        """Claim, until ``until``, every owed IMDN no other instance holds (claim ran out);
        with ``created_before``, only those owed since then."""
        ...

    async def participants(self, session_id: str) -> list[Participant]:
        """The members of group session ``session_id`` (originator first, then by address)."""
        ...

    async def save_participants(
        self, session_id: str, people: Iterable[Participant], now: datetime
    ) -> None:
        """Insert or update, by address, members of group session ``session_id``."""
        ...

    async def active_subscriptions(self, user: UserUri, now: datetime) -> list[Subscription]:
        """The subscriptions receiving ``user``'s notifications."""
        ...

    async def enqueue(
        self,
        *,
        user: UserUri,
        subscription_id: SubscriptionId,
        notify_url: str,
        root: str,
        body: JSONObject,
        now: datetime,
    ) -> None:
        """Queue one notification in this transaction (``state.outbox.enqueue``)."""
        ...


class ChatStore(Protocol):
    """Opens chat store transactions."""

    def transaction(self) -> AbstractAsyncContextManager[ChatTransaction]:
        """A transaction that is durable when the block returns, and leaves nothing on error.

        Raises ``StoreError`` on leaving the block when the commit failed.
        """
        ...

    async def close(self) -> None:
        """Write what is pending and release the store's resources."""
        ...
