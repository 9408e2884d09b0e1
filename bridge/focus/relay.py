"""Relaying of MSRP messages between the members of one conference (docs/group-chat.md
items 4 and 5; RFC 4975 §7.1, RFC 3862, RFC 5438 §7.1.1.3).

A ``message/cpim`` body from a member goes unchanged to every other connected member:
the CPIM From names the real sender, so receivers see who wrote. The headers are parsed
once per message; only when the From is missing or anonymous is the envelope rewritten
(once) with the sender's address. An IMDN (payload ``message/imdn+xml``) goes only to the
member its CPIM To names. isComposing (CPIM-wrapped) is relayed like a chat message.

The same bytes go to every receiver, and the SENDs run concurrently: one task per receiver
waits for that receiver's 200 (RFC 4975 §7.1.1), so a slow member never delays the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from bridge.focus.wire import key_of
from sip import cpim
from sip.errors import CodecError, MSRPError
from sip.msrp import MSRPSession

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Routed:
    """Where one incoming message goes: the body to send and, for an IMDN, its one receiver."""

    body: bytes
    only: str | None
    """The key of the single receiver (an IMDN), or None for every other member."""


def route(body: bytes, sender_uri: str) -> Routed:
    """Parses the CPIM envelope once and decides body and receivers (module docstring)."""
    message = cpim.parse(body)
    sender = message.sender
    if sender is None or sender.uri.strip().lower() == cpim.ANONYMOUS_URI:
        message = replace(message, sender=cpim.NameAddr(sender_uri))
        body = cpim.serialize(message)
    if message.is_imdn:
        if not message.to:
            raise CodecError("cpim: an IMDN without To")
        return Routed(body, key_of(message.to[0].uri))
    return Routed(body, None)


class Relay:
    """Sends one body to many MSRP sessions at once and counts what it relayed."""

    def __init__(self, conference_uri: str) -> None:
        self.conference_uri = conference_uri
        self.relayed = 0
        self.failed = 0

    async def fan_out(self, body: bytes, receivers: Sequence[MSRPSession]) -> None:
        """SENDs ``body`` (``message/cpim``) to every receiver concurrently."""
        if not receivers:
            return
        results = await asyncio.gather(
            *(r.send(cpim.CONTENT_TYPE, body) for r in receivers), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                if not isinstance(result, (MSRPError, OSError)):
                    raise result
                self.failed += 1
                log.info("x relay in %s failed: %s", self.conference_uri, result)
            else:
                self.relayed += 1
