"""Parser limits are settings (issue 13): a lowered one refuses what the default accepts.

A ``chat-bridge serve`` on the embedded default gets, over UDP from loopback (its trust
domain), a pager MESSAGE to B with 40 header fields and an isComposing body 10 elements
deep. With ``CHAT_BRIDGE_LIMIT_SIP_HEADER_FIELDS=32`` the first is answered 400 and B's app
hears nothing; with ``CHAT_BRIDGE_LIMIT_XML_DEPTH=8`` the second is; with the defaults
(256 fields, depth 32) both are taken.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from tests.integration.test_chat_serve import B, serving
from tests.unit.test_delivery_support import Receiver

pytestmark = pytest.mark.integration

USER_B = b"sip:+15555550202@ims.test"
PAD = b"".join(b"X-Pad-%d: %d\r\n" % (i, i) for i in range(32))
DEEP = (
    b'<?xml version="1.0"?><isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing">'
    b"<state>active</state><contenttype>text/plain</contenttype>"
    + b"<x>" * 10
    + b"</x>" * 10
    + b"</isComposing>"
)


def message(call_id: bytes, port: int, extra: bytes, ctype: bytes, body: bytes) -> bytes:
    return (
        b"MESSAGE %s SIP/2.0\r\n" % USER_B
        + b"Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK%s;rport\r\n" % (port, call_id)
        + b"From: <sip:+15555550201@ims.test>;tag=x1\r\nTo: <%s>\r\n" % USER_B
        + b"Call-ID: %s\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n" % call_id
        + extra
        + b"Content-Type: %s\r\nContent-Length: %d\r\n\r\n" % (ctype, len(body))
        + body
    )


async def status(sip_port: int, call_id: bytes, extra: bytes, ctype: bytes, body: bytes) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        data = message(call_id, sock.getsockname()[1], extra, ctype, body)
        await loop.sock_sendto(sock, data, ("127.0.0.1", sip_port))
        async with asyncio.timeout(5.0):
            while True:
                code = int((await loop.sock_recv(sock, 65536)).split(b" ", 2)[1])
                if code >= 200:
                    return code
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("settings", "padded", "deep"),
    [
        ({}, 200, 200),
        ({"CHAT_BRIDGE_LIMIT_SIP_HEADER_FIELDS": "32"}, 400, 200),
        ({"CHAT_BRIDGE_LIMIT_XML_DEPTH": "8"}, 200, 400),
    ],
    ids=["defaults", "header-fields-32", "xml-depth-8"],
)
async def test_lowered_limit_refuses_what_the_default_takes(
    tmp_path: Path, receiver: Receiver, settings: dict[str, str], padded: int, deep: int
) -> None:
    with serving(tmp_path, receiver, CHAT_BRIDGE_CHAT_ADHOC_MODE="pager", **settings) as serve:
        await serve.start()
        sip_port = int(serve.env["CHAT_BRIDGE_SIP_PORT"])
        await serve.subscribe(B)
        got = await status(sip_port, b"padded", PAD, b"text/plain", b"padded")
        assert got == padded
        got = await status(sip_port, b"deep", b"", b"application/im-iscomposing+xml", DEEP)
        assert got == deep
        got = await status(sip_port, b"plain", b"", b"text/plain", b"plain")
        assert got == 200  # the limits refuse only what exceeds them
        await serve.notes(B, "chatMessageNotification", 1 + (padded == 200) + (deep == 200))
        await asyncio.sleep(0.3)  # a notification for the padded one would be in by now
        notes = serve.got(B, "chatMessageNotification")
        texts = [n["chatMessage"]["text"] for n in notes if "chatMessage" in n]
        assert sorted(texts) == sorted(["plain"] + (["padded"] if padded == 200 else []))
