"""TLS of the SIP, MSRP and REST listeners from ``Settings`` (docs/tls.md).

Usage (``bridge.signalling.wiring`` and ``bridge.app``)::

    sip_tls(settings)   -> (server, client) ssl contexts for SipStack, or (None, None)
    msrp_tls(settings)  -> MSRPTLS for MSRPStack, or None
    http_tls(settings)  -> ssl context for aiohttp's TCPSite, or None

Every builder raises ``ConfigError`` naming the setting when a file cannot be read or
does not hold what it should, so a bad path stops the start with one clear line.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import TypeVar

from bridge.config import Settings
from bridge.errors import ConfigError
from sip.msrp import MSRPTLS
from sip.tls import TLSFiles, client_context, server_context

T = TypeVar("T")


def tls_files(settings: Settings) -> TLSFiles:
    """The certificate, key and CAs of the SIP and MSRP legs."""
    return TLSFiles(
        cert_file=settings.tls_cert_file,
        key_file=settings.tls_key_file,
        ca_file=settings.tls_ca_file,
        ca_dir=settings.tls_ca_dir,
    )


def _built(what: str, build: Callable[[], T]) -> T:
    try:
        return build()
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError(f"{what}: {exc}") from exc


def sip_tls(settings: Settings) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """(listener, connector) contexts when ``tls`` is in ``sip_transports`` or the outbound
    proxy is reached over TLS; (None, None) otherwise (TLS then uses the system store)."""
    files = tls_files(settings)
    proxy = (settings.sip_outbound_proxy or "").lower()
    dials_tls = proxy.startswith("sips:") or "transport=tls" in proxy
    if "tls" not in settings.sip_transports and not dials_tls and not settings.tls_cert_file:
        return None, None
    server = None
    if "tls" in settings.sip_transports:
        server = _built(
            "tls_cert_file/tls_key_file (SIP)",
            lambda: server_context(files, verify_client=settings.sip_tls_verify_client),
        )
    client = _built(
        "tls_ca_file/tls_ca_dir (SIP)",
        lambda: client_context(
            files,
            verify=settings.sip_tls_verify == "peer",
            check_hostname=settings.sip_tls_check_hostname,
        ),
    )
    return server, client


def msrp_tls(settings: Settings) -> MSRPTLS | None:
    """MSRP over TLS (``msrp_tls_port`` set), or None."""
    if settings.msrp_tls_port is None:
        return None
    return _built(
        "tls_cert_file/tls_key_file/tls_ca_file (MSRP)",
        lambda: MSRPTLS.from_files(
            tls_files(settings), settings.msrp_tls_port or 0, settings.msrp_tls_verify
        ),
    )


def http_tls(settings: Settings) -> ssl.SSLContext | None:
    """The REST listener's context (``http_tls_cert_file`` set), or None."""
    if not settings.http_tls_cert_file:
        return None
    files = TLSFiles(settings.http_tls_cert_file, settings.http_tls_key_file)
    return _built("http_tls_cert_file/http_tls_key_file", lambda: server_context(files))
