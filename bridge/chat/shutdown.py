"""Graceful shutdown of chat: end the live sessions of this process and tell their apps.

``bridge.chat.assembly.ChatBridge.shutdown`` runs :func:`end_live_sessions` with the
legs the signalling side still holds (``bridge.app`` passes them; docs/configuration.md
"Shutdown"). Each session goes through the RESTART event of its machine (the process that
holds its dialog goes away), in one unit with its notifications, exactly as restart recovery
(``bridge.chat.recovery``) would report it at the next start, but while the dialog is still
up, so the peer is told on the wire at once instead of after the restart:

========================  ==============================  ===============================
session (state)           the app hears                   the peer gets
========================  ==============================  ===============================
1-1 INVITING              ``Failed``                      CANCEL
1-1 RINGING               ``SessionCancelled``            480 (``Retry-After``-less)
1-1 ACCEPTING/CONNECTED   ``SessionEnded``                BYE
group JOINING             ``Failed``                      CANCEL
group INVITED             ``SessionCancelled``            480
group ACCEPTING/CONNECTED ``SessionEnded``                BYE with ``Reason: SIP;cause=200``
                                                          (the member leaves; the focus
                                                          tells the others)
implicit (adhoc)          nothing (mapping N6)            BYE, or CANCEL while inviting
========================  ==============================  ===============================

A 1-1 or group session's unacknowledged messages fail with it (``Failed`` status
notifications, as for any end of session: ``ChatCore.transition``). An implicit session's
unsent messages stay queued: the next start sends them again (``bridge.chat.recovery``),
so nothing the app was answered 201 for is lost. The wire effects run after each unit's
commit; the caller waits for them with ``SipSignalling.settle``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from bridge.chat import adhoc, group, one2one
from bridge.chat.core import AnyEvent, ChatCore, is_terminal, session_key
from bridge.chat.model import ChatSession, Direction, LegId, SessionKind
from bridge.chat.ports import SignallingError

log = logging.getLogger(__name__)

SHUTDOWN_REASON = "shutdown"
"""``end_reason`` of the sessions ended by a graceful shutdown."""
RINGING_STATUS = 480
"""SIP status of an invitation still ringing when the bridge stops (RFC 3261 §21.4.18)."""
CONCURRENCY = 64
"""Sessions ended at once (each is one unit of work, then its wire effect)."""

_RESTART: dict[SessionKind, AnyEvent] = {
    SessionKind.CONFIRMED: one2one.SessionEvent.RESTART,
    SessionKind.GROUP: group.GroupEvent.RESTART,
    SessionKind.ADHOC: adhoc.AdhocEvent.RESTART,
}


@dataclass(frozen=True)
class ShutdownReport:
    """What :func:`end_live_sessions` did."""

    sessions_ended: int = 0
    wire_failures: int = 0


async def end_live_sessions(core: ChatCore, legs: Iterable[LegId]) -> ShutdownReport:
    """End the live session of each of ``legs`` (module docstring); legs of no live session
    (already over, or a focus's) are skipped."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(leg: LegId) -> tuple[bool, bool]:
        async with gate:
            return await _end(core, leg)

    outcomes = await asyncio.gather(*(one(leg) for leg in legs))
    report = ShutdownReport(
        sessions_ended=sum(1 for ended, _ in outcomes if ended),
        wire_failures=sum(1 for _, failed in outcomes if failed),
    )
    log.info(
        "- shutdown: %d live sessions ended (%d could not be ended on the wire)",
        report.sessions_ended,
        report.wire_failures,
    )
    return report


async def _end(core: ChatCore, leg: LegId) -> tuple[bool, bool]:
    """(ended, wire failed) for the session of ``leg``."""
    found = await core.leg_session(leg)
    if found is None:
        return False, False
    async with core.locks.hold(session_key(found)):
        async with core.unit() as work:
            before = await work.tx.session_by_id(found.id)
            if before is None or is_terminal(before):
                return False, False
            await core.transition(work, before, _RESTART[before.kind], reason=SHUTDOWN_REASON)
        try:
            await _wire(core, before, leg)
        except SignallingError as exc:
            log.warning("x shutdown: cannot end leg %s on the wire: %s", leg, exc)
            return True, True
    return True, False


async def _wire(core: ChatCore, before: ChatSession, leg: LegId) -> None:
    """The SIP side of ending ``before`` (its state before the RESTART event)."""
    port = core.signalling
    if before.kind is SessionKind.CONFIRMED:
        state = one2one.SessionState(before.state)
        if state is one2one.SessionState.RINGING:
            await port.reject_session(leg, RINGING_STATUS)
        elif state is one2one.SessionState.INVITING:
            await port.cancel_session(leg)
        else:
            await port.end_session(leg)
    elif before.kind is SessionKind.GROUP:
        g = group.GroupState(before.state)
        if g is group.GroupState.INVITED:
            await port.reject_session(leg, RINGING_STATUS)
        elif g is group.GroupState.JOINING:
            await port.cancel_session(leg)
        else:
            await port.leave_group(leg)
    elif (
        adhoc.AdhocState(before.state) is adhoc.AdhocState.CONNECTING
        and before.direction is Direction.OUTGOING
    ):
        await port.cancel_session(leg)
    else:
        await port.end_session(leg)
