"""``chat-bridge serve`` with TLS settings from the environment: HTTPS REST, SIP and MSRP TLS
listeners (docs/tls.md), certificates generated at test time (tests/tls_certs.py)."""

from __future__ import annotations

import asyncio
import sqlite3
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.group_api import group_bridge
from tests.integration.test_chat_serve import q, serving
from tests.serve_process import BRIDGE, ServeProcess, serve_env
from tests.testbed_fixture import free_port_block
from tests.tls_certs import make_pki
from tests.unit.test_delivery_support import Receiver

pytestmark = pytest.mark.integration


async def test_https_rest_and_tls_listeners(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    base = free_port_block(4)
    env = serve_env(
        tmp_path / "b.db",
        base,
        base + 1,
        CHAT_BRIDGE_HTTP_TLS_CERT_FILE=str(pki.good.cert),
        CHAT_BRIDGE_HTTP_TLS_KEY_FILE=str(pki.good.key),
        CHAT_BRIDGE_SIP_TRANSPORTS='["udp", "tcp", "tls"]',
        CHAT_BRIDGE_SIP_TLS_PORT=str(base + 2),
        CHAT_BRIDGE_TLS_CERT_FILE=str(pki.other.cert),
        CHAT_BRIDGE_TLS_KEY_FILE=str(pki.other.key),
        CHAT_BRIDGE_TLS_CA_FILE=str(pki.ca),
        CHAT_BRIDGE_MSRP_TLS_PORT=str(base + 3),
    )
    del env["CHAT_BRIDGE_SERVER_ROOT"]  # the default follows the listener: https
    client = ssl.create_default_context(cafile=str(pki.ca))
    serve = ServeProcess(env, tmp_path / "bridge.log", base, ssl=client)
    await serve.start()
    try:
        assert serve.root.startswith("https://")
        user = "tel:+15555550401"
        body = {
            "chatNotificationSubscription": {
                "callbackReference": {"notifyURL": "http://127.0.0.1:9/cb"},
                "duration": 60,
            }
        }
        connector = aiohttp.TCPConnector(ssl=client)
        async with aiohttp.ClientSession(connector=connector) as http:
            url = f"{serve.root}/chat/v1/{user.replace(':', '%3A').replace('+', '%2B')}"
            async with http.post(url + "/subscriptions", json=body) as resp:
                assert resp.status == 201, await resp.text()
                made = await resp.json()
            resource = made["chatNotificationSubscription"]["resourceURL"]
            assert resource.startswith(f"https://127.0.0.1:{base}/"), resource
        # plain HTTP to the HTTPS listener gets no answer
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{base}/health") as resp:
                    await resp.read()
        # a client that does not trust the certificate is refused by its own TLS
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.get(f"https://127.0.0.1:{base}/health")
        # the SIP and MSRP TLS listeners answer a TLS handshake with the bridge's certificate
        for port in (base + 2, base + 3):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            writer.close()
            assert der == ssl.PEM_cert_to_DER_cert(pki.other.cert.read_text())
    finally:
        serve.stop()
    log = serve.log.read_text()
    assert f"MSRP over TLS listening on 127.0.0.1:{base + 3}" in log
    assert f"REST API on https://127.0.0.1:{base}" in log


def test_unreadable_certificate_is_a_config_error(tmp_path: Path) -> None:
    base = free_port_block(4)
    env = serve_env(
        tmp_path / "b.db",
        base,
        base + 1,
        CHAT_BRIDGE_HTTP_TLS_CERT_FILE=str(tmp_path / "missing.pem"),
    )
    done = subprocess.run(
        [str(BRIDGE), "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("chat-bridge: configuration error: http_tls_cert_file"), last
    assert "Traceback" not in done.stderr


async def test_embedded_chat_over_msrps_with_a_self_signed_certificate(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The serve process (uvloop when installed) chats between two of its users with msrps
    legs, its self-signed certificate trusted through the SDP fingerprint."""
    pki = make_pki(tmp_path / "pki")
    with serving(
        tmp_path,
        receiver,
        CHAT_BRIDGE_TLS_CERT_FILE=str(pki.rogue.cert),
        CHAT_BRIDGE_TLS_KEY_FILE=str(pki.rogue.key),
        CHAT_BRIDGE_MSRP_TLS_PORT="0",
        CHAT_BRIDGE_MSRP_TLS_OFFER="always",
    ) as serve:
        await serve.start()
        a, b = "tel:+15555550411", "tel:+15555550412"
        await serve.subscribe(a)
        await serve.subscribe(b)
        created = await serve.call(
            "POST", f"/chat/v1/{q(a)}/oneToOne/{q(b)}", {"chatSessionInformation": {}}, 201
        )
        a_session = serve.local(created["chatSessionInformation"]["resourceURL"])
        (invite,) = await serve.notes(b, "chatSessionInvitationNotification")
        links = {link["rel"]: serve.local(link["href"]) for link in invite["link"]}
        await serve.call("PUT", links["ParticipantSessionStatus"], status=204)
        (accepted,) = await serve.notes(a, "chatEventNotification")
        assert accepted["eventType"] == "Accepted"
        await serve.call("POST", a_session + "/messages", {"chatMessage": {"text": "msrps"}}, 201)
        (msg,) = await serve.notes(b, "chatMessageNotification")
        assert msg["chatMessage"] == {"text": "msrps"}
        serve.stop()
    with sqlite3.connect(tmp_path / "bridge.db") as db:
        uris = db.execute("SELECT msrp_local_uri, msrp_remote_path FROM chat_sessions").fetchall()
    assert len(uris) == 2 and all(u.startswith("msrps://") for row in uris for u in row), uris


async def test_group_chat_over_msrps_through_the_bridges_own_focus(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The creator's leg to the bridge's own focus is msrps (answered in kind by the focus);
    the focus's dial-out legs stay plain MSRP (docs/tls.md)."""
    pki = make_pki(tmp_path / "pki")
    a, b = "tel:+15555550421", "tel:+15555550422"
    async with group_bridge(
        tmp_path,
        receiver,
        CHAT_BRIDGE_TLS_CERT_FILE=str(pki.rogue.cert),
        CHAT_BRIDGE_TLS_KEY_FILE=str(pki.rogue.key),
        CHAT_BRIDGE_MSRP_TLS_PORT="0",
        CHAT_BRIDGE_MSRP_TLS_OFFER="always",
    ) as api:
        await api.subscribe(a)
        await api.subscribe(b)
        group_a, _info = await api.create_group(a, [(b, "Bob")], subject="Sealed")
        invitation = await api.invitation(b, lambda n: n.get("subject") == "Sealed", "Sealed")
        await api.accept(invitation)
        await api.own_status(group_a, "Connected")
        mid = await api.send(group_a.url, "to the group over msrps")
        got = await api.received_message(b, invitation.group.session_id, mid, a)
        assert got["chatMessage"]["text"] == "to the group over msrps"
    with sqlite3.connect(tmp_path / "bridge.db") as db:
        rows = db.execute(
            "SELECT user_uri, msrp_local_uri FROM chat_sessions WHERE msrp_local_uri IS NOT NULL"
        ).fetchall()
    mine = {str(user): str(uri) for user, uri in rows}
    assert mine.get(a, "").startswith("msrps://"), rows
