"""sip.tls (contexts, RFC 8122 fingerprints) and the TLS settings (bridge.config, docs/tls.md)."""

from __future__ import annotations

import hashlib
import ssl

import pytest

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.signalling import payload
from bridge.signalling.tls import http_tls, msrp_tls, sip_tls
from sip import sdp
from sip.tls import (
    TLSFiles,
    certificate_fingerprint,
    client_context,
    describe_refusal,
    fingerprint_matches,
    local_fingerprint,
    server_context,
)
from tests.tls_certs import PKI, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_fingerprint_format_and_match() -> None:
    der = b"not really a certificate"
    value = certificate_fingerprint(der)
    digest = hashlib.sha256(der).hexdigest().upper()
    assert value == "sha-256 " + ":".join(digest[i : i + 2] for i in range(0, 64, 2))
    assert fingerprint_matches(value, der)
    assert fingerprint_matches(value.lower().replace("sha-256", "SHA-256"), der)
    assert fingerprint_matches(certificate_fingerprint(der, "sha-1"), der)
    assert not fingerprint_matches(value, der + b"x")
    assert not fingerprint_matches("md5 00:11", der)  # unknown hash: never matches
    assert not fingerprint_matches("", der)


def test_local_fingerprint_is_the_leaf_certificate(pki: PKI) -> None:
    ctx = server_context(TLSFiles(str(pki.good.cert), str(pki.good.key)))
    assert ctx.verify_mode == ssl.CERT_NONE  # no client certificate asked by default
    value = local_fingerprint(TLSFiles(str(pki.good.cert)))
    pem = pki.good.cert.read_text()
    assert fingerprint_matches(value, ssl.PEM_cert_to_DER_cert(pem))
    with pytest.raises(ValueError):
        local_fingerprint(TLSFiles(str(pki.good.key)))  # a key, no certificate


def test_contexts(pki: PKI) -> None:
    files = TLSFiles(str(pki.good.cert), str(pki.good.key), ca_file=str(pki.ca))
    verifying = client_context(files)
    assert verifying.verify_mode == ssl.CERT_REQUIRED and verifying.check_hostname
    assert not client_context(files, check_hostname=False).check_hostname
    assert client_context(files, verify=False).verify_mode == ssl.CERT_NONE
    mutual = server_context(files, verify_client=True)
    assert mutual.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ValueError):
        server_context(TLSFiles())


def test_describe_refusal() -> None:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_message = "self-signed certificate"
    assert describe_refusal(exc) == "certificate refused: self-signed certificate"
    assert describe_refusal(OSError("boom")) == "boom"


def test_settings_need_a_certificate(pki: PKI) -> None:
    with pytest.raises(ValueError, match="tls_cert_file"):
        Settings(sip_transports=["udp", "tls"])
    with pytest.raises(ValueError, match="tls_cert_file"):
        Settings(msrp_tls_port=0)
    with pytest.raises(ValueError, match="http_tls_cert_file"):
        Settings(http_tls_key_file="k.pem")
    plain = Settings()
    assert plain.server_root.startswith("http://") and sip_tls(plain) == (None, None)
    assert msrp_tls(plain) is None and http_tls(plain) is None
    https = Settings(http_tls_cert_file=str(pki.good.cert), http_tls_key_file=str(pki.good.key))
    assert https.server_root == "https://127.0.0.1:8080"
    assert isinstance(http_tls(https), ssl.SSLContext)
    full = Settings(
        sip_transports=["tcp", "tls"],
        tls_cert_file=str(pki.good.cert),
        tls_key_file=str(pki.good.key),
        tls_ca_file=str(pki.ca),
        msrp_tls_port=0,
    )
    server, client = sip_tls(full)
    assert server is not None and client is not None
    tls = msrp_tls(full)
    assert tls is not None and tls.fingerprint.startswith("sha-256 ")


def test_unreadable_files_are_a_config_error(tmp_path, pki: PKI) -> None:
    bad = Settings(
        sip_transports=["tls"], tls_cert_file=str(tmp_path / "missing.pem"), msrp_tls_port=0
    )
    with pytest.raises(ConfigError, match="SIP"):
        sip_tls(bad)
    with pytest.raises(ConfigError, match="MSRP"):
        msrp_tls(bad)
    with pytest.raises(ConfigError, match="http_tls"):
        http_tls(Settings(http_tls_cert_file=str(pki.ca)))  # a CA certificate, no key


