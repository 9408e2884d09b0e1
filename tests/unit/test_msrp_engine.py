"""Sans-I/O MSRP engine: two engines over in-memory pipes, with loss and reordering (RFC 4975)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.auth import DigestClient, make_challenge, parse_credentials, verify
from sip.errors import CodecError, MSRPError, ProtocolError
from sip.msrp.connection import MSRPConnection
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
    StateChanged,
)
from sip.msrp.message import (
    MSRPMessage,
    MSRPMessageId,
    TransactionId,
    parse_message,
    serialize_message,
)
from sip.msrp.parser import MSRPParser
from sip.msrp.reassembly import Reassembly
from sip.msrp.relay import RelayConfig, authorization_for, binding_from, retry_expires
from sip.msrp.session import TRANSITIONS, MSRPSessionState, SessionInput
from sip.msrp.uri import MSRPURI, SessionId, parse_uri

T = TypeVar("T")
SAMPLES = [
    p.read_bytes()
    for p in sorted((Path(__file__).parent.parent / "fixtures" / "msrp").glob("*.msrp"))
]
A_SID, B_SID = SessionId("alice1"), SessionId("bob22")
SM = MSRPMessageId("stream01")
A_URI = MSRPURI("127.0.0.1", 1000, A_SID)
B_URI = MSRPURI("127.0.0.1", 2000, B_SID)


class Pair:
    """Engine A (active, alice1) and engine B (passive, resolves bob22)."""

    def __init__(self, **kw) -> None:
        self.a = MSRPSessionState(A_URI, remote_path=(B_URI,))
        self.b = MSRPSessionState(B_URI, accept_types=kw.pop("accept_types", ("*",)))
        self.ca = MSRPConnection(**kw)
        self.cb = MSRPConnection(resolver=lambda sid: self.b if sid == "bob22" else None, **kw)
        self.now = 0.0

    def to_b(self, data: bytes) -> list[Event]:
        return self.cb.receive_data(data, self.now)

    def to_a(self, data: bytes) -> list[Event]:
        return self.ca.receive_data(data, self.now)

    def pump(self, data: bytes) -> tuple[list[Event], list[Event]]:
        """Deliver A's bytes to B and every answer back until quiet."""
        ev_a: list[Event] = []
        ev_b: list[Event] = []
        for _ in range(1000):
            if not data:
                break
            ev_b += self.to_b(data)
            ev_a += self.to_a(self.cb.data_to_send())
            data = self.ca.data_to_send()
        return ev_a, ev_b

    def bind(self) -> None:
        _mid, data = self.ca.send_bind(self.a, self.now)
        ev_a, ev_b = self.pump(data)
        assert StateChanged(SessionId("bob22"), SessionStatus.NEW, SessionStatus.BOUND) in ev_b
        assert self.a.status is SessionStatus.BOUND and self.b.status is SessionStatus.BOUND


def only(events: list[Event], kind: type[T]) -> list[T]:
    return [e for e in events if isinstance(e, kind)]


def frames(data: bytes) -> list[MSRPMessage]:
    out = MSRPParser().feed(data)
    assert all(isinstance(f, MSRPMessage) for f in out)
    return out  # type: ignore[return-value]


def test_bind_then_messages_both_ways():
    p = Pair()
    p.bind()
    assert p.b.remote_path == (A_URI,)
    mid, data = p.ca.send_message(p.a, "text/plain", b"hello", p.now)
    ev_a, ev_b = p.pump(data)
    assert only(ev_b, MessageReceived) == [MessageReceived(B_SID, mid, "text/plain", b"hello")]
    assert only(ev_a, MessageSent) == [MessageSent(A_SID, mid)]
    mid2, data = p.cb.send_message(p.b, "text/plain", "h\u00e9".encode(), p.now)
    back = p.to_a(data)
    assert only(back, MessageReceived)[0].body == "h\u00e9".encode()
    assert only(p.to_b(p.ca.data_to_send()), MessageSent) == [MessageSent(B_SID, mid2)]
    assert p.ca.next_deadline() is None and p.cb.next_deadline() is None


