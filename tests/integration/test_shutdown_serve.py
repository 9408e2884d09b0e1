"""Graceful shutdown of a real ``chat-bridge serve`` (issue 12 item 5; docs/configuration.md).

The bridge runs as a subprocess on a SQLite file. Its outbound proxy is the peer itself:
a SIPp UAS that answers the bridge's INVITE and then expects the BYE (``-timeout_error``:
no BYE fails the run), with the test's own MSRP endpoint (``sip.msrp``) on the media leg.
SIGTERM with a live 1-1 session, a message notification not fetched yet and an open long
poll: the poll answers ``[]`` at once, the peer gets its BYE, the app hears
``SessionEnded``, the process exits 0 within ``shutdown_timeout``, and after a restart on
the same store the queued notifications are all there. A peer that never answers keeps
the shutdown busy: the bound ends it, and a second signal ends it at once.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import pytest

from rest.models import ChatSessionInformation
from sip import cpim
from sip.msrp import MSRPStack
from tests.group_api import ACCEPT, group_bridge, links
from tests.serve_process import ServeProcess, serve_env
from tests.sipp import runner
from tests.testbed_fixture import free_port_block
from tests.unit.test_delivery_support import Receiver

pytestmark = pytest.mark.integration

A = "tel:+15555550111"
B = "tel:+15555550112"


def q(user: str) -> str:
    return quote(user, safe="")


def local(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def msrp_peer() -> AsyncIterator[MSRPStack]:
    peer = MSRPStack("127.0.0.1", 0)
    await peer.start()
    yield peer
    await peer.close()


@pytest.fixture
def ports() -> tuple[int, int, int]:
    """(REST, bridge SIP, peer SIP) ports."""
    base = free_port_block(size=3)
    return base, base + 1, base + 2


def bridge_at(tmp_path: Path, ports: tuple[int, int, int], **settings: str) -> ServeProcess:
    http, sip, peer = ports
    env = serve_env(
        tmp_path / "bridge.db",
        http_port=http,
        sip_port=sip,
        CHAT_BRIDGE_SIP_OUTBOUND_PROXY=f"sip:127.0.0.1:{peer};transport=udp",
        # SIPp plays the core here: its scenario takes an INVITE, not the readiness
        # OPTIONS ping (docs/operations.md "Readiness")
        CHAT_BRIDGE_IMS_PING_INTERVAL="0",
        CHAT_BRIDGE_SIP_TRANSPORTS='["udp"]',
        CHAT_BRIDGE_FOCUS_ENABLED="false",
        CHAT_BRIDGE_LOG_LEVEL="INFO",
        **settings,
    )
    return ServeProcess(env=env, log=tmp_path / "bridge.log", http_port=http)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[list[ServeProcess]]:
    """Bridges a test started: killed at its end whatever happened."""
    started: list[ServeProcess] = []
    yield started
    for b in started:
        b.kill()


async def call(
    http: aiohttp.ClientSession, b: ServeProcess, method: str, path: str, body: Any, status: int
) -> Any:
    async with http.request(method, b.root + path, json=body) as resp:
        text = await resp.text()
        assert resp.status == status, f"{method} {path}: {resp.status} {text}"
        return await resp.json() if text else None


async def subscribe(http: aiohttp.ClientSession, b: ServeProcess, user: str, url: str) -> None:
    body = {"chatNotificationSubscription": {"callbackReference": {"notifyURL": url}}}
    await call(http, b, "POST", f"/chat/v1/{q(user)}/subscriptions", body, 201)


async def channel(http: aiohttp.ClientSession, b: ServeProcess, user: str) -> dict[str, Any]:
    body = {"notificationChannel": {"channelType": "LongPolling"}}
    created = await call(http, b, "POST", f"/notificationchannel/v1/{q(user)}/channels", body, 201)
    found: dict[str, Any] = created["notificationChannel"]
    return found


async def events(receiver: Receiver, root: str, count: int, timeout: float = 15.0) -> list[Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = [r.document[root] for r in receiver.received if root in r.document]
        if len(found) >= count:
            return found
        if loop.time() > deadline:
            raise AssertionError(f"{len(found)} of {count} {root}: {receiver.received}")
        await asyncio.sleep(0.05)


async def logged(workdir: Path, pattern: str, wait: float = 10.0) -> re.Match[str]:
    for _ in range(int(wait / 0.05)):
        for log in workdir.glob("*_logs.log"):
            found = re.search(pattern, log.read_text(errors="replace"))
            if found:
                return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"{pattern!r} not logged in {workdir}")


async def exited(b: ServeProcess, within: float) -> tuple[int, float]:
    """(exit code, seconds it took) of the bridge, waited for ``within`` seconds at most."""
    assert b.proc is not None
    began = time.monotonic()
    while b.proc.poll() is None:
        if time.monotonic() - began > within:
            raise AssertionError(f"still running after {within}s:\n{b.log.read_text()}")
        await asyncio.sleep(0.02)
    return b.proc.returncode, time.monotonic() - began


async def test_sigterm_ends_sessions_answers_polls_and_loses_nothing(
    tmp_path: Path,
    ports: tuple[int, int, int],
    running: list[ServeProcess],
    receiver: Receiver,
    msrp_peer: MSRPStack,
) -> None:
    _http_port, _sip_port, peer_port = ports
    workdir = tmp_path / "uas"
    peer = f"sip:shutdown-peer@127.0.0.1:{peer_port}"
    sipp = await runner.start(
        runner.command(
            "uas-chat-restart-bye.xml",
            "-key",
            "msrp_port",
            str(msrp_peer.port),
            "-key",
            "msrp_session",
            "shutdownuas1",
            local_port=peer_port,
        ),
        workdir,
    )
    media = await msrp_peer.create_session(session_id="shutdownuas1", accept_types=("*",))
    bound = 8.0
    bridge = bridge_at(tmp_path, ports, CHAT_BRIDGE_SHUTDOWN_TIMEOUT=str(bound))
    running.append(bridge)
    try:
        await runner.ready(peer_port)
        await bridge.start()
        async with aiohttp.ClientSession() as http:
            await subscribe(http, bridge, A, receiver.url("/a"))
            kept = await channel(http, bridge, A)  # never polled before the shutdown
            await subscribe(http, bridge, A, kept["callbackURL"])
            idle = await channel(http, bridge, B)  # the open long poll
            await subscribe(http, bridge, B, idle["callbackURL"])
            created = await call(
                http,
                bridge,
                "POST",
                f"/chat/v1/{q(A)}/oneToOne/{q(peer)}",
                {"chatSessionInformation": {"subject": "shutdown test"}},
                201,
            )
            session_url = local(created["chatSessionInformation"]["resourceURL"])
            offer = (await logged(workdir, r"offer a=path:(msrp://\S+)")).group(1)
            await media.start(offer, active=False, timeout=10)
            (accepted,) = await events(receiver, "chatEventNotification", 1)
            assert accepted["eventType"] == "Accepted"
            envelope = cpim.build_chat_message(
                sender=cpim.NameAddr(peer),
                recipient=cpim.NameAddr(A),
                message_id="before-shutdown-1",
                timestamp=datetime.now(UTC),
                body=b"sent just before the shutdown",
            )
            await media.send(cpim.CONTENT_TYPE, cpim.serialize(envelope))
            await events(receiver, "chatMessageNotification", 1)

            poll_url = local(idle["channelData"]["channelURL"])
            poll = asyncio.ensure_future(http.post(bridge.root + poll_url, json={}))
            await asyncio.sleep(0.5)
            assert not poll.done()
            assert bridge.proc is not None
            signalled = time.monotonic()
            bridge.proc.send_signal(signal.SIGTERM)
            resp = await asyncio.wait_for(poll, timeout=5)
            answered = time.monotonic() - signalled
            assert resp.status == 200
            assert await resp.json() == {"notificationList": []}
            assert answered < 1.5, f"the long poll took {answered:.2f}s to answer"

            code, took = await exited(bridge, within=bound + 3)
            assert code == 0, bridge.log.read_text()
            assert took < bound + 1
            result = await sipp.wait(limit=30)
            assert result.ok, result.explain() + bridge.log.read_text()
            ended = await events(receiver, "chatEventNotification", 2)
            assert ended[1]["eventType"] == "SessionEnded"
            log = bridge.log.read_text()
            assert "1 sessions ended" in log, log

            # nothing accepted is lost: the channel kept what it queued, the session is over
            await bridge.start()
            got: list[dict[str, Any]] = []
            for _ in range(5):
                polled = await call(
                    http, bridge, "POST", local(kept["channelData"]["channelURL"]), {}, 200
                )
                got += polled["notificationList"]
                if len(got) >= 3:
                    break
            roots = [next(iter(n)) for n in got]
            assert roots == [
                "chatEventNotification",
                "chatMessageNotification",
                "chatEventNotification",
            ], got
            assert got[1]["chatMessageNotification"]["messageId"] == "before-shutdown-1"
            assert got[2]["chatEventNotification"]["eventType"] == "SessionEnded"
            info = await call(http, bridge, "GET", session_url, None, 200)
            assert info["chatSessionInformation"]["status"] == "Disconnected"
    finally:
        await sipp.stop()
        await media.close()


class BlackHole(asyncio.DatagramProtocol):
    """A UDP "IMS core" that takes every request and never answers (a dead next hop)."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.requests.append(data)


