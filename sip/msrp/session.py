"""Sans-I/O MSRP session state: paths, status table, accept-types (RFC 4975 §5, RFC 4976).

Public API::

    state = MSRPSessionState(local_uri, use_path=(), remote_path=(), accept_types=("*",),
                             max_message_size=DEFAULT_MAX_MESSAGE_SIZE)
    state.local_path (SDP a=path) / .route (To-Path) / .accepts(content_type) / .status
    state.transition(SessionInput.X) -> StateChanged | None   per TRANSITIONS, else
                                                              ProtocolError
    type_accepted(accept_types, content_type) ; new_ident() ; new_session_id()

# Why this shape
#
# Sessions are plain slotted objects, cheap when idle: the reassembly and outgoing tables
# the engine (sip.msrp.connection.MSRPConnection) keeps on them are created on first
# use. The status only moves through ``transition`` and its (status, input) table; a
# session that closes leaves its connection.
"""

from __future__ import annotations

import enum
import secrets
from typing import TYPE_CHECKING

from sip.errors import ProtocolError
from sip.limits import DEFAULT_LIMITS
from sip.msrp.events import SessionStatus, StateChanged
from sip.msrp.message import MSRPMessageId
from sip.msrp.reassembly import Reassembly
from sip.msrp.uri import MSRPURI, SessionId

if TYPE_CHECKING:
    from sip.msrp.connection import MSRPConnection, OutgoingMessage

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "TRANSITIONS",
    "MSRPSessionState",
    "SessionInput",
    "new_ident",
    "new_session_id",
    "type_accepted",
]

DEFAULT_MAX_MESSAGE_SIZE = DEFAULT_LIMITS.msrp_message_size


class SessionInput(enum.Enum):
    """What moves a session between states."""

    SEND_BIND = "send-bind"
    BIND_OK = "bind-ok"
    REMOTE_BIND = "remote-bind"
    FAIL = "fail"
    CLOSE = "close"


_S, _I = SessionStatus, SessionInput
TRANSITIONS: dict[tuple[SessionStatus, SessionInput], SessionStatus] = {
    (_S.NEW, _I.SEND_BIND): _S.BINDING,
    (_S.NEW, _I.REMOTE_BIND): _S.BOUND,
    (_S.BINDING, _I.BIND_OK): _S.BOUND,
    (_S.BINDING, _I.REMOTE_BIND): _S.BOUND,
    (_S.BOUND, _I.BIND_OK): _S.BOUND,
    (_S.BOUND, _I.SEND_BIND): _S.BOUND,
    (_S.NEW, _I.FAIL): _S.CLOSED,
    (_S.BINDING, _I.FAIL): _S.CLOSED,
    (_S.BOUND, _I.FAIL): _S.CLOSED,
    (_S.NEW, _I.CLOSE): _S.CLOSED,
    (_S.BINDING, _I.CLOSE): _S.CLOSED,
    (_S.BOUND, _I.CLOSE): _S.CLOSED,
    (_S.CLOSED, _I.CLOSE): _S.CLOSED,
    (_S.CLOSED, _I.FAIL): _S.CLOSED,
}


def type_accepted(accept_types: tuple[str, ...], content_type: str) -> bool:
    """True when ``content_type`` matches an a=accept-types list (RFC 4975 §8.6)."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    major = ctype.split("/", 1)[0] + "/*"
    return any(a == "*" or a.lower() in (ctype, major) for a in accept_types)


def new_ident() -> str:
    """A random transaction id / Message-ID (RFC 4975 ``ident``)."""
    return secrets.token_hex(8)


def new_session_id() -> str:
    """A random session-id of 96 bits: the To-Path's session-id is all that binds an
    inbound connection to a session, so a stranger must not guess it (RFC 4975 §14.1
    asks for at least 80 bits of randomness)."""
    return secrets.token_hex(12)


class MSRPSessionState:
    """One MSRP session's protocol state (paths, reassembly, outgoing messages)."""

    __slots__ = (
        "session_id",
        "local_uri",
        "use_path",
        "remote_path",
        "accept_types",
        "max_message_size",
        "peer_accept_types",
        "peer_max_size",
        "status",
        "connection",
        "incoming",
        "outgoing",
    )

    def __init__(
        self,
        local_uri: MSRPURI,
        *,
        use_path: tuple[MSRPURI, ...] = (),
        remote_path: tuple[MSRPURI, ...] = (),
        accept_types: tuple[str, ...] = ("*",),
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        if local_uri.session_id is None:
            raise ValueError("a session URI needs a session-id")
        self.session_id: SessionId = local_uri.session_id
        self.local_uri = local_uri
        self.use_path = use_path
        self.remote_path = remote_path
        self.accept_types = accept_types
        self.max_message_size = max_message_size
        self.peer_accept_types: tuple[str, ...] = ("*",)
        """The peer's a=accept-types; we never send other types (RFC 4975 §8.6)."""
        self.peer_max_size: int | None = None
        """The peer's a=max-size in bytes, if it gave one (RFC 4975 §8.6)."""
        self.status = SessionStatus.NEW
        self.connection: MSRPConnection | None = None
        self.incoming: dict[MSRPMessageId, Reassembly] | None = None
        self.outgoing: dict[MSRPMessageId, OutgoingMessage] | None = None

    @property
    def local_path(self) -> tuple[MSRPURI, ...]:
        """The a=path to advertise in SDP: relay Use-Path then our URI (RFC 4976 §5.1)."""
        return (*self.use_path, self.local_uri)

    @property
    def route(self) -> tuple[MSRPURI, ...]:
        """To-Path of our requests: our relays, then the peer's a=path."""
        return (*self.use_path, *self.remote_path)

    def accepts(self, content_type: str) -> bool:
        """True when ``content_type`` matches our accept-types (``*``, ``type/*``)."""
        return type_accepted(self.accept_types, content_type)

    def transition(self, event: SessionInput) -> StateChanged | None:
        """Apply ``event`` via TRANSITIONS; raises ProtocolError on an illegal one."""
        new = TRANSITIONS.get((self.status, event))
        if new is None:
            raise ProtocolError(f"illegal MSRP session event {event.value} in {self.status.value}")
        old, self.status = self.status, new
        if old is new:
            return None
        if new is SessionStatus.CLOSED and self.connection is not None:
            self.connection.sessions.pop(self.session_id, None)
            self.connection = None
        return StateChanged(self.session_id, old, new)