def test_response_paths_and_header_order():
    p = Pair()
    _mid, data = p.ca.send_bind(p.a, 0)
    (req,) = frames(data)
    assert data.split(b"\r\n")[1].startswith(b"To-Path:")
    assert data.split(b"\r\n")[2].startswith(b"From-Path:")
    assert req.byte_range is not None and str(req.byte_range) == "1-0/0" and req.body is None
    p.to_b(data)
    (resp,) = frames(p.cb.data_to_send())
    assert resp.status == 200 and resp.transaction_id == req.transaction_id
    assert resp.to_path == (A_URI,) and resp.from_path == (B_URI,)


def test_100k_chunked_with_window_and_progress():
    p = Pair(window=4)
    p.bind()
    body = random.Random(7).randbytes(100 * 1024)
    mid, data = p.ca.send_message(p.a, "application/octet-stream", body, 0, success_report=True)
    first = frames(data)
    assert len(first) == 4 and all(f.continuation == "+" for f in first)
    ev_a, ev_b = p.pump(data)
    progress = only(ev_b, ChunkReceived)
    assert [c.received for c in progress] == [10240 * i for i in range(1, 10)]
    assert progress[0].total == 102400
    (msg,) = only(ev_b, MessageReceived)
    assert msg.body == body and msg.message_id == mid
    assert only(ev_a, MessageSent) == [MessageSent(A_SID, mid)]
    (rep,) = only(ev_a, ReportReceived)
    assert rep.status == 200 and rep.byte_range is not None and rep.byte_range.total == 102400


def test_chunk_size_is_bounded():
    p = Pair(chunk_size=1000, window=100)
    p.bind()
    _mid, data = p.ca.send_message(p.a, "text/plain", b"z" * 3500, 0)
    sizes = [len(f.body or b"") for f in frames(data)]
    assert sizes == [1000, 1000, 1000, 500]
    ranges = [str(f.byte_range) for f in frames(data)]
    assert ranges == ["1-1000/3500", "1001-2000/3500", "2001-3000/3500", "3001-3500/3500"]


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False))
def test_interleaved_and_reordered_chunks_reassemble(rnd: random.Random):
    p = Pair(chunk_size=100, window=1000)
    p.bind()
    bodies = [rnd.randbytes(rnd.randint(1, 700)) for _ in range(3)]
    sent = [p.ca.send_message(p.a, "text/plain", b, 0) for b in bodies]
    all_frames = [f for _mid, data in sent for f in frames(data)]
    rnd.shuffle(all_frames)
    events: list[Event] = []
    for f in all_frames:
        events += p.to_b(serialize_message(f))
    got = {m.message_id: m.body for m in only(events, MessageReceived)}
    assert got == {mid: body for (mid, _data), body in zip(sent, bodies, strict=True)}
    acks = p.to_a(p.cb.data_to_send())
    assert len(only(acks, MessageSent)) == 3


def test_star_totals_and_duplicates():
    p = Pair()
    p.bind()
    base = (
        "MSRP {tid} SEND\r\nTo-Path: {to}\r\nFrom-Path: {fr}\r\nMessage-ID: stream01\r\n"
        "Byte-Range: {br}\r\nContent-Type: text/plain\r\n\r\n{body}\r\n-------{tid}{flag}\r\n"
    )

    def chunk(tid: str, br: str, body: str, flag: str) -> bytes:
        return base.format(tid=tid, to=B_URI, fr=A_URI, br=br, body=body, flag=flag).encode()

    ev = p.to_b(chunk("tid00001", "1-*/*", "abc", "+"))
    assert only(ev, ChunkReceived) == [ChunkReceived(B_SID, SM, 3, None)]
    ev = p.to_b(chunk("tid00002", "1-3/*", "abc", "+"))  # duplicate
    assert only(ev, ChunkReceived)[0].received == 3
    ev = p.to_b(chunk("tid00003", "4-*/*", "defg", "$"))
    assert only(ev, MessageReceived) == [MessageReceived(B_SID, SM, "text/plain", b"abcdefg")]
    statuses = [f.status for f in frames(p.cb.data_to_send())]
    assert statuses == [200, 200, 200]


