"""Connection hygiene over the wire (issue 13, defect 6): 200 idle SIP and 200 idle MSRP
connections to a running ``chat-bridge serve`` leave ``/health`` and a 1-1 chat prompt,
and the idle timeouts close them all (the embedded default's own loopback stays)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from tests.integration.test_chat_serve import A, B, q, serving
from tests.unit.test_delivery_support import Receiver

pytestmark = pytest.mark.integration

IDLE = 2.0


async def closed(reader: asyncio.StreamReader) -> None:
    try:
        while await reader.read(4096):
            pass
    except ConnectionError:
        pass


async def test_idle_connections_do_not_hold_the_bridge(tmp_path: Path, receiver: Receiver) -> None:
    with serving(
        tmp_path,
        receiver,
        CHAT_BRIDGE_SIP_IDLE_TIMEOUT=str(IDLE),
        CHAT_BRIDGE_MSRP_IDLE_TIMEOUT=str(IDLE),
        CHAT_BRIDGE_SIP_MESSAGE_DEADLINE="1",
        CHAT_BRIDGE_MSRP_FRAME_DEADLINE="1",
    ) as serve:
        msrp_port = serve.http_port + 2
        serve.env["CHAT_BRIDGE_MSRP_PORT"] = str(msrp_port)
        await serve.start()
        sip_port = int(serve.env["CHAT_BRIDGE_SIP_PORT"])
        conns = []
        for port in (sip_port, msrp_port):
            for _ in range(200):
                conns.append(await asyncio.open_connection("127.0.0.1", port))
        opened = time.monotonic()
        async with aiohttp.ClientSession() as http:
            async with http.get(serve.root + "/health") as resp:
                assert resp.status == 200
        assert time.monotonic() - opened < 1.0
        # a 1-1 chat over the bridge's own loopback, while the strangers hold their slots
        await serve.subscribe(A)
        await serve.subscribe(B)
        created = await serve.call(
            "POST", f"/chat/v1/{q(A)}/oneToOne/{q(B)}", {"chatSessionInformation": {}}, 201
        )
        a_session = serve.local(created["chatSessionInformation"]["resourceURL"])
        (invite,) = await serve.notes(B, "chatSessionInvitationNotification", wait=5.0)
        links = {link["rel"]: serve.local(link["href"]) for link in invite["link"]}
        await serve.call("PUT", links["ParticipantSessionStatus"], status=204)
        (accepted,) = await serve.notes(A, "chatEventNotification", wait=5.0)
        assert accepted["eventType"] == "Accepted"
        # every stranger is closed by the idle timeouts
        await asyncio.wait_for(asyncio.gather(*(closed(reader) for reader, _ in conns)), IDLE + 4.0)
        for _, writer in conns:
            writer.close()
        # the session, on exempt loopback connections, still carries messages
        text = {"chatMessage": {"text": "after the strangers"}}
        await serve.call("POST", a_session + "/messages", text, 201)
        (msg,) = await serve.notes(B, "chatMessageNotification", wait=5.0)
        assert msg["chatMessage"] == {"text": "after the strangers"}
