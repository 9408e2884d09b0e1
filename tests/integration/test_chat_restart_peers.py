"""Restart recovery against real peers: ``chat-bridge serve`` killed with SIGKILL, then restarted.

The bridge runs as a subprocess on a SQLite file, behind the test bed's Kamailio
(its outbound proxy, over TCP; Kamailio reaches it on ``as_port``), with SIPp
peers for the other users and the test's own MSRP endpoint (``sip.msrp``) on the
media leg. Each test brings a session or a message to the state a crash leaves,
kills the bridge (-9), starts it again on the same store and ports, and checks
what the peers see:

* a dialog the bridge opened (UAC) and one it answered (UAS) get a BYE from the
  restarted bridge, through Kamailio's route set, with a CSeq above the one used
  before; the app hears ``SessionEnded``;
* a received message whose notification had left the outbox (delivered) but
  whose "delivered" IMDN never went out gets it by pager-mode MESSAGE.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import sqlalchemy as sa

from bridge.ids import UserUri
from sip.msrp import MSRPStack
from state import outbox
from state.db import Database
from tests.serve_process import ServeProcess, serve_env
from tests.sipp import runner
from tests.testbed_fixture import Testbed, free_port_block
from tests.unit.test_delivery_support import Receiver

pytestmark = pytest.mark.integration

A = UserUri("tel:+15555550111")
B = UserUri("tel:+15555550112")
"""Users in the range Kamailio routes to the bridge (KTB_AS_USER_REGEX)."""
CALLER = "+15550000199"
"""A user outside the bridge's range: Kamailio routes it to the SIPp peer port."""
UAS_PORT = 17
"""``kamailio.uac_port(17)``: the SIPp UAS of the first test, reached by its own URI (Kamailio
forwards a foreign host as is), so nothing sent to the shared peer port can reach it."""


def q(user: str) -> str:
    return quote(user, safe="")


@pytest.fixture
def bridge(tmp_path: Path, kamailio: Testbed) -> Iterator[ServeProcess]:
    http = free_port_block(size=2)
    env = serve_env(
        tmp_path / "bridge.db",
        http_port=http,
        sip_port=kamailio.as_port,
        CHAT_BRIDGE_SIP_OUTBOUND_PROXY=f"sip:127.0.0.1:{kamailio.sip_port};transport=tcp",
        CHAT_BRIDGE_CHAT_INVITE_TIMEOUT="10",
        CHAT_BRIDGE_NOTIFICATION_BACKOFF_INITIAL="0.2",
        CHAT_BRIDGE_NOTIFICATION_BACKOFF_MAX="0.5",
        CHAT_BRIDGE_NOTIFICATION_HTTP_TIMEOUT="2",
        CHAT_BRIDGE_LOG_LEVEL="INFO",
    )
    b = ServeProcess(env=env, log=tmp_path / "bridge.log", http_port=http)
    try:
        yield b
    finally:
        b.kill()


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


async def call(
    http: aiohttp.ClientSession, b: ServeProcess, method: str, path: str, body: Any, status: int
) -> Any:
    async with http.request(method, b.root + path, json=body) as resp:
        text = await resp.text()
        assert resp.status == status, f"{method} {path}: {resp.status} {text}"
        return await resp.json() if text else None


async def subscribe(
    http: aiohttp.ClientSession, b: ServeProcess, user: str, url: str, **flags: bool
) -> None:
    body = {"chatNotificationSubscription": {"callbackReference": {"notifyURL": url}, **flags}}
    await call(http, b, "POST", f"/chat/v1/{q(user)}/subscriptions", body, 201)


async def events(receiver: Receiver, root: str, count: int, timeout: float = 15.0) -> list[Any]:
    """The first ``count`` notifications with ``root`` (AssertionError after ``timeout``)."""
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
    """The first match of ``pattern`` in the SIPp run's log."""
    for _ in range(int(wait / 0.05)):
        for log in workdir.glob("*_logs.log"):
            found = re.search(pattern, log.read_text(errors="replace"))
            if found:
                return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"{pattern!r} not logged in {workdir}")