def test_abort_drops_partial_message():
    p = Pair(chunk_size=10)
    p.bind()
    mid, data = p.ca.send_message(p.a, "text/plain", b"x" * 25, 0)
    first = frames(data)[0]
    p.to_b(serialize_message(first))
    aborted = MSRPMessage(
        TransactionId("abort001"),
        "SEND",
        to_path=(B_URI,),
        from_path=(A_URI,),
        headers=(("Message-ID", mid), ("Byte-Range", "11-20/25")),
        content_type="text/plain",
        body=b"y" * 10,
        continuation="#",
    )
    ev = p.to_b(serialize_message(aborted))
    assert only(ev, MessageAborted) == [MessageAborted(B_SID, mid)]
    assert not only(ev, MessageReceived)
    assert p.b.incoming == {}


def test_keepalive_and_empty_message():
    p = Pair()
    p.bind()
    keepalive = (
        b"MSRP ka12ab34 SEND\r\nTo-Path: msrp://127.0.0.1:2000/bob22;tcp\r\n"
        b"From-Path: msrp://127.0.0.1:1000/alice1;tcp\r\nMessage-ID: kamsg001\r\n"
        b"Keep-Alive: yes\r\n-------ka12ab34$\r\n"
    )
    assert p.to_b(keepalive) == []
    assert frames(p.cb.data_to_send())[0].status == 200
    mid, data = p.ca.send_message(p.a, "text/plain", b"", 0)
    ev_a, ev_b = p.pump(data)
    assert only(ev_b, MessageReceived) == [MessageReceived(B_SID, mid, "text/plain", b"")]
    assert only(ev_a, MessageSent)
    _kid, data = p.ca.send_keepalive(p.a, 0)
    ev_a, ev_b = p.pump(data)
    assert len(only(ev_a, MessageSent)) == 1 and not ev_b


def raw_send(tid: str, to: MSRPURI, extra: str = "", body: str | None = "hi", **kw: str) -> bytes:
    headers = kw.get("headers", "Message-ID: m00001\r\nByte-Range: 1-2/2\r\n")
    text = f"MSRP {tid} {kw.get('method', 'SEND')}\r\nTo-Path: {to}\r\nFrom-Path: {A_URI}\r\n"
    text += headers + extra
    if body is not None:
        text += f"Content-Type: {kw.get('ctype', 'text/plain')}\r\n\r\n{body}\r\n"
    return (text + f"-------{tid}$\r\n").encode()


def answer(p: Pair, data: bytes) -> tuple[list[Event], list[int | None]]:
    ev = p.to_b(data)
    return ev, [f.status for f in frames(p.cb.data_to_send())]


def test_unknown_session_481_and_failure_report_policy():
    p = Pair()
    ghost = MSRPURI("127.0.0.1", 2000, SessionId("nobody"))
    ev, st_ = answer(p, raw_send("t0000001", ghost))
    assert st_ == [481] and only(ev, RequestRejected)[0].status == 481
    _ev, st_ = answer(p, raw_send("t0000002", ghost, "Failure-Report: no\r\n"))
    assert st_ == []
    _ev, st_ = answer(p, raw_send("t0000003", ghost, "Failure-Report: partial\r\n"))
    assert st_ == [481]
    hdr = "Message-ID: m00001\r\nStatus: 000 200 OK\r\n"
    rep = raw_send("t0000006", ghost, headers=hdr, body=None)
    ev, st_ = answer(p, rep.replace(b" SEND", b" REPORT"))
    assert st_ == [] and only(ev, RequestRejected)[0].status == 481
    _ev, st_ = answer(p, raw_send("t0000004", B_URI, "Failure-Report: partial\r\n"))
    assert st_ == []  # success is not answered with partial
    _ev, st_ = answer(
        p, raw_send("t0000005", B_URI, "Failure-Report: no\r\n", headers="Byte-Range: 1-2/2\r\n")
    )
    assert st_ == []  # even errors are not answered with no


