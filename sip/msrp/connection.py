"""Sans-I/O MSRP engine: one object per TCP connection, many sessions on it (RFC 4975, 4976).

# Why this shape
#
# ``MSRPConnection`` follows h11/h2: ``receive_data(data, now)`` returns
# events, ``send_*()`` return the bytes to write, and bytes the engine must
# write by itself (responses, REPORTs, further chunks of a windowed message)
# accumulate in ``data_to_send()``. No I/O, no clock: ``now`` is passed in and
# ``next_deadline()``/``handle_timeout(now)`` let the transport arm one timer
# per connection instead of one per transaction.
#
# Sessions (``MSRPSessionState``, sip.msrp.session) are plain slotted objects,
# cheap when idle: reassembly and outgoing tables are created on first use. An
# inbound frame is matched by the session-id of its first To-Path URI
# ("sessmatch", docs/protocol-mapping.md "Interoperability rules"), via the
# ``resolver`` for sessions not yet bound to any connection; unknown sessions
# get 481, sessions bound to another connection 506 (RFC 4975 §7.3.1, §5.4), a SEND
# whose From-Path does not end with the peer's SDP path 403 (``_from_peer``).
#
# Outgoing messages above ``chunk_size`` (10 KiB, what Kamailio's relay can
# carry per frame) are chunked with Byte-Range; at most ``window`` chunks per
# message are unanswered at a time, so a 413 stops the rest. Incoming chunks
# are reassembled per Message-ID (interleaving, reordering, ``*`` totals and
# ``#`` aborts). Failure-Report decides whether responses are sent and expected
# (``no``: none; ``partial``: errors only). A transaction that gets no response
# within ``timeout`` means the connection is dead (docs/protocol-mapping.md
# "MSRP errors"): every pending message fails with a local 408 and
# ``ConnectionBroken``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from sip.errors import MSRPError, ProtocolError
from sip.msrp.events import (
    AuthResponse,
    ChunkReceived,
    ConnectionBroken,
    Event,
    MessageAborted,
    MessageFailed,
    MessageReceived,
    MessageSent,
    ReportReceived,
    RequestRejected,
    SessionStatus,
)
from sip.msrp.message import (
    FLAG_ABORT,
    FLAG_END,
    FLAG_MORE,
    REASONS,
    ByteRange,
    MSRPMessage,
    MSRPMessageId,
    StatusHeader,
    TransactionId,
    serialize_message,
)
from sip.msrp.parser import MalformedFrame, MSRPParser
from sip.msrp.reassembly import Reassembly
from sip.msrp.session import MSRPSessionState, SessionInput, new_ident, type_accepted
from sip.msrp.uri import MSRPURI, SessionId

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_TIMEOUT",
    "DEFAULT_WINDOW",
    "MAX_PARTIAL_MESSAGES",
    "MSRPConnection",
    "OutgoingMessage",
]

DEFAULT_CHUNK_SIZE = 10 * 1024
DEFAULT_WINDOW = 16
DEFAULT_TIMEOUT = 30.0
MAX_PARTIAL_MESSAGES = 32
"""Messages being reassembled at once per session; more get 413."""


class OutgoingMessage:
    """One message being sent: the chunks written so far and those unanswered."""

    __slots__ = ("message_id", "session", "content_type", "body", "offset", "pending", "policy")

    def __init__(
        self,
        message_id: MSRPMessageId,
        session: MSRPSessionState,
        content_type: str | None,
        body: bytes | None,
        policy: tuple[tuple[str, str], ...],
    ) -> None:
        self.message_id = message_id
        self.session = session
        self.content_type = content_type
        self.body = body
        self.offset = 0
        self.pending = 0
        self.policy = policy


class _Transaction:
    __slots__ = ("outgoing", "deadline", "auth", "chunk_end")

    def __init__(self, outgoing: OutgoingMessage | None, deadline: float, chunk_end: int) -> None:
        self.outgoing = outgoing
        self.deadline = deadline
        self.auth = outgoing is None
        self.chunk_end = chunk_end


def _respond_to(failure_report: str, status: int) -> bool:
    return failure_report == "yes" or (failure_report == "partial" and status != 200)


class MSRPConnection:
    """Sans-I/O MSRP over one connection (RFC 4975 §7): events in, bytes out."""

    def __init__(
        self,
        *,
        resolver: Callable[[SessionId], MSRPSessionState | None] = lambda _sid: None,
        sessmatch: bool = True,
        exclusive_binding: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        window: int = DEFAULT_WINDOW,
        timeout: float = DEFAULT_TIMEOUT,
        max_frame_size: int | None = None,  # sip.limits.current().msrp_frame_size
        new_id: Callable[[], str] = new_ident,
    ) -> None:
        if chunk_size < 1 or window < 1:
            raise ValueError("chunk_size and window must be positive")
        self.sessions: dict[SessionId, MSRPSessionState] = {}
        self._resolver = resolver
        self._sessmatch = sessmatch
        self._exclusive = exclusive_binding
        self._chunk = chunk_size
        self._window = window
        self._timeout = timeout
        self._new_id = new_id
        self._parser = MSRPParser(max_frame_size=max_frame_size)
        self._outbox: list[bytes] = []
        # OrderedDict: finding the oldest entry stays O(1) after many deletions
        self._timed: OrderedDict[TransactionId, _Transaction] = OrderedDict()
        self._untimed: OrderedDict[TransactionId, _Transaction] = OrderedDict()
        self._now = 0.0
        self.frames_received = 0
        """Frames parsed so far (malformed ones included): counted by the I/O side."""
        self.frames_sent = 0
        """Frames serialized so far (requests, responses, REPORTs)."""

    # -- outgoing ---------------------------------------------------------------

    def attach(self, session: MSRPSessionState) -> None:
        """Bind ``session`` to this connection for sending (active side / relay)."""
        if session.connection is not None and session.connection is not self:
            raise ProtocolError(f"MSRP session {session.session_id} is bound elsewhere")
        session.connection = self
        self.sessions[session.session_id] = session

    def detach(self, session: MSRPSessionState) -> list[Event]:
        """Forget ``session`` here; its unfinished messages fail with a local 481."""
        events: list[Event] = []
        for tid, tr in list(self._timed.items()) + list(self._untimed.items()):
            if tr.outgoing is not None and tr.outgoing.session is session:
                self._timed.pop(tid, None)
                self._untimed.pop(tid, None)
        for out in list((session.outgoing or {}).values()):
            events.append(
                MessageFailed(session.session_id, out.message_id, 481, "Session closed", True)
            )
        session.outgoing = None
        if session.connection is self:
            session.connection = None
        self.sessions.pop(session.session_id, None)
        return events

    def send_bind(self, session: MSRPSessionState, now: float) -> tuple[MSRPMessageId, bytes]:
        """An empty SEND that binds the connection to ``session`` (RFC 4975 §5.4)."""
        session.transition(SessionInput.SEND_BIND)
        return self._start(session, None, None, None, True, "yes", now)

    def send_message(
        self,
        session: MSRPSessionState,
        content_type: str,
        body: bytes,
        now: float,
        *,
        message_id: str | None = None,
        success_report: bool = False,
        failure_report: str = "yes",
    ) -> tuple[MSRPMessageId, bytes]:
        """The first chunks of a SEND; later chunks go to ``data_to_send()`` (RFC 4975 §7.1).

        Raises MSRPError 415/413 (local) for a type or size the peer's SDP excludes.
        """
        if session.status not in (SessionStatus.BINDING, SessionStatus.BOUND):
            raise ProtocolError(f"MSRP session {session.session_id} is {session.status.value}")
        if failure_report not in ("yes", "no", "partial"):
            raise ValueError(f"invalid Failure-Report: {failure_report!r}")
        if not type_accepted(session.peer_accept_types, content_type):
            raise MSRPError(415, f"peer does not accept {content_type}", local=True)
        if session.peer_max_size is not None and len(body) > session.peer_max_size:
            raise MSRPError(
                413, f"message exceeds the peer's max-size {session.peer_max_size}", local=True
            )
        return self._start(
            session, message_id, content_type, body, success_report, failure_report, now
        )

    def send_keepalive(self, session: MSRPSessionState, now: float) -> tuple[MSRPMessageId, bytes]:
        """An empty SEND that proves the connection alive (answered 200)."""
        return self._start(session, None, None, None, False, "yes", now)

    def send_auth(
        self,
        relay: MSRPURI,
        local_uri: MSRPURI,
        now: float,
        *,
        expires: int | None = None,
        authorization: str | None = None,
    ) -> tuple[TransactionId, bytes]:
        """An AUTH request to ``relay`` (RFC 4976 §5.1); the answer is an AuthResponse event."""
        tid = TransactionId(self._new_id())
        headers: list[tuple[str, str]] = [("Message-ID", self._new_id())]
        if authorization is not None:
            headers.append(("Authorization", authorization))
        if expires is not None:
            headers.append(("Expires", str(expires)))
        msg = MSRPMessage(
            tid, "AUTH", to_path=(relay,), from_path=(local_uri,), headers=tuple(headers)
        )
        self._timed[tid] = _Transaction(None, now + self._timeout, 0)
        self.frames_sent += 1
        return tid, serialize_message(msg)

    def data_to_send(self) -> bytes:
        """Bytes the engine produced by itself since the last call (responses, chunks)."""
        data = b"".join(self._outbox)
        self._outbox.clear()
        return data

    def _start(
        self,
        session: MSRPSessionState,
        message_id: str | None,
        content_type: str | None,
        body: bytes | None,
        success_report: bool,
        failure_report: str,
        now: float,
    ) -> tuple[MSRPMessageId, bytes]:
        if not session.remote_path:
            raise ProtocolError(f"MSRP session {session.session_id} has no remote path")
        self.attach(session)
        self._now = now
        mid = MSRPMessageId(message_id or self._new_id())
        if session.outgoing is not None and mid in session.outgoing:
            raise ValueError(f"MSRP message {mid} is still being sent")
        policy: list[tuple[str, str]] = [("Message-ID", mid)]
        if success_report and body is not None:
            policy.append(("Success-Report", "yes"))
        if failure_report != "yes":
            policy.append(("Failure-Report", failure_report))
        out = OutgoingMessage(mid, session, content_type, body, tuple(policy))
        if session.outgoing is None:
            session.outgoing = {}
        session.outgoing[mid] = out
        frames = [self._chunk_frame(out, failure_report)]
        window = self._window if failure_report == "yes" else len(out.body or b"") + 1
        while out.body is not None and out.offset < len(out.body) and out.pending < window:
            frames.append(self._chunk_frame(out, failure_report))
        if failure_report != "yes" and out.body is not None and out.offset >= len(out.body):
            session.outgoing.pop(mid, None)  # no 200 will come: done once written
        return mid, b"".join(frames)

    def _chunk_frame(self, out: OutgoingMessage, failure_report: str) -> bytes:
        session = out.session
        tid = TransactionId(self._new_id())
        headers = list(out.policy)
        body: bytes | None = None
        flag = FLAG_END
        end = 0
        if out.body is None:
            headers.append(("Byte-Range", "1-0/0"))
        else:
            total = len(out.body)
            start = out.offset
            end = min(total, start + self._chunk)
            body = out.body[start:end]
            flag = FLAG_MORE if end < total else FLAG_END
            headers.append(("Byte-Range", f"{start + 1}-{end}/{total}"))
            out.offset = end
        msg = MSRPMessage(
            tid,
            "SEND",
            to_path=session.route,
            from_path=(session.local_uri,),
            headers=tuple(headers),
            content_type=out.content_type if body is not None else None,
            body=body,
            continuation=flag,
        )
        table = self._timed if failure_report == "yes" else self._untimed
        table[tid] = _Transaction(out, self._now + self._timeout, end)
        if len(self._untimed) > 1024:
            self._untimed.popitem(last=False)
        out.pending += 1
        self.frames_sent += 1
        return serialize_message(msg)

    # -- timers -----------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When the oldest unanswered transaction times out, or None."""
        for tr in self._timed.values():
            return tr.deadline
        return None

    def handle_timeout(self, now: float) -> list[Event]:
        """Fail everything pending with a local 408 if a transaction expired (a dead connection)."""
        deadline = self.next_deadline()
        if deadline is None or deadline > now:
            return []
        return self.connection_lost("transaction timeout", status=408)

    def connection_lost(self, reason: str, *, status: int = 408) -> list[Event]:
        """The connection is gone: fail pending messages and AUTHs, unbind sessions."""
        events: list[Event] = []
        text = REASONS.get(status, "Request Timeout")
        for tid, tr in self._timed.items():
            if tr.auth:
                events.append(AuthResponse(tid, status, text, None))
        self._timed.clear()
        self._untimed.clear()
        for session in list(self.sessions.values()):
            for out in list((session.outgoing or {}).values()):
                events.append(MessageFailed(session.session_id, out.message_id, status, text, True))
            session.outgoing = None
            session.incoming = None
            changed = session.transition(SessionInput.FAIL)
            if changed is not None:
                events.append(changed)
        self.sessions.clear()
        events.append(ConnectionBroken(reason))
        return events

    # -- incoming ---------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed received bytes; returns events. Raises CodecError if framing is lost."""
        self._now = now
        events: list[Event] = []
        for frame in self._parser.feed(data):
            self.frames_received += 1
            if isinstance(frame, MalformedFrame):
                self._on_malformed(frame, events)
            elif frame.method is None:
                self._on_response(frame, events)
            else:
                self._on_request(frame, events)
        return events

    def _respond(
        self, req: MSRPMessage, status: int, events: list[Event], *, reason: str | None = None
    ) -> None:
        text = reason or REASONS.get(status, "Error")
        if status != 200:
            events.append(RequestRejected(req.transaction_id, status, text))
        if req.method == "REPORT" or not _respond_to(req.failure_report, status):
            return  # REPORTs are never answered (RFC 4975 §7.1.2)
        resp = MSRPMessage(
            req.transaction_id,
            status=status,
            reason=text,
            to_path=(req.from_path[0],),
            from_path=(req.to_path[0],),
        )
        self.frames_sent += 1
        self._outbox.append(serialize_message(resp))

    def _on_malformed(self, frame: MalformedFrame, events: list[Event]) -> None:
        reason = f"Bad Request ({frame.error})"[:120]
        events.append(RequestRejected(frame.transaction_id, 400, reason))
        if frame.method not in (None, "REPORT") and frame.to_path and frame.from_path:
            if _respond_to(frame.failure_report, 400):
                resp = MSRPMessage(
                    frame.transaction_id,
                    status=400,
                    reason="Bad Request",
                    to_path=(frame.from_path[0],),
                    from_path=(frame.to_path[0],),
                )
                self.frames_sent += 1
                self._outbox.append(serialize_message(resp))

    def _match(self, req: MSRPMessage, events: list[Event]) -> MSRPSessionState | None:
        target = req.to_path[0]
        sid = target.session_id
        session = self.sessions.get(sid) if sid is not None else None
        if session is None and sid is not None:
            session = self._resolver(sid)
        if session is None or session.status is SessionStatus.CLOSED:
            return None
        if not self._sessmatch and not target.same_hop(session.local_uri):
            return None
        if req.method == "SEND" and not self._from_peer(session, req):
            self._respond(req, 403, events, reason="From-Path is not the session's peer")
            return None
        if session.connection is not None and session.connection is not self:
            if self._exclusive:
                self._respond(req, 506, events)
                return None
            return session  # e.g. a relay opened its own connection toward us
        if session.connection is None:
            self.attach(session)
        if session.status is not SessionStatus.BOUND:
            changed = session.transition(SessionInput.REMOTE_BIND)
            if changed is not None:
                events.append(changed)
        if not session.remote_path:
            session.remote_path = req.from_path[len(session.use_path) :] or req.from_path
        return session

    def _from_peer(self, session: MSRPSessionState, req: MSRPMessage) -> bool:
        """Whether a SEND comes from the peer the SDP named: the last From-Path URI (the
        sender; relays come before it) is the last URI of the peer's a=path (RFC 4975
        §7.3, §8.2), by session-id under sessmatch (an SBC may rewrite the authority,
        docs/protocol-mapping.md "Interoperability rules"), else by RFC 4975 §6.1. Before
        the SDP is known (the peer's first SEND raced our 2xx) there is nothing to check:
        the To-Path's random session-id is all a stranger could present."""
        if not session.remote_path or not req.from_path:
            return True
        sender, peer = req.from_path[-1], session.remote_path[-1]
        if self._sessmatch:
            return sender.session_id == peer.session_id
        return sender.same_hop(peer)

    def _on_request(self, req: MSRPMessage, events: list[Event]) -> None:
        if req.method not in ("SEND", "REPORT"):
            self._respond(req, 501, events)
            return
        before = len(events)
        session = self._match(req, events)
        if session is None:
            if len(events) == before:  # not already answered 506
                self._respond(req, 481, events)
            return
        if req.method == "REPORT":
            self._on_report(session, req, events)
        else:
            self._on_send(session, req, events)

    def _on_report(self, session: MSRPSessionState, req: MSRPMessage, events: list[Event]) -> None:
        mid = req.message_id
        status = req.status_header or StatusHeader(200, "OK")
        if mid is None:
            events.append(RequestRejected(req.transaction_id, 400, "REPORT without Message-ID"))
            return
        events.append(
            ReportReceived(session.session_id, mid, status.code, status.reason, req.byte_range)
        )
        out = (session.outgoing or {}).get(mid)
        if status.code != 200 and out is not None:
            self._fail(out, status.code, status.reason, events)

    def _on_send(self, session: MSRPSessionState, req: MSRPMessage, events: list[Event]) -> None:
        mid = req.message_id
        body = req.body
        if body is None or (not body and req.content_type is None):
            self._respond(req, 200, events)  # bind or keep-alive (RFC 4975 §5.4)
            if mid is not None and req.continuation == FLAG_ABORT:
                self._abort(session, mid, events)
            return
        if mid is None:
            self._respond(req, 400, events, reason="Bad Request (no Message-ID)")
            return
        br = req.byte_range or ByteRange(
            1, len(body), len(body) if req.continuation == "$" else None
        )
        if br.end is not None and br.end - br.start + 1 != len(body):
            self._respond(req, 400, events, reason="Bad Request (Byte-Range does not match body)")
            return
        incoming = session.incoming
        if incoming is None:
            incoming = session.incoming = {}
        asm = incoming.get(mid)
        if asm is None:
            ctype = req.content_type
            if ctype is not None and not session.accepts(ctype):
                self._respond(req, 415, events)
                return
            if len(incoming) >= MAX_PARTIAL_MESSAGES:
                self._respond(req, 413, events)
                return
            asm = incoming[mid] = Reassembly(ctype)
        if asm.content_type is None and req.content_type is not None:
            asm.content_type = req.content_type
        error = asm.add(br.start, body, br.total, req.continuation, session.max_message_size)
        if error is not None:
            incoming.pop(mid, None)
            self._respond(req, 413, events, reason=error)
            return
        self._respond(req, 200, events)
        if req.continuation == FLAG_ABORT:
            self._abort(session, mid, events)
        elif asm.complete:
            del incoming[mid]
            if not incoming:
                session.incoming = None
            content = asm.result()
            events.append(MessageReceived(session.session_id, mid, asm.content_type or "", content))
            if req.success_report:
                self._report(req, mid, len(content))
        else:
            events.append(ChunkReceived(session.session_id, mid, asm.received, asm.total))

    def _abort(self, session: MSRPSessionState, mid: MSRPMessageId, events: list[Event]) -> None:
        if session.incoming is not None and session.incoming.pop(mid, None) is not None:
            events.append(MessageAborted(session.session_id, mid))

    def _report(self, req: MSRPMessage, mid: MSRPMessageId, total: int) -> None:
        report = MSRPMessage(
            TransactionId(self._new_id()),
            "REPORT",
            to_path=req.from_path,
            from_path=(req.to_path[0],),
            headers=(
                ("Message-ID", mid),
                ("Byte-Range", f"1-{total}/{total}"),
                ("Status", "000 200 OK"),
            ),
        )
        self.frames_sent += 1
        self._outbox.append(serialize_message(report))

    def _on_response(self, resp: MSRPMessage, events: list[Event]) -> None:
        tid = resp.transaction_id
        timed = self._timed.pop(tid, None)
        tr = timed or self._untimed.pop(tid, None)
        if tr is None:
            return  # late answer to a transaction we gave up on (RFC 4975 §7.3)
        status = resp.status or 0
        if tr.outgoing is None:
            events.append(AuthResponse(tid, status, resp.reason or "", resp))
            return
        out = tr.outgoing
        out.pending -= 1
        session = out.session
        if timed is None:  # Failure-Report partial/no: only errors are answered
            if status != 200:
                self._fail(out, status, resp.reason or REASONS.get(status, ""), events)
            return
        if session.outgoing is None or session.outgoing.get(out.message_id) is not out:
            return  # message already failed or finished
        if status != 200:
            self._fail(out, status, resp.reason or REASONS.get(status, ""), events)
            return
        if session.status is SessionStatus.BINDING:
            changed = session.transition(SessionInput.BIND_OK)
            if changed is not None:
                events.append(changed)
        policy = dict(out.policy).get("Failure-Report", "yes")
        while out.body is not None and out.offset < len(out.body) and out.pending < self._window:
            self._outbox.append(self._chunk_frame(out, policy))
        if out.pending == 0 and (out.body is None or out.offset >= len(out.body)):
            del session.outgoing[out.message_id]
            if not session.outgoing:
                session.outgoing = None  # idle sessions keep no empty tables
            events.append(MessageSent(session.session_id, out.message_id))

    def _fail(self, out: OutgoingMessage, status: int, reason: str, events: list[Event]) -> None:
        session = out.session
        if session.outgoing is not None:
            session.outgoing.pop(out.message_id, None)
        for table in (self._timed, self._untimed):
            for tid in [t for t, tr in table.items() if tr.outgoing is out]:
                del table[tid]
        events.append(MessageFailed(session.session_id, out.message_id, status, reason, False))