def bridge_log(b: ServeProcess) -> str:
    return b.log.read_text(errors="replace")


async def test_dialog_the_bridge_opened_gets_bye_after_kill_9(
    tmp_path: Path,
    kamailio: Testbed,
    bridge: ServeProcess,
    receiver: Receiver,
    msrp_peer: MSRPStack,
) -> None:
    workdir = tmp_path / "uas"
    port = kamailio.uac_port(UAS_PORT)
    other = UserUri(f"sip:restart-peer@127.0.0.1:{port}")
    sipp = await runner.start(
        runner.command(
            "uas-chat-restart-bye.xml",
            "-key",
            "msrp_port",
            str(msrp_peer.port),
            "-key",
            "msrp_session",
            "restartuas1",
            local_port=port,
        ),
        workdir,
    )
    media = await msrp_peer.create_session(session_id="restartuas1", accept_types=("*",))
    try:
        await runner.ready(port)
        await bridge.start()
        async with aiohttp.ClientSession() as http:
            await subscribe(http, bridge, A, receiver.url("/a"))
            created = await call(
                http,
                bridge,
                "POST",
                f"/chat/v1/{q(A)}/oneToOne/{q(other)}",
                {"chatSessionInformation": {"subject": "crash test"}},
                201,
            )
            session_url = created["chatSessionInformation"]["resourceURL"]
            offer = (await logged(workdir, r"offer a=path:(msrp://\S+)")).group(1)
            await media.start(offer, active=False, timeout=10)  # the bridge binds (active)
            (accepted,) = await events(receiver, "chatEventNotification", 1)
            assert accepted["eventType"] == "Accepted"

            bridge.kill()  # the dialog is up at SIPp; nobody is left to end it
            await bridge.start()

            result = await sipp.wait(limit=30)
            assert result.ok, result.explain() + bridge_log(bridge)
            cseq = int((await logged(workdir, r"BYE call \S+ cseq (\d+)")).group(1))
            assert cseq > 1  # above the INVITE's (RFC 3261 §12.2.1.1)
            ended = await events(receiver, "chatEventNotification", 2)
            assert ended[1]["eventType"] == "SessionEnded"
            async with http.get(session_url) as resp:
                info = (await resp.json())["chatSessionInformation"]
            assert info["status"] == "Disconnected"
        assert "BYE for session" in bridge_log(bridge)
        assert "after restart: 200" in bridge_log(bridge)
    finally:
        await sipp.stop()
        await media.close()


async def test_dialog_the_bridge_answered_gets_bye_after_kill_9(
    tmp_path: Path,
    kamailio: Testbed,
    bridge: ServeProcess,
    receiver: Receiver,
    msrp_peer: MSRPStack,
) -> None:
    await bridge.start()
    media = await msrp_peer.create_session(session_id="restartuac1", accept_types=("*",))
    workdir = tmp_path / "uac"
    sipp = None
    try:
        async with aiohttp.ClientSession() as http:
            await subscribe(http, bridge, B, receiver.url("/b"))
            sipp = await runner.start(
                runner.command(
                    "uac-chat-restart-bye.xml",
                    f"127.0.0.1:{kamailio.sip_port}",
                    "-s",
                    B.removeprefix("tel:"),
                    "-key",
                    "from",
                    CALLER,
                    "-key",
                    "msrp_port",
                    str(msrp_peer.port),
                    "-key",
                    "msrp_session",
                    "restartuac1",
                    local_port=kamailio.uac_port(3),
                ),
                workdir,
            )
            (invite,) = await events(receiver, "chatSessionInvitationNotification", 1)
            links = {link["rel"]: link["href"] for link in invite["link"]}
            async with http.put(
                links["ParticipantSessionStatus"],
                json={"participantSessionStatus": {"status": "Connected"}},
            ) as resp:
                assert resp.status == 204, await resp.text()
            answer = (await logged(workdir, r"answer a=path:(msrp://\S+)")).group(1)
            await media.start(answer, active=False, timeout=10)  # the bridge connects (active)
            for _ in range(100):
                async with http.get(links["ChatSessionInformation"]) as resp:
                    info = (await resp.json())["chatSessionInformation"]
                if info["status"] == "Connected":
                    break
                await asyncio.sleep(0.05)
            assert info["status"] == "Connected"

            bridge.kill()
            await bridge.start()

            result = await sipp.wait(limit=30)
            assert result.ok, result.explain() + bridge_log(bridge)
            events_b = await events(receiver, "chatEventNotification", 1)
            assert events_b[-1]["eventType"] == "SessionEnded"
            async with http.get(links["ChatSessionInformation"]) as resp:
                info = (await resp.json())["chatSessionInformation"]
            assert info["status"] == "Disconnected"
        assert "after restart: 200" in bridge_log(bridge)
    finally:
        if sipp is not None:
            await sipp.stop()
        await media.close()