@pytest.mark.parametrize(
    ("frame", "status"),
    [
        (raw_send("t1000001", B_URI, headers="Byte-Range: 1-2/2\r\n"), 400),  # no Message-ID
        (raw_send("t1000002", B_URI, headers="Message-ID: m00001\r\nByte-Range: 1-5/5\r\n"), 400),
        (raw_send("t1000003", B_URI, headers="Message-ID: m00001\r\nByte-Range: bad\r\n"), 400),
        (raw_send("t1000004", B_URI, method="NICKNAME", body=None), 501),
        (raw_send("t1000005", B_URI, method="AUTH", body=None), 501),
        (raw_send("t1000006", B_URI, ctype="image/png"), 415),
        (
            raw_send(
                "t1000007", B_URI, headers="Message-ID: m00001\r\nByte-Range: 1-2/99999999\r\n"
            ),
            413,
        ),
        (raw_send("t1000008", B_URI, headers="Message-ID: m00001\r\n"), 200),  # no Byte-Range
    ],
)
def test_error_responses(frame: bytes, status: int):
    p = Pair(accept_types=("text/*", "message/cpim"))
    p.b.max_message_size = 1000
    _ev, statuses = answer(p, frame)
    assert statuses == [status]


def test_too_many_partial_messages_413():
    p = Pair()
    statuses = []
    for i in range(40):
        hdr = f"Message-ID: part{i:04d}\r\nByte-Range: 1-2/10\r\n"
        _ev, st_ = answer(p, raw_send(f"tp{i:06d}", B_URI, headers=hdr))
        statuses += st_
    assert statuses.count(200) == 32 and statuses[32:] == [413] * 8


def test_session_bound_elsewhere_506_and_sessmatch():
    p = Pair()
    p.bind()
    other = MSRPConnection(
        resolver=lambda sid: p.b if sid == "bob22" else None, exclusive_binding=True
    )
    other.receive_data(raw_send("t2000001", B_URI), 0)
    assert [f.status for f in frames(other.data_to_send())] == [506]
    lenient = MSRPConnection(resolver=lambda sid: p.b if sid == "bob22" else None)
    ev = lenient.receive_data(raw_send("t2000004", B_URI), 0)
    assert [f.status for f in frames(lenient.data_to_send())] == [200]
    assert only(ev, MessageReceived)[0].body == b"hi"
    assert p.b.connection is p.cb and not lenient.sessions
    moved = MSRPURI("10.9.9.9", 4444, SessionId("bob22"))  # SBC rewrote the authority
    _ev, st_ = answer(p, raw_send("t2000002", moved))
    assert st_ == [200]
    strict = Pair(sessmatch=False)
    _ev, st_ = answer(strict, raw_send("t2000003", moved))
    assert st_ == [481]


def test_error_response_fails_message_and_stops_chunks():
    p = Pair(chunk_size=10, window=2)
    p.bind()
    mid, data = p.ca.send_message(p.a, "text/plain", b"q" * 100, 0)
    first, _second = frames(data)
    resp = MSRPMessage(
        first.transaction_id, status=413, reason="Too Big", to_path=(A_URI,), from_path=(B_URI,)
    )
    ev = p.to_a(serialize_message(resp))
    assert only(ev, MessageFailed) == [MessageFailed(A_SID, mid, 413, "Too Big", False)]
    assert p.ca.data_to_send() == b""
    assert p.ca.next_deadline() is None


def test_failure_report_from_report():
    p = Pair(window=1)
    p.bind()
    mid, _data = p.ca.send_message(p.a, "text/plain", b"x" * 30000, 0, success_report=True)
    report = MSRPMessage(
        TransactionId("rep00001"),
        "REPORT",
        to_path=(A_URI,),
        from_path=(B_URI,),
        headers=(
            ("Message-ID", mid),
            ("Byte-Range", "1-10240/30000"),
            ("Status", "000 403 Forbidden"),
        ),
    )
    ev = p.to_a(serialize_message(report))
    assert only(ev, ReportReceived)[0].status == 403
    assert only(ev, MessageFailed) == [MessageFailed(A_SID, mid, 403, "Forbidden", False)]
    assert p.ca.data_to_send() == b""  # REPORTs get no response


