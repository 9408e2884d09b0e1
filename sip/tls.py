"""TLS contexts and certificate fingerprints for SIP (RFC 3261 §26.2) and MSRP (RFC 4975 §14).

Public API::

    TLSFiles(cert_file, key_file, ca_file=None, ca_dir=None)     what is on disk (PEM)
    server_context(files, *, verify_client=False) -> ssl.SSLContext   a listener's context
    client_context(files, *, verify=True, check_hostname=True) -> ssl.SSLContext
    certificate_fingerprint(der, algorithm="sha-256") -> "sha-256 AB:CD:…"   (RFC 8122 §5)
    local_fingerprint(files) -> str        the a=fingerprint value of our own certificate
    peer_certificate(transport) -> bytes | None    DER of the peer's certificate on a stream
    fingerprint_matches(expected, der) -> bool     an SDP a=fingerprint against a certificate
    describe_refusal(exc) -> str           why a handshake failed, in one short phrase

Design notes
------------
Contexts are built once at start from the settings and shared by every connection of a
listener or a connector. A client context with ``verify=False`` still receives the peer's
certificate (a TLS client always does), so MSRP can compare it with the SDP fingerprint
of a self-signed peer (RFC 4572 §6, RFC 8122 §6) after the handshake. A server context
asks for a client certificate only with ``verify_client`` (mutual TLS against the CAs):
Python's ``ssl`` module has no verification callback, so a listener cannot take an
arbitrary self-signed client certificate and check its fingerprint afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "TLSFiles",
    "certificate_fingerprint",
    "client_context",
    "describe_refusal",
    "fingerprint_matches",
    "local_fingerprint",
    "peer_certificate",
    "server_context",
]

_HASHES = {
    "sha-1": "sha1",
    "sha-224": "sha224",
    "sha-256": "sha256",
    "sha-384": "sha384",
    "sha-512": "sha512",
}
"""Hash functions of RFC 8122 §5 (names as in SDP) and their hashlib names."""


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """PEM files: our certificate chain and key, and the CAs that verify peers (none:
    the system trust store)."""

    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    ca_dir: str | None = None


def server_context(files: TLSFiles, *, verify_client: bool = False) -> ssl.SSLContext:
    """The context of a TLS listener: our certificate; a client certificate verified
    against the CAs only with ``verify_client``. Raises OSError/ssl.SSLError on bad files."""
    if not files.cert_file:
        raise ValueError("a TLS listener needs a certificate file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(files.cert_file, files.key_file or None)
    if verify_client:
        ctx.verify_mode = ssl.CERT_REQUIRED
        if files.ca_file or files.ca_dir:
            ctx.load_verify_locations(cafile=files.ca_file, capath=files.ca_dir)
        else:
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    return ctx


def client_context(
    files: TLSFiles, *, verify: bool = True, check_hostname: bool = True
) -> ssl.SSLContext:
    """The context of outgoing TLS connections: the peer's chain verified against the CAs
    (and its name against the host we dialled) unless ``verify`` is False; our certificate
    is presented when the peer asks for one."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify:
        ctx.check_hostname = check_hostname
        ctx.verify_mode = ssl.CERT_REQUIRED
        if files.ca_file or files.ca_dir:
            ctx.load_verify_locations(cafile=files.ca_file, capath=files.ca_dir)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if files.cert_file:
        ctx.load_cert_chain(files.cert_file, files.key_file or None)
    return ctx


def certificate_fingerprint(der: bytes, algorithm: str = "sha-256") -> str:
    """The SDP ``a=fingerprint`` value of a DER certificate (RFC 8122 §5):
    ``sha-256 AB:CD:…`` (upper-case hex pairs)."""
    digest = hashlib.new(_HASHES[algorithm.lower()], der).hexdigest().upper()
    return f"{algorithm.lower()} " + ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _first_pem_der(path: str) -> bytes:
    text = Path(path).read_text(encoding="ascii")
    begin = "-----BEGIN CERTIFICATE-----"
    start = text.find(begin)
    end = text.find("-----END CERTIFICATE-----", start)
    if start < 0 or end < 0:
        raise ValueError(f"no PEM certificate in {path}")
    return base64.b64decode("".join(text[start + len(begin) : end].split()))


def local_fingerprint(files: TLSFiles) -> str:
    """The sha-256 fingerprint of our own (first, leaf) certificate."""
    if not files.cert_file:
        raise ValueError("no certificate file")
    return certificate_fingerprint(_first_pem_der(files.cert_file))


def peer_certificate(transport: asyncio.BaseTransport | None) -> bytes | None:
    """The DER certificate the peer presented on a TLS stream (None: plain or none sent)."""
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return bytes(der) if der else None


def fingerprint_matches(expected: str, der: bytes) -> bool:
    """Whether an SDP ``a=fingerprint`` value (``hash-func fingerprint``, RFC 8122 §5)
    names ``der``; an unknown hash function never matches."""
    algorithm, _, value = expected.strip().partition(" ")
    if algorithm.lower() not in _HASHES:
        return False
    ours = certificate_fingerprint(der, algorithm).partition(" ")[2]
    return ours == value.strip().upper()


def describe_refusal(exc: BaseException) -> str:
    """One short phrase for a failed handshake: the verification message when there is one."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate refused: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    return str(exc) or type(exc).__name__