@pytest.fixture
async def black_hole(ports: tuple[int, int, int]) -> AsyncIterator[BlackHole]:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", ports[2]))
    transport, protocol = await loop.create_datagram_endpoint(BlackHole, sock=sock)
    yield protocol
    transport.close()


async def inviting(
    http: aiohttp.ClientSession, b: ServeProcess, hole: BlackHole, receiver: Receiver
) -> None:
    """A session of A whose INVITE nobody answers."""
    await subscribe(http, b, A, receiver.url("/a"))
    await call(
        http,
        b,
        "POST",
        f"/chat/v1/{q(A)}/oneToOne/{q('tel:+15550000001')}",
        {"chatSessionInformation": {"subject": "nobody answers"}},
        201,
    )
    for _ in range(100):
        if any(r.startswith(b"INVITE ") for r in hole.requests):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no INVITE reached the peer")


async def test_a_peer_that_never_answers_cannot_hold_the_shutdown_past_its_bound(
    tmp_path: Path,
    ports: tuple[int, int, int],
    running: list[ServeProcess],
    black_hole: BlackHole,
    receiver: Receiver,
) -> None:
    bound = 3.0
    bridge = bridge_at(tmp_path, ports, CHAT_BRIDGE_SHUTDOWN_TIMEOUT=str(bound))
    running.append(bridge)
    await bridge.start()
    async with aiohttp.ClientSession() as http:
        await inviting(http, bridge, black_hole, receiver)
        assert bridge.proc is not None
        bridge.proc.send_signal(signal.SIGTERM)
        code, took = await exited(bridge, within=bound + 3)
    assert took < bound + 1, bridge.log.read_text()
    # told before the end: the unanswered invitation failed (and was CANCELled, once the
    # peer would have sent a provisional answer: it never does, RFC 3261 §9.1)
    (failed,) = await events(receiver, "chatEventNotification", 1)
    assert failed["eventType"] == "Failed"
    assert code in (0, 1), bridge.log.read_text()