def test_failure_report_no_and_partial_are_not_tracked():
    p = Pair()
    p.bind()
    _mid, data = p.ca.send_message(p.a, "text/plain", b"x" * 25000, 0, failure_report="no")
    assert len(frames(data)) == 3 and p.ca.next_deadline() is None
    assert p.a.outgoing == {}
    ev_a, ev_b = p.pump(data)
    assert len(only(ev_b, MessageReceived)) == 1 and not ev_a
    mid, data = p.ca.send_message(p.a, "image/png", b"x", 0, failure_report="partial")
    p.b.accept_types = ("text/plain",)
    ev_a, _ev_b = p.pump(data)
    assert only(ev_a, MessageFailed) == [
        MessageFailed(A_SID, mid, 415, "Unsupported Media Type", False)
    ]
    with pytest.raises(ValueError, match="invalid Failure-Report"):
        p.ca.send_message(p.a, "text/plain", b"x", 0, failure_report="sometimes")


def test_lost_chunk_times_out_with_local_408():
    p = Pair(chunk_size=10, timeout=30.0)
    p.bind()
    mid, data = p.ca.send_message(p.a, "text/plain", b"x" * 30, 5.0)
    chunks = frames(data)
    for f in chunks[:2]:  # the last chunk is lost
        p.to_a(p.cb.data_to_send() or b"")
        p.to_b(serialize_message(f))
    p.to_a(p.cb.data_to_send())
    assert p.ca.next_deadline() == 35.0
    assert p.ca.handle_timeout(34.9) == []
    ev = p.ca.handle_timeout(35.0)
    assert only(ev, MessageFailed) == [MessageFailed(A_SID, mid, 408, "Request Timeout", True)]
    assert only(ev, ConnectionBroken) == [ConnectionBroken("transaction timeout")]
    assert p.a.status is SessionStatus.CLOSED and p.a.connection is None
    with pytest.raises(ProtocolError):
        p.ca.send_message(p.a, "text/plain", b"x", 40.0)


def test_late_or_unknown_responses_are_ignored():
    p = Pair()
    stray = MSRPMessage(
        TransactionId("nope0001"), status=200, reason="OK", to_path=(A_URI,), from_path=(B_URI,)
    )
    assert p.to_a(serialize_message(stray)) == []


def test_malformed_request_gets_400_and_report_never_answered():
    p = Pair()
    bad = (
        b"MSRP bad00001 SEND\r\nTo-Path: msrp://127.0.0.1:2000/bob22;tcp\r\n"
        b"From-Path: msrp://127.0.0.1:1000/alice1;tcp\r\nByte-Range: x\r\n-------bad00001$\r\n"
    )
    ev, statuses = answer(p, bad)
    assert statuses == [400] and only(ev, RequestRejected)[0].status == 400
    rep = bad.replace(b" SEND", b" REPORT")
    ev, statuses = answer(p, rep)
    assert statuses == [] and only(ev, RequestRejected)


def test_detach_and_connection_lost_fail_pending():
    p = Pair()
    p.bind()
    mid, _ = p.ca.send_message(p.a, "text/plain", b"x", 0)
    ev = p.ca.detach(p.a)
    assert ev == [MessageFailed(A_SID, mid, 481, "Session closed", True)]
    p.a.status = SessionStatus.NEW
    _mid, _ = p.ca.send_bind(p.a, 0)
    tid, _auth = p.ca.send_auth(parse_uri("msrp://127.0.0.1:2855;tcp"), A_URI, 0)
    ev = p.ca.connection_lost("connection lost")
    assert AuthResponse(tid, 408, "Request Timeout", None) in ev
    assert len(only(ev, MessageFailed)) == 1 and ev[-1] == ConnectionBroken("connection lost")


