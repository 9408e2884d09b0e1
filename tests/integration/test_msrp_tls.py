"""MSRP over TLS between two MSRPStacks on real sockets (RFC 4975 §14, RFC 8122 fingerprints).

The passive stack serves a certificate; the active one dials its ``msrps`` URI and checks
the certificate against the SDP fingerprint it was given (self-signed accepted when it
matches) or against the CAs, per ``msrp_tls_verify`` (sip.msrp.tls).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from sip.errors import MSRPError
from sip.msrp import MSRPTLS, MSRPStack
from sip.msrp.tls import Verify
from sip.tls import TLSFiles, local_fingerprint
from tests.tls_certs import PKI, Pair, make_pki

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def stacks() -> AsyncIterator[list[MSRPStack]]:
    made: list[MSRPStack] = []
    yield made
    for stack in made:
        await stack.close()


async def start(made: list[MSRPStack], pki: PKI, pair: Pair, verify: Verify) -> MSRPStack:
    files = TLSFiles(str(pair.cert), str(pair.key), ca_file=str(pki.ca))
    stack = MSRPStack("127.0.0.1", 0, tls=MSRPTLS.from_files(files, 0, verify))
    await stack.start()
    made.append(stack)
    return stack


async def exchange(
    passive: MSRPStack, active: MSRPStack, fingerprint: str | None
) -> tuple[bytes, str]:
    """Bind an msrps session pair and send one message; returns (body received, scheme)."""
    server = await passive.create_session(tls=True)
    client = await active.create_session(tls=True)
    assert server.path_attribute.startswith("msrps://") and server.fingerprint is not None
    task = asyncio.ensure_future(server.start(client.path_attribute, active=False, timeout=5))
    try:
        await client.start(server.path_attribute, active=True, timeout=5, fingerprint=fingerprint)
        await task
        await client.send("text/plain", b"over msrps")
        got = await server.receive(timeout=5)
    finally:
        if not task.done():
            task.cancel()
    body = getattr(got, "body", b"")
    return bytes(body), client.state.remote_path[0].scheme


async def test_self_signed_peer_matching_its_fingerprint(stacks, pki: PKI) -> None:
    passive = await start(stacks, pki, pki.rogue, "fingerprint")
    active = await start(stacks, pki, pki.good, "fingerprint")
    fingerprint = local_fingerprint(TLSFiles(str(pki.rogue.cert)))
    assert fingerprint.startswith("sha-256 ") and passive.tls is not None
    assert passive.tls.fingerprint == fingerprint
    assert await exchange(passive, active, fingerprint) == (b"over msrps", "msrps")


async def test_fingerprint_mismatch_is_refused(stacks, pki: PKI, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="sip.msrp.tls")
    passive = await start(stacks, pki, pki.good, "fingerprint")
    active = await start(stacks, pki, pki.other, "fingerprint")
    wrong = local_fingerprint(TLSFiles(str(pki.rogue.cert)))
    server = await passive.create_session(tls=True)
    client = await active.create_session(tls=True)
    with pytest.raises(MSRPError) as info:
        await client.start(server.path_attribute, active=True, timeout=5, fingerprint=wrong)
    assert info.value.status == 403 and "fingerprint" in info.value.reason
    lines = [r.getMessage() for r in caplog.records if "MSRP TLS peer" in r.getMessage()]
    assert len(lines) == 1 and f"127.0.0.1:{passive.tls_port}" in lines[0], lines
    assert "does not match a=fingerprint" in lines[0]


async def test_ca_verified_peer_without_fingerprint(stacks, pki: PKI) -> None:
    passive = await start(stacks, pki, pki.good, "peer")
    active = await start(stacks, pki, pki.other, "fingerprint")
    assert await exchange(passive, active, None) == (b"over msrps", "msrps")


async def test_self_signed_peer_without_fingerprint_is_refused(stacks, pki: PKI, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="sip.msrp.transport")
    passive = await start(stacks, pki, pki.rogue, "fingerprint")
    fingerprint = local_fingerprint(TLSFiles(str(pki.rogue.cert)))
    active = await start(stacks, pki, pki.good, "peer")  # the chain must verify, even so
    server = await passive.create_session(tls=True)
    client = await active.create_session(tls=True)
    with pytest.raises(MSRPError):
        await client.start(server.path_attribute, active=True, timeout=5, fingerprint=fingerprint)
    lines = [r.getMessage() for r in caplog.records if "MSRP TLS peer" in r.getMessage()]
    assert len(lines) == 1 and "self-signed certificate" in lines[0], lines


async def test_msrps_needs_tls_settings(pki: PKI) -> None:
    plain = MSRPStack("127.0.0.1", 0)
    await plain.start()
    try:
        with pytest.raises(ValueError):
            await plain.create_session(tls=True)
        session = await plain.create_session()
        with pytest.raises(MSRPError) as info:
            await session.start("msrps://127.0.0.1:9/abc;tcp", active=True, timeout=2)
        assert info.value.status == 400
    finally:
        await plain.close()
