"""Handshakes refused on the bridge's own TLS listeners are logged (sip.tlslistener, docs/tls.md).

Real sockets on 127.0.0.1 (clients from other loopback addresses, so that each is its own
peer), certificates generated at test time, under both event loops the bridge runs on
(``event_loop``: asyncio or uvloop). Each refused client gives one WARNING line naming it
and the reason; the listener goes on serving a good client.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from bridge.cli import loop_factory
from sip.errors import MSRPError
from sip.message import Message, Request
from sip.msrp import MSRPTLS, MSRPStack
from sip.tls import TLSFiles, client_context, local_fingerprint, server_context
from sip.tlslistener import TLSListener
from sip.transport import Source, TransportLayer
from tests.tls_certs import PKI, make_pki

pytestmark = pytest.mark.integration

LOOPS = ["asyncio", "uvloop"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def run(choice: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        runner.run(main())


async def dial(port: int, context: ssl.SSLContext, source: str) -> bytes:
    """Connect from ``source`` and read until the server closes; returns what was read
    (the refusal may reach the client at the handshake or at its first read)."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1", local_addr=(source, 0)
            ),
            5,
        )
    except (ssl.SSLError, ConnectionError):
        return b""
    try:
        return await asyncio.wait_for(reader.read(), 5)
    except (ssl.SSLError, ConnectionError):
        return b""
    finally:
        writer.close()


def dial_blocking(port: int, context: ssl.SSLContext, source: str) -> None:
    """An OpenSSL socket client (not asyncio's): it sends an alert when it refuses."""
    with socket.create_connection(("127.0.0.1", port), 5, source_address=(source, 0)) as sock:
        with pytest.raises(ssl.SSLCertVerificationError):
            context.wrap_socket(sock, server_hostname="127.0.0.1")


def refusals(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == logger
        and r.levelno == logging.WARNING
        and "(inbound) refused" in r.getMessage()
    ]


@pytest.mark.parametrize("loop", LOOPS)
def test_sip_tls_listener_logs_refused_clients(
    loop: str, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "sip.transport")
    ours = TLSFiles(str(pki.good.cert), str(pki.good.key), ca_file=str(pki.ca))
    got: list[str] = []

    def on_message(msg: Message, source: Source) -> None:
        if isinstance(msg, Request):
            got.append(f"{msg.method} {source.host}")

    async def main() -> None:
        layer = TransportLayer(
            on_message,
            host="127.0.0.1",
        )
        _, port = await layer.listen("tls", ssl=server_context(ours, verify_client=True))
        try:
            no_cert = client_context(TLSFiles(ca_file=str(pki.ca)))
            rogue = client_context(TLSFiles(str(pki.rogue.cert), str(pki.rogue.key), str(pki.ca)))
            distrusting = client_context(TLSFiles(str(pki.other.cert), str(pki.other.key)))
            assert await dial(port, no_cert, "127.0.0.2") == b""
            assert await dial(port, rogue, "127.0.0.3") == b""
            # clients that refuse our certificate: an asyncio one just closes, an OpenSSL
            # socket (what Kamailio or pjsip use) sends an alert
            assert await dial(port, distrusting, "127.0.0.4") == b""
            await asyncio.to_thread(dial_blocking, port, distrusting, "127.0.0.5")
            # a TCP health check (no ClientHello) is no TLS peer: not logged
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=("127.0.0.6", 0)
            )
            writer.close()
            assert await dial(port, no_cert, "127.0.0.2") == b""  # same peer again: counted only
            listener = layer._servers["tls"]
            assert isinstance(listener, TLSListener)
            for _ in range(50):  # the server learns of a refusal after the client
                if listener.refused == 5:
                    break
                await asyncio.sleep(0.05)
            assert listener.refused == 5

            good = client_context(TLSFiles(str(pki.other.cert), str(pki.other.key), str(pki.ca)))
            reader, writer = await asyncio.open_connection(
                "127.0.0.1",
                port,
                ssl=good,
                server_hostname="127.0.0.1",
                local_addr=("127.0.0.7", 0),
            )
            writer.write(
                b"OPTIONS sip:bridge@127.0.0.1 SIP/2.0\r\n"
                b"Via: SIP/2.0/TLS 127.0.0.7:5061;branch=z9hG4bKgood\r\n"
                b"From: <sip:good@127.0.0.7>;tag=1\r\nTo: <sip:bridge@127.0.0.1>\r\n"
                b"Call-ID: good-client\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                b"Content-Length: 0\r\n\r\n"
            )
            await writer.drain()
            for _ in range(50):
                if got:
                    break
                await asyncio.sleep(0.1)
            writer.close()
            assert layer.listening
        finally:
            await layer.close()
        assert not layer.listening
        with pytest.raises(OSError):  # the listening socket is closed
            await asyncio.open_connection("127.0.0.1", port)

    run(loop, main)
    assert got == ["OPTIONS 127.0.0.7"]
    lines = sorted(refusals(caplog, "sip.transport"))
    assert len(lines) == 4, lines
    assert lines[0].startswith("SIP TLS peer 127.0.0.2:"), lines
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in lines[0], lines
    assert lines[1].startswith("SIP TLS peer 127.0.0.3:"), lines
    assert "certificate refused: self-signed certificate" in lines[1], lines
    assert lines[2].startswith("SIP TLS peer 127.0.0.4:"), lines
    assert "closed the connection during the TLS handshake" in lines[2], lines
    assert lines[3].startswith("SIP TLS peer 127.0.0.5:") and "ALERT_UNKNOWN_CA" in lines[3], lines


