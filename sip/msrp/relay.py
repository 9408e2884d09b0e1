"""MSRP relay client side (RFC 4976): AUTH results, Use-Path, refresh timing.

# Why this shape
#
# A client behind a relay AUTHs once per session URI (Kamailio's relay binds a
# relay session to the AUTH's From-Path and delivers frames for that URI on the
# AUTH connection, testbed NOTES §5), gets ``Use-Path`` and ``Expires``, puts
# the Use-Path before its own URI in SDP a=path and in front of the peer's path
# in To-Path, and re-AUTHs before expiry. A 423 carries Min-Expires or
# Max-Expires: the request is retried once with the bound (RFC 4976). A 401
# carries WWW-Authenticate digest challenges (RFC 4976 §5.2): with credentials
# configured, the AUTH is repeated once with an Authorization header computed
# by ``sip.auth`` (method ``AUTH``, digest-uri = the relay's URI); without, or
# if the relay rejects them again, the 401 surfaces as ``MSRPError(401)``.
# Nothing here does I/O: transport.py sends the AUTH bytes and feeds the
# ``AuthResponse`` events back.
"""

from __future__ import annotations

from dataclasses import dataclass

from sip.auth import DigestClient, select_challenge
from sip.errors import CodecError, MSRPError
from sip.msrp.events import AuthResponse
from sip.msrp.uri import MSRPURI, parse_uri

REFRESH_FRACTION = 0.8
"""Re-AUTH after this share of the granted Expires."""
MIN_REFRESH = 30.0


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Where and how to AUTH (RFC 4976 §5.1); ``uri`` has no session-id."""

    uri: MSRPURI
    expires: int | None = None
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_string(
        cls,
        text: str,
        *,
        expires: int | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> RelayConfig:
        """Build from ``msrp://host:port;tcp`` (as in Settings.msrp_relay)."""
        return cls(parse_uri(text), expires, username, password)


@dataclass(frozen=True, slots=True)
class RelayBinding:
    """A granted AUTH: the Use-Path to advertise and when it expires."""

    use_path: tuple[MSRPURI, ...]
    expires: int
    granted_at: float

    @property
    def refresh_at(self) -> float:
        """Loop time at which to re-AUTH."""
        return self.granted_at + max(MIN_REFRESH, self.expires * REFRESH_FRACTION)


def retry_expires(resp: AuthResponse) -> int | None:
    """For a 423, the Expires to retry with (Min-/Max-Expires), else None."""
    if resp.status != 423 or resp.message is None:
        return None
    for name in ("Min-Expires", "Max-Expires"):
        value = resp.message.header(name)
        if value is not None and value.isdigit():
            return int(value)
    return None


def authorization_for(resp: AuthResponse, config: RelayConfig, client: DigestClient) -> str | None:
    """For a 401 and configured credentials, the Authorization value to retry with."""
    if resp.status != 401 or resp.message is None or config.username is None:
        return None
    challenges = [v for n, v in resp.message.headers if n.lower() == "www-authenticate"]
    try:
        challenge = select_challenge(challenges)
        creds = client.authorize(
            challenge, "AUTH", str(config.uri), config.username, config.password or ""
        )
    except CodecError:
        return None
    return str(creds)


def binding_from(resp: AuthResponse, now: float, default_expires: int = 3600) -> RelayBinding:
    """Interpret an AUTH response; raises MSRPError unless it is a 200 with Use-Path."""
    if resp.status != 200 or resp.message is None:
        raise MSRPError(resp.status, resp.reason or "AUTH failed", local=resp.message is None)
    use_path = resp.message.use_path
    if not use_path:
        raise MSRPError(200, "AUTH response without Use-Path", local=True)
    expires = resp.message.expires
    return RelayBinding(use_path, expires if expires is not None else default_expires, now)