def test_tls_offer_and_answer_in_sdp() -> None:
    fingerprint = "sha-256 " + ":".join(["AB"] * 32)
    path = "msrps://127.0.0.1:4000/s1;tcp"
    offer = sdp.parse(payload.offer("127.0.0.1", 4000, path, fingerprint))
    media = sdp.msrp_media(offer)
    assert media.tls and media.fingerprint == fingerprint and media.path == (path,)
    assert b"m=message 4000 TCP/TLS/MSRP *" in sdp.serialize(offer)
    answer = sdp.msrp_media(
        sdp.parse(
            payload.answer(offer, "127.0.0.1", 4001, "msrps://127.0.0.1:4001/s2;tcp", fingerprint)
        )
    )
    assert answer.tls and answer.fingerprint == fingerprint
    plain = sdp.msrp_media(
        sdp.parse(payload.offer("127.0.0.1", 4000, "msrp://127.0.0.1:4000/s;tcp"))
    )
    assert not plain.tls and plain.fingerprint is None


async def test_sips_routes_over_tls_only() -> None:
    from sip.errors import SIPError
    from sip.message import parse_message
    from sip.transport import TransportLayer
    from sip.uri import parse_uri

    layer = TransportLayer(host="127.0.0.1")
    target = await layer.resolve(parse_uri("sips:bob@127.0.0.1:5061;transport=tcp"))
    assert (target.transport, target.port, target.server_name) == ("tls", 5061, "127.0.0.1")
    named = await layer.resolve(parse_uri("sip:localhost;transport=tls"))
    assert named.transport == "tls" and named.server_name == "localhost"
    assert named.port == 5061 and named.host in ("127.0.0.1", "::1")

    def request(uri: str) -> object:
        return parse_message(
            (
                f"MESSAGE {uri} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
                "From: <sip:a@ims.test>;tag=1\r\nTo: <sip:b@ims.test>\r\nCall-ID: c1\r\n"
                "CSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode()
        )

    layer.outbound_proxy = parse_uri("sip:127.0.0.1:5060;transport=tcp")  # type: ignore[assignment]
    with pytest.raises(SIPError) as info:
        await layer.target_for(request("sips:b@ims.test"))  # type: ignore[arg-type]
    assert info.value.status == 503
    assert (await layer.target_for(request("sip:b@ims.test"))).transport == "tcp"  # type: ignore[arg-type]
    layer.outbound_proxy = parse_uri("sip:127.0.0.1:5061;transport=tls")  # type: ignore[assignment]
    assert (await layer.target_for(request("sips:b@ims.test"))).transport == "tls"  # type: ignore[arg-type]


async def test_tls_listener_via_and_contacts(pki: PKI) -> None:
    from sip.stack import SipStack

    files = TLSFiles(str(pki.good.cert), str(pki.good.key), ca_file=str(pki.ca))
    stack = SipStack(
        host="127.0.0.1",
        port=0,
        transports=["tcp", "tls"],
        tls_server=server_context(files),
        tls_client=client_context(files),
        outbound_proxy="sip:127.0.0.1:5061;transport=tls",
    )
    addresses = await stack.start()
    try:
        tls_port = stack.tls_port
        assert ("tls", "127.0.0.1", tls_port) in addresses and tls_port != stack.port
        assert stack.out_transport == "tls"
        via = stack.transport.via_for("tls", "z9hG4bK1")
        assert via.startswith(f"SIP/2.0/TLS 127.0.0.1:{tls_port};")
        contact = stack.contact_for("sip:+15555550001@ims.test", "tls")
        assert contact.startswith(f"<sip:+15555550001@127.0.0.1:{tls_port};transport=tls>")
        invite = stack._new_request(
            "INVITE", "sips:bob@ims.test", "sip:+15555550001@ims.test", [], b"", None
        )
        assert (invite.get("Contact") or "").startswith(f"<sips:+15555550001@127.0.0.1:{tls_port}>")
    finally:
        await stack.stop()