def test_auth_exchange_and_relay_binding():
    c = MSRPConnection(new_id=iter(["auth0001", "authm001"]).__next__)
    relay = parse_uri("msrp://127.0.0.1:2855;tcp")
    local = parse_uri("msrp://127.0.0.1:40000/mysession;tcp")
    tid, data = c.send_auth(relay, local, 0.0, expires=600)
    assert tid == "auth0001"
    sample = parse_message(data)
    assert sample.method == "AUTH" and sample.expires == 600 and sample.to_path == (relay,)
    resp = (
        b"MSRP auth0001 200 OK\r\nTo-Path: msrp://127.0.0.1:40000/mysession;tcp\r\n"
        b"From-Path: msrp://127.0.0.1:2855;tcp\r\nUse-Path: msrp://127.0.0.1:2855/r1;tcp\r\n"
        b"Expires: 600\r\n-------auth0001$\r\n"
    )
    (ev,) = c.receive_data(resp, 1.0)
    assert isinstance(ev, AuthResponse) and ev.status == 200
    binding = binding_from(ev, 1.0)
    assert binding.use_path == (parse_uri("msrp://127.0.0.1:2855/r1;tcp"),)
    assert binding.refresh_at == 481.0
    assert retry_expires(ev) is None
    too_short = parse_message(
        resp.replace(b"200 OK", b"423 Interval Out-of-Bounds").replace(
            b"Expires: 600", b"Min-Expires: 60"
        )
    )
    assert retry_expires(AuthResponse(tid, 423, "x", too_short)) == 60
    with pytest.raises(MSRPError) as info:
        binding_from(AuthResponse(tid, 423, "Interval Out-of-Bounds", too_short), 0)
    assert info.value.status == 423 and not info.value.local
    with pytest.raises(MSRPError) as info:
        binding_from(AuthResponse(tid, 401, "Unauthorized", too_short), 0)
    assert info.value.status == 401
    assert RelayConfig.from_string("msrp://r.example:2855;tcp", expires=60).uri.port == 2855


@given(st.sampled_from(list(SessionStatus)), st.sampled_from(list(SessionInput)))
def test_every_state_input_pair_is_legal_or_raises(status: SessionStatus, event: SessionInput):
    state = MSRPSessionState(A_URI)
    state.status = status
    expected = TRANSITIONS.get((status, event))
    if expected is None:
        with pytest.raises(ProtocolError, match="illegal MSRP session event"):
            state.transition(event)
        assert state.status is status
    else:
        changed = state.transition(event)
        assert state.status is expected
        assert (changed is None) == (expected is status)


def test_session_helpers():
    s = MSRPSessionState(A_URI, accept_types=("message/cpim", "text/*"))
    assert s.accepts("Message/CPIM") and s.accepts("text/plain;charset=utf-8")
    assert not s.accepts("image/png")
    s.use_path = (parse_uri("msrp://r:2855/x;tcp"),)
    s.remote_path = (B_URI,)
    assert s.local_path == (s.use_path[0], A_URI) and s.route == (s.use_path[0], B_URI)
    with pytest.raises(ValueError):
        MSRPSessionState(parse_uri("msrp://r:2855;tcp"))
    with pytest.raises(ValueError):
        MSRPConnection(chunk_size=0)
    with pytest.raises(ProtocolError, match="no remote path"):
        MSRPConnection().send_bind(MSRPSessionState(B_URI), 0)


