"""Two bridges chatting over TLS on every leg: SIP over TLS and MSRP over TLS (msrps).

Bridge 1 serves A, bridge 2 serves B, each the other's outbound proxy over SIP TLS
(``sip:127.0.0.1:<port>;transport=tls``), each with its own certificate signed by a
test CA generated here (tests/tls_certs.py). A 1-1 chat session between them must run
its MSRP legs as ``msrps`` with the SDP fingerprint checked; a bridge whose certificate
no CA vouches for is refused with one log line naming it (docs/tls.md).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bridge.signalling.wiring import SignallingSide, start_signalling
from rest.app import make_app
from rest.chat_service import install_chat
from sip.tls import peer_certificate
from state.db import Database
from tests.chat_api import ROOT, ChatApi, local, q
from tests.testbed_fixture import free_port_block
from tests.tls_certs import PKI, make_pki
from tests.unit.test_delivery_support import fast_settings

pytestmark = pytest.mark.integration

A = "tel:+15555550201"
B = "tel:+15555550202"


@dataclass
class Side:
    """One in-process bridge: REST client, signalling side and store."""

    api: ChatApi
    side: SignallingSide
    db: Database


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def open_side(
    tmp_path: Path, name: str, receiver: Any, aiohttp_client: Any, **values: object
) -> Side:
    db = Database(f"sqlite:///{tmp_path / f'{name}.db'}")
    await db.migrate()
    settings = fast_settings(
        str(db.url), server_root=ROOT, chat_invite_timeout=8.0, focus_enabled=False, **values
    )
    side = await start_signalling(settings)
    app = make_app(settings, db)
    install_chat(app, side.signalling)
    client = await aiohttp_client(app)
    return Side(ChatApi(client, receiver, notes_timeout=9.0), side, db)


@pytest.fixture
async def pair_factory(tmp_path: Path, receiver: Any, aiohttp_client: Any) -> AsyncIterator[Any]:
    opened: list[Side] = []

    async def make(
        one: dict[str, object], two: dict[str, object], sip: str = "tls"
    ) -> tuple[Side, Side]:
        """Bridges 1 and 2, each the other's outbound proxy over ``sip`` (tls or tcp)."""
        base = free_port_block(size=8)
        sides = []
        for n, (extra, own, other) in enumerate(((one, base, base + 4), (two, base + 4, base))):
            proxy_port = other + 1 if sip == "tls" else other
            values: dict[str, object] = {
                "sip_port": own,
                "sip_tls_port": own + 1,
                "sip_transports": ["tcp", "tls"] if sip == "tls" else ["tcp"],
                "sip_outbound_proxy": f"sip:127.0.0.1:{proxy_port};transport={sip}",
                "msrp_tls_port": 0,
            }
            values.update(extra)
            side = await open_side(tmp_path, f"bridge{n + 1}", receiver, aiohttp_client, **values)
            opened.append(side)
            sides.append(side)
        return sides[0], sides[1]

    yield make
    for s in opened:
        await s.api.client.close()
        await s.side.close()
        await s.db.close()


async def invite_and_accept(one: Side, two: Side) -> str:
    """A (bridge 1) invites B (bridge 2), B accepts; returns A's session path."""
    await one.api.subscribe(A)
    await two.api.subscribe(B)
    created = await one.api.call(
        "POST",
        f"/chat/v1/{q(A)}/oneToOne/{q(B)}",
        {"chatSessionInformation": {"subject": "over TLS", "originatorName": "Alice"}},
        201,
    )
    (invite,) = await two.api.notes(B, "chatSessionInvitationNotification")
    links = {link["rel"]: local(link["href"]) for link in invite["link"]}
    await two.api.call("PUT", links["ParticipantSessionStatus"], status=204)
    return local(created["chatSessionInformation"]["resourceURL"])


async def msrp_uris(db: Database) -> tuple[str, str]:
    async with db.sessions() as s:
        row = (
            await s.execute(sa.text("SELECT msrp_local_uri, msrp_remote_path FROM chat_sessions"))
        ).one()
    return str(row[0]), str(row[1])


async def test_chat_with_sip_and_msrp_over_tls(pair_factory: Any, pki: PKI) -> None:
    common = {"tls_ca_file": str(pki.ca), "msrp_tls_offer": "sips"}
    one, two = await pair_factory(
        {"tls_cert_file": str(pki.good.cert), "tls_key_file": str(pki.good.key), **common},
        {"tls_cert_file": str(pki.other.cert), "tls_key_file": str(pki.other.key), **common},
    )
    a_session = await invite_and_accept(one, two)
    (accepted,) = await one.api.notes(A, "chatEventNotification")
    assert accepted["eventType"] == "Accepted"
    await one.api.call(
        "POST",
        a_session + "/messages",
        {"chatMessage": {"text": "sealed ☺", "reportRequest": ["Delivered"]}},
        201,
    )
    (msg,) = await two.api.notes(B, "chatMessageNotification")
    assert msg["chatMessage"] == {"text": "sealed ☺"} and msg["senderAddress"] == A
    (delivered,) = await one.api.notes(A, "chatMessageStatusNotification")
    assert delivered["status"] == "Delivered"

    # the MSRP legs are msrps both ways (offer and answer), over TLS connections
    for side in (one, two):
        local_uri, remote_path = await msrp_uris(side.db)
        assert local_uri.startswith("msrps://") and remote_path.startswith("msrps://")
    tls_links = [
        link for s in (one, two) for link in s.side.msrp._links if peer_certificate(link.transport)
    ]
    assert tls_links, "no MSRP connection carries a peer certificate"
    # and SIP went over TLS: each bridge holds a TLS connection to the other
    for side in (one, two):
        kinds = {key[0] for key in side.side.sip.transport._connections}
        assert "tls" in kinds, kinds
    await one.api.call("DELETE", a_session, status=204)
    events = await two.api.notes(B, "chatEventNotification")
    assert events[-1]["eventType"] == "SessionEnded"


async def test_msrp_peer_with_a_bad_certificate_is_refused(
    pair_factory: Any, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sip.msrp.transport")
    one, two = await pair_factory(
        {
            "msrp_tls_offer": "always",
            "tls_cert_file": str(pki.rogue.cert),  # self-signed: no CA vouches for it
            "tls_key_file": str(pki.rogue.key),
        },
        {
            "tls_cert_file": str(pki.other.cert),
            "tls_key_file": str(pki.other.key),
            "tls_ca_file": str(pki.ca),
            "msrp_tls_verify": "peer",  # the chain must verify, fingerprint or not
        },
        sip="tcp",  # only the MSRP leg is at stake
    )
    await invite_and_accept(one, two)
    events = await one.api.notes(A, "chatEventNotification")
    assert [e["eventType"] for e in events] == ["Failed"]  # never Accepted: no MSRP leg
    refusals = [
        r.getMessage()
        for r in caplog.records
        if "MSRP TLS peer" in r.getMessage() and "refused" in r.getMessage()
    ]
    # one line on each side: the bridge that refuses (the chain), and the refused one's
    # listener (its client closed mid-handshake, sip.tlslistener)
    assert len(refusals) == 2, refusals
    outbound = [line for line in refusals if "(inbound)" not in line]
    assert len(outbound) == 1 and "certificate refused" in outbound[0], refusals
    assert "127.0.0.1:" in outbound[0] and "self-signed certificate" in outbound[0], refusals
