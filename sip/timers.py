"""SIP transaction timer values (RFC 3261 §17 and Table 4, RFC 6026 §8.4)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Timers"]


@dataclass(frozen=True, slots=True)
class Timers:
    """T1/T2/T4 and the timers A-M derived from them (seconds).

    Timers that only exist to absorb retransmissions (D, I, J, K) are 0 on reliable
    transports; A, E and G (retransmission) are not used there at all.
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    trying_delay: float = 0.2
    """Delay before a server INVITE transaction sends 100 Trying itself (RFC 3261 §17.2.1)."""
    d_unreliable: float = 32.0
    """Timer D on UDP (RFC 3261 Table 4: at least 32 s)."""

    @property
    def a(self) -> float:
        """Initial INVITE retransmit interval (doubles each time, no cap)."""
        return self.t1

    @property
    def b(self) -> float:
        """INVITE transaction timeout."""
        return 64 * self.t1

    def d(self, reliable: bool) -> float:
        """Wait time for response retransmits in INVITE Completed (>= 32 s unreliable)."""
        return 0.0 if reliable else self.d_unreliable

    @property
    def e(self) -> float:
        """Initial non-INVITE retransmit interval (doubles, capped at T2)."""
        return self.t1

    @property
    def f(self) -> float:
        """Non-INVITE transaction timeout."""
        return 64 * self.t1

    @property
    def g(self) -> float:
        """Initial INVITE final-response retransmit interval (doubles, capped at T2)."""
        return self.t1

    @property
    def h(self) -> float:
        """Wait time for ACK receipt."""
        return 64 * self.t1

    def i(self, reliable: bool) -> float:
        """Wait time for ACK retransmits."""
        return 0.0 if reliable else self.t4

    def j(self, reliable: bool) -> float:
        """Wait time for non-INVITE request retransmits."""
        return 0.0 if reliable else 64 * self.t1

    def k(self, reliable: bool) -> float:
        """Wait time for non-INVITE response retransmits."""
        return 0.0 if reliable else self.t4

    @property
    def l(self) -> float:  # noqa: E743 - the RFC's name
        """Wait time for INVITE retransmits in Accepted (RFC 6026)."""
        return 64 * self.t1

    @property
    def m(self) -> float:
        """Wait time for 2xx retransmits in client Accepted (RFC 6026)."""
        return 64 * self.t1