async def test_a_second_signal_exits_at_once(
    tmp_path: Path,
    ports: tuple[int, int, int],
    running: list[ServeProcess],
    black_hole: BlackHole,
    receiver: Receiver,
) -> None:
    bridge = bridge_at(tmp_path, ports, CHAT_BRIDGE_SHUTDOWN_TIMEOUT="60")
    running.append(bridge)
    await bridge.start()
    async with aiohttp.ClientSession() as http:
        await inviting(http, bridge, black_hole, receiver)
        assert bridge.proc is not None
        bridge.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(1.0)
        assert bridge.proc.poll() is None, "the peer's silence should hold the shutdown"
        bridge.proc.send_signal(signal.SIGINT)
        code, took = await exited(bridge, within=3)
    assert took < 1.0, bridge.log.read_text()
    assert code == 128 + signal.SIGINT
    assert "second SIGINT: exiting at once" in bridge.log.read_text()


async def test_sigterm_on_the_embedded_default_ends_one_to_one_and_group_sessions(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Three users of one bridge chatting over its own SIP, MSRP and conference focus: after
    SIGTERM every app hears SessionEnded, for the 1-1 session and for each one's group."""
    bound = 8.0
    one, two, three = "tel:+15555550401", "tel:+15555550402", "tel:+15555550403"
    async with group_bridge(tmp_path, receiver, CHAT_BRIDGE_SHUTDOWN_TIMEOUT=str(bound)) as api:
        for user in (one, two, three):
            await api.subscribe(user)
        created, _ = await api.created(
            f"/chat/v1/{q(one)}/oneToOne/{q(two)}",
            {"chatSessionInformation": {"subject": "one to one"}},
            ChatSessionInformation,
        )
        one_session = created.resource_url.rsplit("/", 1)[-1]
        invitation = await api.note(two, "chatSessionInvitationNotification")
        await api.call("PUT", api.local(links(invitation)["ParticipantSessionStatus"]), ACCEPT, 204)
        await api.event(one, one_session, "Accepted")

        group, _ = await api.create_group(one, [two, three], subject="shutdown")
        members = [
            await api.invitation(user, lambda n: n.get("subject") == "shutdown")
            for user in (two, three)
        ]
        for inv in members:
            await api.accept(inv)
        await api.event(one, group.session_id, "Successful")
        for g in (group, *(inv.group for inv in members)):
            await api.own_status(g, "Connected")

        proc = api.serve.proc
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        code, took = await exited(api.serve, within=bound + 3)
        assert code == 0, api.log_tail()
        assert took < bound + 1
        # every app was told before the process left (the notifications were flushed)
        await api.event(one, one_session, "SessionEnded")
        await api.event(two, invitation["sessionId"], "SessionEnded")
        await api.event(one, group.session_id, "SessionEnded")
        for inv in members:
            await api.event(inv.user, inv.session_id, "SessionEnded")