@pytest.mark.parametrize("loop", LOOPS)
def test_msrp_tls_listener_logs_refused_clients(
    loop: str, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "sip.msrp.transport")
    rogue = TLSFiles(str(pki.rogue.cert), str(pki.rogue.key), ca_file=str(pki.ca))
    good = TLSFiles(str(pki.good.cert), str(pki.good.key), ca_file=str(pki.ca))
    received: list[bytes] = []

    async def main() -> None:
        passive = MSRPStack("127.0.0.1", 0, tls=MSRPTLS.from_files(rogue))  # self-signed
        strict = MSRPStack("127.0.0.1", 0, tls=MSRPTLS.from_files(good, verify="peer"))
        lenient = MSRPStack("127.0.0.1", 0, tls=MSRPTLS.from_files(good))
        for stack in (passive, strict, lenient):
            await stack.start()
        try:
            port = passive.tls_port
            assert port is not None
            # a peer that checks the chain refuses our self-signed certificate
            server = await passive.create_session(tls=True)
            client = await strict.create_session(tls=True)
            with pytest.raises(MSRPError):
                await client.start(server.path_attribute, active=True, timeout=5)
            await server.close()
            # a client that does not speak TLS
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=("127.0.0.6", 0)
            )
            writer.write(b"MSRP a786hjs2 SEND\r\nTo-Path: msrp://x\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.close()
            # a peer that takes the certificate from the SDP fingerprint is served
            server = await passive.create_session(tls=True)
            client = await lenient.create_session(tls=True)
            task = asyncio.ensure_future(
                server.start(client.path_attribute, active=False, timeout=5)
            )
            await client.start(
                server.path_attribute, active=True, timeout=5, fingerprint=local_fingerprint(rogue)
            )
            await task
            await client.send("text/plain", b"over msrps")
            got = await server.receive(timeout=5)
            received.append(bytes(getattr(got, "body", b"")))
            await asyncio.sleep(0.1)
        finally:
            for stack in (passive, strict, lenient):
                await stack.close()

    run(loop, main)
    assert received == [b"over msrps"]
    lines = refusals(caplog, "sip.msrp.transport")
    assert len(lines) == 2, lines
    assert lines[0].startswith("MSRP TLS peer 127.0.0.1:"), lines
    assert "closed the connection during the TLS handshake" in lines[0], lines
    assert lines[1].startswith("MSRP TLS peer 127.0.0.6:") and "TLS handshake failed" in lines[1]
