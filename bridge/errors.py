"""Errors of the bridge.

The tree::

    BridgeError
    ├── ConfigError                 bad settings file or environment
    ├── StoreError                  the store failed or is unreachable
    ├── NotFound                    a REST resource does not exist (or expired)
    ├── Conflict                    an operation does not fit the resource's state
    ├── PolicyViolation             allowed by the API, refused by policy (limits)
    └── Unavailable                 backpressure or a dependency is down (retry later)

The protocol library ``sip`` has its own root, ``sip.errors.ProtocolError``
(``CodecError`` is also a ``ValueError``; ``SIPError``/``MSRPError`` carry
``.status`` and ``.local``); the bridge wraps those once, at the adapter edge.
``rest.errors`` maps every class here to an OMA fault (messageId + HTTP status).
"""

from __future__ import annotations


class BridgeError(Exception):
    """Root of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    """The configuration file or environment holds an invalid value."""


class StoreError(BridgeError):
    """The session store failed or cannot be reached."""


class NotFound(BridgeError):
    """A resource does not exist, was deleted or has expired."""

    def __init__(self, what: str, ident: str) -> None:
        super().__init__(f"{what} {ident!r} not found")
        self.what = what
        self.ident = ident


class Conflict(BridgeError):
    """The operation does not fit the current state of the resource."""


class PolicyViolation(BridgeError):
    """The request is well formed but refused by a configured policy or limit.

    ``message_id`` is the OMA PolicyException id (``POL0001``, ``POL0003`` …).
    """

    def __init__(self, message_id: str, text: str, *variables: str) -> None:
        super().__init__(text)
        self.message_id = message_id
        self.text = text
        self.variables = list(variables)


class Unavailable(BridgeError):
    """Temporarily unable to serve (backpressure, IMS core down); retry later."""

    def __init__(self, reason: str, retry_after: int = 5) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
