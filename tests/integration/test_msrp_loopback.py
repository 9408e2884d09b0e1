"""MSRP stack to MSRP stack over 127.0.0.1 TCP: roles, sharing, chunking, reports, failures."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from sip.errors import MSRPError
from sip.msrp import MSRPURI, MessageReceived, MSRPStack, ReportReceived, SessionStatus
from sip.msrp.events import ChunkReceived, Event
from sip.msrp.session_handle import MSRPSession
from sip.msrp.uri import SessionId

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def stacks() -> AsyncIterator[tuple[MSRPStack, MSRPStack]]:
    a = MSRPStack("127.0.0.1", 0, timeout=5.0)
    b = MSRPStack("127.0.0.1", 0, timeout=5.0)
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()


async def connect(active: MSRPStack, passive: MSRPStack, **kw) -> tuple[MSRPSession, MSRPSession]:
    sa = await active.create_session(**kw)
    sp = await passive.create_session(**kw)
    await asyncio.gather(
        sp.start(sa.local_path, active=False, timeout=5),
        sa.start(sp.path_attribute, active=True, timeout=5),
    )
    return sa, sp


async def test_direct_both_roles(stacks):
    a, b = stacks
    for active, passive in ((a, b), (b, a)):
        s1, s2 = await connect(active, passive)
        assert s1.status is SessionStatus.BOUND and s2.status is SessionStatus.BOUND
        r = await s1.send("text/plain", b"ping")
        got = await s2.receive(timeout=5)
        assert isinstance(got, MessageReceived) and got.body == b"ping"
        assert got.message_id == r.message_id and got.content_type == "text/plain"
        await s2.send("text/plain", "pong \u2603".encode())
        back = await s1.receive(timeout=5)
        assert isinstance(back, MessageReceived) and back.body.decode() == "pong \u2603"
        assert s1.path_attribute == str(s1.local_path[0])
        await s1.close()
        await s2.close()


async def test_sessions_share_one_connection(stacks):
    a, b = stacks
    pairs = [await connect(a, b) for _ in range(5)]
    assert len(a._outbound) == 1
    assert len(a._links) == 1 and len(b._links) == 1
    await asyncio.gather(*(sa.send("text/plain", sa.session_id.encode()) for sa, _ in pairs))
    for sa, sb in pairs:
        got = await sb.receive(timeout=5)
        assert isinstance(got, MessageReceived) and got.body == sa.session_id.encode()
    await pairs[0][0].close()
    await pairs[0][1].close()
    assert len(a._links) == 1  # still used by the others
    await pairs[1][0].send("text/plain", b"after close")
    assert (await pairs[1][1].receive(timeout=5)).body == b"after close"  # type: ignore[union-attr]


async def test_concurrent_starts_open_one_connection(stacks):
    a, b = stacks
    pairs = await asyncio.gather(*(connect(a, b) for _ in range(4)))
    assert len(pairs) == 4 and len(a._outbound) == 1


async def test_100k_both_ways_with_reports(stacks):
    a, b = stacks
    sa, sb = await connect(a, b)
    seen_b: list[Event] = []
    sb.on_event = seen_b.append  # the callback sees everything, chunk progress included
    rnd = random.Random(42)
    body_ab = rnd.randbytes(100 * 1024)
    body_ba = rnd.randbytes(100 * 1024 + 17)
    r1, r2 = await asyncio.gather(
        sa.send("application/octet-stream", body_ab, success_report=True),
        sb.send("application/octet-stream", body_ba, success_report=True),
    )
    events_a = [await sa.receive(timeout=5), await sa.receive(timeout=5)]
    for _ in range(50):
        if any(isinstance(e, ReportReceived) for e in seen_b):
            break
        await asyncio.sleep(0.05)
    events_b = [e for e in seen_b if isinstance(e, MessageReceived | ReportReceived)]
    msg_b = next(e for e in events_b if isinstance(e, MessageReceived))
    msg_a = next(e for e in events_a if isinstance(e, MessageReceived))
    assert msg_b.body == body_ab and msg_a.body == body_ba
    rep_a = next(e for e in events_a if isinstance(e, ReportReceived))
    rep_b = next(e for e in events_b if isinstance(e, ReportReceived))
    assert rep_a.message_id == r1.message_id and rep_a.status == 200
    assert rep_b.message_id == r2.message_id and rep_b.status == 200
    assert len([e for e in seen_b if isinstance(e, ChunkReceived)]) == 9
    assert sb._queue is None  # nothing queued while a callback is set


async def test_unknown_session_is_481(stacks):
    a, b = stacks
    sa = await a.create_session()
    ghost = MSRPURI("127.0.0.1", b.port, SessionId("nosuchsession"))
    with pytest.raises(MSRPError) as info:
        await sa.start([ghost], active=True)
    assert info.value.status == 481 and not info.value.local


async def test_unsupported_type_is_415(stacks):
    a, b = stacks
    sa, _sb = await connect(a, b, accept_types=("message/cpim",))
    with pytest.raises(MSRPError) as info:
        await sa.send("image/png", b"\x89PNG")
    assert info.value.status == 415


async def test_silent_peer_times_out_408():
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.append(w)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    stack = MSRPStack(timeout=0.3)
    await stack.start()
    try:
        s = await stack.create_session()
        with pytest.raises(MSRPError) as info:
            await s.start([MSRPURI("127.0.0.1", port, SessionId("quiet1"))], active=True)
        assert info.value.status == 408 and info.value.local
        await asyncio.sleep(0.05)
        assert not stack._links  # the broken connection was closed
        assert s.status is SessionStatus.CLOSED
        with pytest.raises(MSRPError) as again:
            await s.send("text/plain", b"x")
        assert again.value.status == 481
    finally:
        await stack.close()
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()


async def test_passive_wait_times_out_and_refused_connect():
    stack = MSRPStack(timeout=0.2, connect_timeout=1.0)
    await stack.start()
    try:
        s = await stack.create_session()
        with pytest.raises(MSRPError) as info:
            await s.start("msrp://127.0.0.1:9/x1234;tcp", active=False)
        assert info.value.status == 408
        s2 = await stack.create_session()
        with pytest.raises(MSRPError) as info:
            await s2.start("msrp://127.0.0.1:1/x1234;tcp", active=True)
        assert (
            info.value.status == 408 and info.value.local and "cannot connect" in info.value.reason
        )
        s3 = await stack.create_session()
        with pytest.raises(MSRPError) as info:
            await s3.start("msrps://127.0.0.1:1/x1234;tcp", active=True)
        assert info.value.status == 400 and "unsupported MSRP transport" in info.value.reason
    finally:
        await stack.close()


async def test_close_fails_pending_send_and_ends_iterator(stacks):
    a, b = stacks
    sa, sb = await connect(a, b)
    received: list[bytes] = []

    async def consume() -> None:
        async for ev in sb.messages():
            if isinstance(ev, MessageReceived):
                received.append(ev.body)

    task = asyncio.create_task(consume())
    await sa.send("text/plain", b"one")
    pending = asyncio.create_task(sa.send("text/plain", b"x" * 500_000))
    await asyncio.sleep(0)
    await sa.close()
    with pytest.raises(MSRPError) as info:
        await pending
    assert info.value.status == 481 and info.value.local
    await sb.close()
    await asyncio.wait_for(task, 5)
    assert received[0] == b"one"
    await asyncio.sleep(0.05)
    assert not a._links and not b._links  # last session gone: connections closed


async def test_garbage_closes_connection(stacks):
    _a, b = stacks
    sb = await b.create_session()
    reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await writer.wait_closed()
    assert sb.status is SessionStatus.NEW


async def test_keepalive_on_idle_connection():
    a = MSRPStack(keepalive_interval=0.1, timeout=2.0)
    b = MSRPStack(timeout=2.0)
    await a.start()
    await b.start()
    try:
        _sa, sb = await connect(a, b)
        seen: list[Event] = []
        sb.on_event = seen.append
        await asyncio.sleep(0.45)
        assert sb.status is SessionStatus.BOUND
        assert not seen  # keep-alives are answered, not delivered
        assert len(a._links) == 1
    finally:
        await a.close()
        await b.close()


async def test_silent_inbound_connection_is_dropped():
    stack = MSRPStack(timeout=0.2)
    await stack.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the stack
        writer.close()
        await writer.wait_closed()
        assert not stack._links
    finally:
        await stack.close()


async def test_faulty_callback_does_not_break_the_connection(stacks, caplog):
    a, b = stacks
    sa, sb = await connect(a, b)

    def boom(_ev: Event) -> None:
        raise RuntimeError("bridge bug")

    sb.on_event = boom
    await sa.send("text/plain", b"one")
    sb.on_event = None
    await sa.send("text/plain", b"two")
    assert (await sb.receive(timeout=5)).body == b"two"  # type: ignore[union-attr]
    assert "on_event callback failed" in caplog.text
    assert len(a._links) == 1
