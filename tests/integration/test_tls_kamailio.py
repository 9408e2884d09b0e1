"""SIP over TLS through Kamailio's tls module: REST A → bridge ⇒TLS⇒ Kamailio ⇒TLS⇒ bridge → REST B.

The bridge's outbound proxy is Kamailio's TLS listener (``;transport=tls``) and Kamailio
reaches the bridge's TLS listener (KTB_AS_URI ``;transport=tls``), verifying its
certificate against the test CA (tests/testbed_fixture.py writes the tls.cfg). The MSRP
legs are ``msrps`` too (``msrp_tls_offer: sips``: the SIP leg is TLS). A bridge that does
not trust Kamailio's certificate refuses it with one log line.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from bridge.signalling.wiring import SignallingSide, start_signalling
from rest.app import make_app
from rest.chat_service import install_chat
from sip.errors import SIPError
from state.db import Database
from tests.chat_api import ROOT, ChatApi, local, q
from tests.testbed_fixture import TLSTestbed
from tests.unit.test_delivery_support import fast_settings

pytestmark = pytest.mark.integration

A = "tel:+15555550301"
B = "tel:+15555550302"


class Bridge(ChatApi):
    side: SignallingSide


@pytest.fixture
async def tls_bridge(
    tmp_path: Any, kamailio_tls: TLSTestbed, receiver: Any, aiohttp_client: Any
) -> AsyncIterator[tuple[Bridge, Database]]:
    tb, pki = kamailio_tls.testbed, kamailio_tls.pki
    db = Database(f"sqlite:///{tmp_path / 'chat.db'}")
    await db.migrate()
    settings = fast_settings(
        str(db.url),
        server_root=ROOT,
        sip_port=tb.as_port,
        sip_tls_port=tb.as_tls_port,
        sip_transports=["tcp", "tls"],
        sip_outbound_proxy=f"sip:127.0.0.1:{tb.tls_port};transport=tls",
        tls_cert_file=str(pki.other.cert),
        tls_key_file=str(pki.other.key),
        tls_ca_file=str(pki.ca),
        sip_tls_verify_client=True,  # Kamailio presents its certificate (mutual TLS)
        msrp_tls_port=0,
        chat_invite_timeout=8.0,
        focus_enabled=False,
    )
    side = await start_signalling(settings)
    app = make_app(settings, db)
    install_chat(app, side.signalling)
    client = await aiohttp_client(app)
    bridge = Bridge(client, receiver, notes_timeout=9.0)
    bridge.side = side
    try:
        yield bridge, db
    finally:
        await client.close()
        await side.close()
        await db.close()


async def test_chat_over_sip_tls_through_kamailio(
    tls_bridge: tuple[Bridge, Database], kamailio_tls: TLSTestbed
) -> None:
    bridge, db = tls_bridge
    await bridge.subscribe(A)
    await bridge.subscribe(B)
    created = await bridge.call(
        "POST",
        f"/chat/v1/{q(A)}/oneToOne/{q(B)}",
        {"chatSessionInformation": {"subject": "TLS", "originatorName": "Alice"}},
        201,
    )
    a_session = local(created["chatSessionInformation"]["resourceURL"])
    (invite,) = await bridge.notes(B, "chatSessionInvitationNotification")
    links = {link["rel"]: local(link["href"]) for link in invite["link"]}
    await bridge.call("PUT", links["ParticipantSessionStatus"], status=204)
    (accepted,) = await bridge.notes(A, "chatEventNotification")
    assert accepted["eventType"] == "Accepted"
    await bridge.call(
        "POST",
        a_session + "/messages",
        {"chatMessage": {"text": "via kamailio/tls", "reportRequest": ["Delivered"]}},
        201,
    )
    (msg,) = await bridge.notes(B, "chatMessageNotification")
    assert msg["chatMessage"] == {"text": "via kamailio/tls"} and msg["senderAddress"] == A
    (delivered,) = await bridge.notes(A, "chatMessageStatusNotification")
    assert delivered["status"] == "Delivered"
    await bridge.call("DELETE", a_session, status=204)
    (ended,) = await bridge.notes(B, "chatEventNotification")
    assert ended["eventType"] == "SessionEnded"

    # Kamailio got the INVITE and the BYE over TLS, and relayed the INVITE to the bridge
    # over TLS (each side verified the other's certificate to do so)
    log = kamailio_tls.testbed.log.read_text(errors="replace")
    assert f"-> sip:127.0.0.1:{kamailio_tls.testbed.as_tls_port};transport=tls" in log
    for method in ("INVITE", "BYE"):
        assert any(f"REQ {method} " in line and "/tls (F=" in line for line in log.splitlines()), (
            f"no {method} over TLS in kamailio.log"
        )
    async with db.sessions() as s:
        rows = (await s.execute(sa.text("SELECT msrp_local_uri FROM chat_sessions"))).all()
    assert rows and all(str(r[0]).startswith("msrps://") for r in rows)
    inbound = [key for key in bridge.side.sip.transport._connections if key[0] == "tls"]
    assert len(inbound) >= 2, inbound  # ours to Kamailio and Kamailio's to us


async def test_kamailio_certificate_not_trusted_is_refused(
    tmp_path: Any, kamailio_tls: TLSTestbed, caplog: pytest.LogCaptureFixture
) -> None:
    tb, pki = kamailio_tls.testbed, kamailio_tls.pki
    caplog.set_level(logging.WARNING, logger="sip.transport")
    settings = fast_settings(
        f"sqlite:///{tmp_path / 'x.db'}",
        sip_port=0,
        sip_transports=["tcp"],
        sip_outbound_proxy=f"sip:127.0.0.1:{tb.tls_port};transport=tls",
        tls_cert_file=str(pki.rogue.cert),
        tls_key_file=str(pki.rogue.key),
        tls_ca_file=str(pki.rogue.cert),  # trusts only itself: Kamailio's chain fails
        focus_enabled=False,
    )
    side = await start_signalling(settings)
    try:
        with pytest.raises(SIPError) as info:
            await side.sip.send_request(
                "MESSAGE",
                "sip:+15555550302@ims.test",
                sender=A,
                body=b"x",
                content_type="text/plain",
            )
        assert info.value.status == 503
    finally:
        await side.close()
    lines = [r.getMessage() for r in caplog.records if "SIP TLS peer" in r.getMessage()]
    assert len(lines) == 1, lines
    assert f"127.0.0.1:{tb.tls_port}" in lines[0] and "certificate refused" in lines[0], lines