@settings(max_examples=80, deadline=None)
@given(st.randoms(use_true_random=False), st.floats(min_value=0.0, max_value=0.4))
def test_lossy_pipe_every_message_ends_exactly_once(rnd: random.Random, loss: float):
    p = Pair(chunk_size=64, window=3, timeout=10.0)
    p.bind()
    bodies = {}
    data = b""
    for _ in range(rnd.randint(1, 4)):
        body = rnd.randbytes(rnd.randint(0, 400))
        mid, chunk = p.ca.send_message(p.a, "text/plain", body, 0)
        bodies[mid] = body
        data += chunk
    ev_a: list[Event] = []
    ev_b: list[Event] = []

    def lossy(blob: bytes) -> bytes:
        return b"".join(serialize_message(f) for f in frames(blob) if rnd.random() >= loss)

    for _ in range(200):
        if not data:
            break
        ev_b += p.to_b(lossy(data))
        ev_a += p.to_a(lossy(p.cb.data_to_send()))
        data = p.ca.data_to_send()
    ev_a += p.ca.handle_timeout(10.0)
    sent = [e.message_id for e in only(ev_a, MessageSent)]
    failed = [e.message_id for e in only(ev_a, MessageFailed)]
    assert sorted(sent + failed) == sorted(bodies)
    assert all(e.status == 408 and e.local for e in only(ev_a, MessageFailed))
    for msg in only(ev_b, MessageReceived):
        assert msg.body == bodies[msg.message_id]
    assert set(sent) <= {m.message_id for m in only(ev_b, MessageReceived)}
    if failed:
        assert only(ev_a, ConnectionBroken) and p.a.status is SessionStatus.CLOSED


KNOWN = {"b7xk2", "a93kd", "9di4eae923wzd", "iau39soe2843z", "mysession"}


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(SAMPLES), min_size=1, max_size=4),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=4),
)
def test_engine_survives_mutated_traffic(samples: list[bytes], edits: list[tuple[int, int]]):
    states: dict[str, MSRPSessionState] = {}

    def resolve(sid: SessionId) -> MSRPSessionState | None:
        if sid not in KNOWN:
            return None
        if sid not in states:
            states[sid] = MSRPSessionState(MSRPURI("127.0.0.1", 1, sid), max_message_size=4096)
        return states[sid]

    engine = MSRPConnection(resolver=resolve, max_frame_size=8192)
    data = bytearray(b"".join(samples))
    for pos, value in edits:
        data[pos % len(data)] = value
    try:
        engine.receive_data(bytes(data), 0.0)
    except CodecError:
        return
    for blob in frames_or_empty(engine.data_to_send()):
        assert blob.status is not None or blob.method == "REPORT"


def frames_or_empty(data: bytes) -> list[MSRPMessage]:
    return frames(data) if data else []


def test_reassembly_limits():
    asm = Reassembly("text/plain")
    assert asm.add(1, b"abc", 10, "+", 100) is None
    assert asm.add(4, b"def", 12, "+", 100) == "Byte-Range total changed"
    assert asm.add(9, b"xyz", None, "+", 100) == "Message Too Large"  # beyond total 10
    assert asm.add(1, b"abc", 1000, "+", 100) == "Message Too Large"
    assert asm.add(4, b"defghij", None, "$", 100) is None
    assert asm.complete and asm.result() == b"abcdefghij"


def test_report_without_message_id_and_empty_abort_chunk():
    p = Pair()
    p.bind()
    rep = raw_send("r0000001", B_URI, method="REPORT", headers="Status: 000 200 OK\r\n", body=None)
    ev, statuses = answer(p, rep)
    assert statuses == [] and only(ev, RequestRejected)[0].reason == "REPORT without Message-ID"
    hdr = "Message-ID: part0001\r\nByte-Range: 1-2/10\r\n"
    p.to_b(raw_send("r0000002", B_URI, headers=hdr))
    abort = raw_send("r0000003", B_URI, headers="Message-ID: part0001\r\n", body=None)
    ev, statuses = answer(p, abort.replace(b"$\r\n", b"#\r\n"))
    assert only(ev, MessageAborted) == [MessageAborted(B_SID, MSRPMessageId("part0001"))]


def test_attach_elsewhere_and_auth_with_credentials():
    p = Pair()
    p.bind()
    with pytest.raises(ProtocolError, match="bound elsewhere"):
        MSRPConnection().attach(p.a)
    _tid, data = p.ca.send_auth(parse_uri("msrp://r:2855;tcp"), A_URI, 0, authorization="Digest x")
    assert parse_message(data).header("Authorization") == "Digest x"


