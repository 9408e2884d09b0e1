"""MSRP through Kamailio's msrp relay (RFC 4976): AUTH, Use-Path, both ways, chunking, REPORTs."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from sip.errors import MSRPError
from sip.msrp import MessageReceived, MSRPStack, RelayConfig, ReportReceived, SessionStatus
from sip.msrp.session_handle import MSRPSession
from tests.testbed_fixture import Testbed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def relay_of(kamailio: Testbed, expires: int | None = None) -> RelayConfig:
    return RelayConfig.from_string(f"msrp://127.0.0.1:{kamailio.msrp_port};tcp", expires=expires)


@pytest.fixture
async def pair(kamailio: Testbed) -> AsyncIterator[tuple[MSRPStack, MSRPStack]]:
    """A uses the relay; B is a plain endpoint."""
    a = MSRPStack(relay=relay_of(kamailio), timeout=5.0)
    b = MSRPStack(timeout=5.0)
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()


async def receive_all(session: MSRPSession, count: int) -> list[MessageReceived | ReportReceived]:
    return [await session.receive(timeout=10) for _ in range(count)]


async def test_auth_gives_use_path(pair, kamailio: Testbed):
    a, _b = pair
    s = await a.create_session()
    relay_hop, own = s.local_path
    assert relay_hop.authority == ("127.0.0.1", kamailio.msrp_port)
    assert relay_hop.session_id and own.session_id == s.session_id
    assert s.path_attribute == f"{relay_hop} {own}"
    assert s._refresh is not None  # re-AUTH armed before expiry
    s2 = await a.create_session()
    assert s2.local_path[0] != relay_hop  # one relay session per MSRP session
    assert len(a._links) == 1  # both AUTHs on the one relay connection


@pytest.mark.parametrize("a_active", [True, False])
async def test_both_directions_chunked_with_reports(pair, a_active: bool):
    a, b = pair
    sa = await a.create_session()
    sb = await b.create_session()
    await asyncio.gather(
        sa.start(sb.local_path, active=a_active, timeout=10),
        sb.start(sa.path_attribute, active=not a_active, timeout=10),
    )
    assert sa.status is SessionStatus.BOUND and sb.status is SessionStatus.BOUND
    rnd = random.Random(4976)
    body_ab = rnd.randbytes(100 * 1024)
    body_ba = rnd.randbytes(100 * 1024 + 3)
    r_ab = await sa.send("application/octet-stream", body_ab, success_report=True)
    events_b = await receive_all(sb, 1)
    assert isinstance(events_b[0], MessageReceived) and events_b[0].body == body_ab
    report_a = await sa.receive(timeout=10)
    assert isinstance(report_a, ReportReceived)
    assert report_a.message_id == r_ab.message_id and report_a.status == 200
    r_ba = await sb.send("application/octet-stream", body_ba, success_report=True)
    events_a = await receive_all(sa, 1)
    assert isinstance(events_a[0], MessageReceived) and events_a[0].body == body_ba
    report_b = await sb.receive(timeout=10)
    assert isinstance(report_b, ReportReceived) and report_b.message_id == r_ba.message_id
    await sa.send("message/cpim", b"small one", failure_report="partial")
    small = await sb.receive(timeout=10)
    assert isinstance(small, MessageReceived) and small.body == b"small one"


async def test_both_ends_behind_the_relay(kamailio: Testbed):
    a = MSRPStack(relay=relay_of(kamailio), timeout=5.0)
    b = MSRPStack(relay=relay_of(kamailio), timeout=5.0)
    await a.start()
    await b.start()
    try:
        sa = await a.create_session()
        sb = await b.create_session()
        await asyncio.gather(
            sb.start(sa.local_path, active=False, timeout=10),
            sa.start(sb.local_path, active=True, timeout=10),
        )
        body = random.Random(1).randbytes(30_000)
        await sa.send("text/plain", body)
        got = await sb.receive(timeout=10)
        assert isinstance(got, MessageReceived) and got.body == body
        await sb.send("text/plain", b"back")
        back = await sa.receive(timeout=10)
        assert isinstance(back, MessageReceived) and back.body == b"back"
    finally:
        await a.close()
        await b.close()


async def test_expires_out_of_bounds_is_retried(kamailio: Testbed):
    stack = MSRPStack(relay=relay_of(kamailio, expires=10), timeout=5.0)
    await stack.start()
    try:
        s = await stack.create_session()
        assert len(s.local_path) == 2
        assert s._refresh is not None
        delay = s._refresh.when() - asyncio.get_running_loop().time()
        assert 30 <= delay <= 60  # granted Expires 60 (the relay's minimum)
    finally:
        await stack.close()


async def test_refresh_changes_use_path_and_notifies(pair):
    a, b = pair
    sa = await a.create_session()
    sb = await b.create_session()
    await asyncio.gather(
        sb.start(sa.local_path, active=False, timeout=10),
        sa.start(sb.local_path, active=True, timeout=10),
    )
    old = sa.local_path
    changed: list[object] = []
    sa.on_path_change = changed.append
    await a._authenticate(sa, refresh=True)
    assert changed == [sa.local_path] and sa.local_path != old
    await sa.send("text/plain", b"after refresh")  # our To-Path now starts with the new hop
    got = await sb.receive(timeout=10)
    assert isinstance(got, MessageReceived) and got.body == b"after refresh"


async def test_unknown_relay_session_is_481(pair, kamailio: Testbed):
    _a, b = pair
    sb = await b.create_session()
    fake_relay_hop = f"msrp://127.0.0.1:{kamailio.msrp_port}/rnosuchsession;tcp"
    with pytest.raises(MSRPError) as info:
        await sb.start(f"{fake_relay_hop} msrp://127.0.0.1:9/zzzz1;tcp", active=True, timeout=5)
    assert info.value.status == 481 and not info.value.local


async def test_several_sessions_interleaved_through_the_relay(pair):
    a, b = pair
    pairs = []
    for i in range(3):
        sa = await a.create_session()
        sb = await b.create_session()
        active = i % 2 == 0
        await asyncio.gather(
            sa.start(sb.local_path, active=active, timeout=10),
            sb.start(sa.path_attribute, active=not active, timeout=10),
        )
        pairs.append((sa, sb))
    assert len(a._links) == 1  # every relay session on the one AUTH connection
    rnd = random.Random(3)
    bodies = {(i, d): rnd.randbytes(100 * 1024 + i) for i in range(3) for d in "ab"}
    await asyncio.gather(
        *(sa.send("application/octet-stream", bodies[i, "a"]) for i, (sa, _) in enumerate(pairs)),
        *(sb.send("application/octet-stream", bodies[i, "b"]) for i, (_, sb) in enumerate(pairs)),
    )
    for i, (sa, sb) in enumerate(pairs):
        got_b = await sb.receive(timeout=10)
        got_a = await sa.receive(timeout=10)
        assert isinstance(got_b, MessageReceived) and got_b.body == bodies[i, "a"]
        assert isinstance(got_a, MessageReceived) and got_a.body == bodies[i, "b"]
