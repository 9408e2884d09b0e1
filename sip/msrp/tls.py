"""MSRP over TLS (RFC 4975 §14, ``msrps://``): contexts, our fingerprint, the peer check.

Public API::

    MSRPTLS.from_files(files, port=0, verify="fingerprint")   sip.tls.TLSFiles
        .server          the listener's context (no client certificate asked)
        .fingerprint     our a=fingerprint (sha-256 of our certificate, RFC 8122 §5)
        .context_for(fingerprint) -> ssl.SSLContext     how to dial a peer
        .check(transport, fingerprint, who) -> None    raises MSRPError(403) on a mismatch

Design notes
------------
RFC 4975 §14.1 lets a TLS endpoint use a self-signed certificate whose fingerprint it
puts in the SDP (RFC 4572 §5; RFC 8122 §5). ``verify`` decides how the side that opens
the connection (RFC 4975 §5.4, RFC 6135 active) trusts the peer:

* ``fingerprint``: with an ``a=fingerprint`` in the peer's SDP, the chain is not checked
  and the certificate must match it; with none, the chain is verified against the CAs.
* ``peer``: the chain is always verified, and the fingerprint too when there is one.
* ``none``: nothing is checked (tests only).

The passive side serves its certificate and asks for none: Python's ``ssl`` module cannot
take a self-signed client certificate and check its fingerprint afterwards (docs/tls.md).
A refused peer gets one warning line naming it and the reason.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from typing import Literal

from sip.errors import MSRPError
from sip.tls import (
    TLSFiles,
    client_context,
    fingerprint_matches,
    local_fingerprint,
    peer_certificate,
    server_context,
)

__all__ = ["MSRPTLS", "Verify"]

log = logging.getLogger(__name__)

Verify = Literal["fingerprint", "peer", "none"]


@dataclass(frozen=True)
class MSRPTLS:
    """Contexts and policy of MSRP over TLS (module docstring)."""

    server: ssl.SSLContext
    verifying: ssl.SSLContext
    unverified: ssl.SSLContext
    fingerprint: str
    port: int = 0
    verify: Verify = "fingerprint"

    @classmethod
    def from_files(cls, files: TLSFiles, port: int = 0, verify: Verify = "fingerprint") -> MSRPTLS:
        """Contexts from PEM files (raises OSError, ssl.SSLError or ValueError on bad ones).

        Host names are not checked: an MSRP URI's authority is an address from the SDP,
        and the SDP's fingerprint (or the CA chain) is what binds the peer."""
        return cls(
            server=server_context(files),
            verifying=client_context(files, verify=True, check_hostname=False),
            unverified=client_context(files, verify=False),
            fingerprint=local_fingerprint(files),
            port=port,
            verify=verify,
        )

    def context_for(self, fingerprint: str | None) -> ssl.SSLContext:
        """The context to dial a peer whose SDP gave ``fingerprint`` (or none)."""
        if self.verify == "none" or (self.verify == "fingerprint" and fingerprint):
            return self.unverified
        return self.verifying

    def check(
        self,
        transport: asyncio.BaseTransport | None,
        fingerprint: str | None,
        who: str,
        *,
        verified: bool,
    ) -> None:
        """Refuse the peer on ``transport`` (MSRPError 403, one warning line) when its
        certificate does not match ``fingerprint``, or when there is none to match and the
        connection was not verified against the CAs (``verified``)."""
        if self.verify == "none":
            return
        if not fingerprint:
            if not verified:
                log.warning("MSRP TLS peer %s refused: no a=fingerprint and chain unchecked", who)
                raise MSRPError(403, "peer certificate not verified", local=True)
            return
        der = peer_certificate(transport)
        if der is None:
            log.warning("MSRP TLS peer %s refused: no certificate presented", who)
            raise MSRPError(403, "peer presented no certificate", local=True)
        if not fingerprint_matches(fingerprint, der):
            log.warning(
                "MSRP TLS peer %s refused: certificate does not match a=fingerprint:%s",
                who,
                fingerprint,
            )
            raise MSRPError(403, "peer certificate fingerprint mismatch", local=True)