async def test_owed_delivered_imdn_goes_by_pager_after_kill_9(
    tmp_path: Path, kamailio: Testbed, bridge: ServeProcess
) -> None:
    await bridge.start()
    dead = free_port_block(size=1, start=31000)  # the app is down: its notification waits
    async with aiohttp.ClientSession() as http:
        await subscribe(
            http,
            bridge,
            B,
            f"http://127.0.0.1:{dead}/b",
            confirmedChatSupported=False,
            adhocChatSupported=True,
        )
    pager = await runner.start(
        runner.command(
            "uac-chat-message.xml",
            f"127.0.0.1:{kamailio.sip_port}",
            "-s",
            B.removeprefix("tel:"),
            "-key",
            "from",
            CALLER,
            local_port=kamailio.uac_port(4),
        ),
        tmp_path / "pager",
    )
    result = await pager.wait()
    assert result.ok, result.explain()
    bridge.kill()

    # the crash window: the app got the notification (the outbox row is settled, gone),
    # but the delivery listener never ran, so no IMDN went out
    store = Database(bridge.env["CHAT_BRIDGE_DATABASE_URL"])
    try:
        async with store.sessions.begin() as s:
            rows = (await s.execute(sa.select(outbox.OutboxRow))).scalars().all()
            (row,) = [r for r in rows if r.root == "chatMessageNotification"]
            message_id = str(row.body["messageId"])
            assert message_id.startswith("sipp-pager-")
            await s.delete(row)
            status = await s.scalar(
                sa.text("SELECT status FROM chat_messages WHERE message_id = :m"),
                {"m": message_id},
            )
            assert status == "received"
    finally:
        await store.close()

    # The shared test bed's peer port may still receive an IMDN another test's bridge
    # sent to a peer that was gone (Kamailio retransmits it): one SIPp run takes one
    # MESSAGE, so the peer is started again until ours came, three runs at most.
    reported: list[str] = []
    sipp: runner.SippProcess | None = None
    try:
        for attempt in range(3):
            workdir = tmp_path / f"imdn{attempt}"
            sipp = await runner.start(
                runner.command("uas-chat-imdn-delivered.xml", local_port=kamailio.peer_port),
                workdir,
            )
            await runner.ready(kamailio.peer_port)
            if attempt == 0:
                await bridge.start()
            result = await sipp.wait(limit=30)
            assert result.ok, result.explain() + bridge_log(bridge)
            found = await logged(workdir, r"notification <delivered/> .* delivered for (\S+)")
            reported.append(found.group(1))
            if reported[-1] == message_id:
                break
        assert message_id in reported, (reported, bridge_log(bridge))
        async with aiohttp.ClientSession() as http:
            url = f"/chat/v1/{q(B)}/oneToOne/{q('tel:' + CALLER)}/adhoc/messages/{message_id}"
            got = await call(http, bridge, "GET", url + "/status", None, 200)
        assert got["messageStatusReport"]["status"] == "Delivered"
        assert "delivered IMDN owed since the restart" in bridge_log(bridge)
    finally:
        if sipp is not None:
            await sipp.stop()
