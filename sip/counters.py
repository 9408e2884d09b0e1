"""Counting hooks of the SIP and MSRP stacks: the bridge plugs its metrics in here.

The stacks call these on their hot paths, so an implementation must be cheap (no I/O,
no lock held for long). The defaults count nothing; ``bridge.observability.metrics``
provides the Prometheus ones (docs/operations.md lists what is counted).
"""

from __future__ import annotations

from typing import Protocol

from sip.message import Message

__all__ = ["MSRPCounters", "NoMSRPCounters", "NoSipCounters", "SipCounters"]


class SipCounters(Protocol):
    """What the SIP stack reports: messages on the wire, retransmissions, timeouts."""

    def received(self, msg: Message) -> None:
        """A request or response arrived (retransmissions included)."""
        ...

    def sent(self, msg: Message) -> None:
        """A request or response was written (retransmissions included)."""
        ...

    def retransmitted(self, method: str) -> None:
        """A request, or a response to ``method``, was sent again (RFC 3261 §17 timers
        A, E, G and the 2xx of §13.3.1.4)."""
        ...

    def timed_out(self, method: str) -> None:
        """A transaction of ``method`` ended without its answer (timers B, F, H; no ACK)."""
        ...


class NoSipCounters:
    """Counts nothing (the default)."""

    def received(self, msg: Message) -> None:
        """Nothing."""

    def sent(self, msg: Message) -> None:
        """Nothing."""

    def retransmitted(self, method: str) -> None:
        """Nothing."""

    def timed_out(self, method: str) -> None:
        """Nothing."""


class MSRPCounters(Protocol):
    """What the MSRP stack reports: frames and bytes by direction, errors by kind."""

    def received(self, frames: int, size: int) -> None:
        """``size`` bytes arrived on a connection, completing ``frames`` frames."""
        ...

    def sent(self, frames: int, size: int) -> None:
        """``size`` bytes holding ``frames`` frames were written on a connection."""
        ...

    def error(self, kind: str) -> None:
        """An MSRP error: ``framing`` (connection closed), ``broken`` (transaction timeout
        or connection lost), ``rejected`` (a request answered non-200), ``failed`` (one of
        our messages failed)."""
        ...


class NoMSRPCounters:
    """Counts nothing (the default)."""

    def received(self, frames: int, size: int) -> None:
        """Nothing."""

    def sent(self, frames: int, size: int) -> None:
        """Nothing."""

    def error(self, kind: str) -> None:
        """Nothing."""
