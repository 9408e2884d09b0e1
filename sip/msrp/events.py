"""Events of the sans-I/O MSRP engine (sip/msrp/session.py), one frozen dataclass each."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sip.msrp.message import ByteRange, MSRPMessage, MSRPMessageId, TransactionId
from sip.msrp.uri import SessionId


class SessionStatus(enum.Enum):
    """Where an MSRP session stands on its connection."""

    NEW = "new"
    BINDING = "binding"
    BOUND = "bound"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A complete incoming message, reassembled from its chunks."""

    session_id: SessionId
    message_id: MSRPMessageId
    content_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class ChunkReceived:
    """Progress of an incoming chunked message (bytes so far / total or None)."""

    session_id: SessionId
    message_id: MSRPMessageId
    received: int
    total: int | None


@dataclass(frozen=True, slots=True)
class MessageAborted:
    """The sender aborted an incoming message with a ``#`` chunk."""

    session_id: SessionId
    message_id: MSRPMessageId


@dataclass(frozen=True, slots=True)
class MessageSent:
    """Every chunk of an outgoing message got its 200 (or none was expected)."""

    session_id: SessionId
    message_id: MSRPMessageId


@dataclass(frozen=True, slots=True)
class MessageFailed:
    """An outgoing message failed: error response, failure REPORT or local 408."""

    session_id: SessionId
    message_id: MSRPMessageId
    status: int
    reason: str
    local: bool = False


@dataclass(frozen=True, slots=True)
class ReportReceived:
    """A REPORT for one of our messages (RFC 4975 §7.1.2)."""

    session_id: SessionId
    message_id: MSRPMessageId
    status: int
    reason: str
    byte_range: ByteRange | None


@dataclass(frozen=True, slots=True)
class AuthResponse:
    """The response to an AUTH we sent to a relay (RFC 4976 §5.1); 408 when none came."""

    transaction_id: TransactionId
    status: int
    reason: str
    message: MSRPMessage | None


@dataclass(frozen=True, slots=True)
class StateChanged:
    """A session moved from ``old`` to ``new``."""

    session_id: SessionId
    old: SessionStatus
    new: SessionStatus


@dataclass(frozen=True, slots=True)
class RequestRejected:
    """We answered an incoming request with an error (or dropped it when we could not)."""

    transaction_id: TransactionId
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionBroken:
    """A transaction timed out: the connection is dead and must be closed."""

    reason: str


Event = (
    MessageReceived
    | ChunkReceived
    | MessageAborted
    | MessageSent
    | MessageFailed
    | ReportReceived
    | AuthResponse
    | StateChanged
    | RequestRejected
    | ConnectionBroken
)