def test_authorization_for_digest_challenge():
    relay_uri = "msrp://127.0.0.1:2855;tcp"
    challenge = make_challenge("relay.test", qop=("auth",))
    resp_msg = MSRPMessage(
        TransactionId("auth0002"),
        status=401,
        reason="Unauthorized",
        to_path=(A_URI,),
        from_path=(parse_uri(relay_uri),),
        headers=(("WWW-Authenticate", "Basic realm=x"), ("WWW-Authenticate", str(challenge))),
    )
    resp = AuthResponse(TransactionId("auth0002"), 401, "Unauthorized", resp_msg)
    client = DigestClient()
    with_creds = RelayConfig.from_string(relay_uri, username="u", password="p")
    value = authorization_for(resp, with_creds, client)
    assert value is not None
    creds = parse_credentials(value)
    assert creds.uri == relay_uri and verify(creds, "AUTH", "p") and not verify(creds, "AUTH", "x")
    assert authorization_for(resp, RelayConfig.from_string(relay_uri), client) is None
    broken = AuthResponse(
        TransactionId("auth0002"),
        401,
        "Unauthorized",
        MSRPMessage(TransactionId("auth0002"), status=401, to_path=(A_URI,), from_path=(A_URI,)),
    )
    assert authorization_for(broken, with_creds, client) is None


def test_duplicate_message_id_while_sending_is_refused():
    p = Pair()
    p.bind()
    p.ca.send_message(p.a, "text/plain", b"x", 0, message_id="dup00001")
    with pytest.raises(ValueError, match="still being sent"):
        p.ca.send_message(p.a, "text/plain", b"y", 0, message_id="dup00001")


def test_peer_accept_types_and_max_size_are_respected():
    p = Pair()
    p.bind()
    p.a.peer_accept_types = ("message/cpim", "application/im-iscomposing+xml")
    p.a.peer_max_size = 100
    with pytest.raises(MSRPError) as info:
        p.ca.send_message(p.a, "text/plain", b"x", 0)
    assert info.value.status == 415 and info.value.local
    with pytest.raises(MSRPError) as info:
        p.ca.send_message(p.a, "message/cpim", b"x" * 101, 0)
    assert info.value.status == 413 and info.value.local
    mid, _data = p.ca.send_message(p.a, "Message/CPIM", b"x" * 100, 0)
    assert p.a.outgoing is not None and mid in p.a.outgoing


def test_send_from_another_peer_than_the_sdp_named_is_refused():
    """A stranger that learnt B's session-id cannot inject or bind: its From-Path does not
    end with the URI of A's SDP a=path (RFC 4975 §7.3), whatever its To-Path says."""
    p = Pair()
    p.b.remote_path = (A_URI,)  # from A's SDP, before any connection
    mallory = MSRPURI("127.0.0.1", 1000, SessionId("mallory"))
    forged = raw_send("t3000001", B_URI).replace(str(A_URI).encode(), str(mallory).encode())
    ev, st_ = answer(p, forged)
    assert st_ == [403] and not only(ev, MessageReceived)
    assert p.b.status is SessionStatus.NEW and p.b.connection is None  # not bound
    relayed = forged.replace(
        b"From-Path: " + str(mallory).encode(),
        b"From-Path: msrp://relay.test:2855/r1;tcp " + str(A_URI).encode(),
    )
    ev, st_ = answer(p, relayed)  # through a relay: the sender comes last
    assert st_ == [200] and only(ev, MessageReceived)[0].body == b"hi"
    rewritten = MSRPURI("10.9.9.9", 4444, A_SID)  # an SBC rewrote A's authority
    moved = raw_send("t3000002", B_URI).replace(str(A_URI).encode(), str(rewritten).encode())
    _ev, st_ = answer(p, moved)
    assert st_ == [200]  # sessmatch: the session-id is what counts
    strict = Pair(sessmatch=False)
    strict.b.remote_path = (A_URI,)
    _ev, st_ = answer(strict, moved)
    assert st_ == [403]  # RFC 4975 §6.1 comparison


def test_session_ids_have_96_random_bits():
    from sip.msrp.session import new_session_id

    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 24 for i in ids)  # 12 random bytes, hex
