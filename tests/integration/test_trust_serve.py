"""Identity trust over the wire against a running ``chat-bridge serve`` (issue 13, RFC 3325).

The bridge's outbound proxy is 127.0.0.3 (a UDP socket of the test stands for it; loopback
/8 works on Linux), so its trust domain is 127.0.0.3 alone. A stranger on 127.0.0.2 sends
B a MESSAGE that asserts it comes from A (P-Asserted-Identity), over UDP and over TCP, and
an INVITE to the bridge's own conference factory (the focus): each one gets
``403 Forbidden (Untrusted Peer)`` and B's app hears nothing. The same MESSAGE from the
proxy's address is taken, and B's app is told it comes from A.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from tests.integration.test_chat_serve import A, B, serving
from tests.unit.test_delivery_support import Receiver

pytestmark = pytest.mark.integration

STRANGER = "127.0.0.2"
PROXY = "127.0.0.3"
USER_B = b"sip:+15555550202@ims.test"
FACTORY = b"sip:conference-factory@ims.test"


def message(call_id: bytes, host: str, port: int, transport: bytes, uri: bytes = USER_B) -> bytes:
    """A MESSAGE (or, to the factory, an INVITE) from ``host:port`` asserting A's identity."""
    method = b"INVITE" if uri == FACTORY else b"MESSAGE"
    body = b"hello from A" if method == b"MESSAGE" else b""
    ctype = b"Content-Type: text/plain\r\n" if body else b""
    return (
        b"%s %s SIP/2.0\r\n" % (method, uri)
        + b"Via: SIP/2.0/%s %s:%d;branch=z9hG4bK%s;rport\r\n"
        % (transport, host.encode(), port, call_id)
        + b"From: <sip:+15555550999@ims.test>;tag=x1\r\nTo: <%s>\r\n" % uri
        + b"P-Asserted-Identity: <sip:+15555550201@ims.test>\r\n"
        + b"Contact: <sip:x@%s:%d>\r\n" % (host.encode(), port)
        + b"Call-ID: %s\r\nCSeq: 1 %s\r\nMax-Forwards: 70\r\n" % (call_id, method)
        + ctype
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def status_line(data: bytes) -> bytes:
    return data.split(b"\r\n", 1)[0]


async def over_udp(host: str, sip_port: int, call_id: bytes, uri: bytes = USER_B) -> bytes:
    """Sends from a UDP socket bound to ``host``; the first final response's status line."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendto(
            sock,
            message(call_id, host, sock.getsockname()[1], b"UDP", uri),
            (
                "127.0.0.1",
                sip_port,
            ),
        )
        async with asyncio.timeout(5.0):
            while True:
                line = status_line(await loop.sock_recv(sock, 65536))
                if not line.startswith(b"SIP/2.0 1"):
                    return line
    finally:
        sock.close()


async def over_tcp(host: str, sip_port: int, call_id: bytes, uri: bytes = USER_B) -> bytes:
    """Sends over a TCP connection from ``host``; the first final response's status line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sip_port, local_addr=(host, 0))
    try:
        port = writer.get_extra_info("sockname")[1]
        writer.write(message(call_id, host, port, b"TCP", uri))
        async with asyncio.timeout(5.0):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() in (b"content-length", b"l"):
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                if not head.startswith(b"SIP/2.0 1"):
                    return status_line(head)
    finally:
        writer.close()


async def test_asserted_identity_only_from_the_trust_domain(
    tmp_path: Path, receiver: Receiver
) -> None:
    proxy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    proxy.bind((PROXY, 0))  # holds the proxy's port; the bridge sends it nothing here
    try:
        with serving(
            tmp_path,
            receiver,
            CHAT_BRIDGE_SIP_OUTBOUND_PROXY=f"sip:{PROXY}:{proxy.getsockname()[1]}",
            CHAT_BRIDGE_CHAT_ADHOC_MODE="pager",
        ) as serve:
            await serve.start()
            sip_port = int(serve.env["CHAT_BRIDGE_SIP_PORT"])
            await serve.subscribe(B)
            refused = b"SIP/2.0 403 Forbidden (Untrusted Peer)"
            assert await over_udp(STRANGER, sip_port, b"forged-udp") == refused
            assert await over_tcp(STRANGER, sip_port, b"forged-tcp") == refused
            assert await over_udp(STRANGER, sip_port, b"focus", FACTORY) == refused
            assert await over_udp("127.0.0.1", sip_port, b"from-lo") == refused  # not the proxy
            await asyncio.sleep(0.5)  # a notification would have been delivered by now
            assert serve.got(B, "chatMessageNotification") == []

            status = await over_udp(PROXY, sip_port, b"via-proxy")
            assert status.startswith((b"SIP/2.0 200", b"SIP/2.0 202")), status
            (note,) = await serve.notes(B, "chatMessageNotification", wait=5.0)
            assert note["chatMessage"] == {"text": "hello from A"}
            assert note["senderAddress"] == A
            assert "refused: not in the trust domain" in serve.log.read_text()
    finally:
        proxy.close()
