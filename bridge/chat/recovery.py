"""Restart recovery of 1-1 chat (issue 4 item 4; sip-msrp-mapping.md §3).

The SIP dialogs and MSRP connections of the previous run died with its
process, so nothing that was live can be resumed; it is reported instead, in
one transaction with its notifications:

* confirmed sessions: INVITING → ``Failed``, RINGING → ``SessionCancelled``,
  ACCEPTING/CONNECTED → ``SessionEnded`` (the RESTART event of ``one2one``);
  their unacknowledged messages → ``Failed``;
* implicit sessions are closed without notification; their unacknowledged
  messages, and pager messages without an answer, are queued again and sent
  on a new implicit session (or by pager), once: the peer deduplicates on
  imdn.Message-ID, so a message that did arrive is not shown twice;
* messages and ended sessions past ``chat_message_retention_days`` are purged.

Notifications already in the outbox are the notifier's business (they survive
on their own). Known gap: a received message whose notification reached the
app right before the crash, but whose "delivered" IMDN had not been sent yet,
gets no automatic IMDN; the app's ``PUT Delivered`` still sends it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from bridge.chat import adhoc, delivery, one2one
from bridge.chat.delivery import OutgoingEvent
from bridge.chat.model import ADHOC, Direction, SessionKind
from bridge.ids import UserUri

if TYPE_CHECKING:
    from bridge.chat.service import ChatService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecoveryReport:
    """What a restart found and did."""

    sessions_closed: int = 0
    messages_failed: int = 0
    messages_requeued: int = 0
    purged: int = 0


async def recover(service: ChatService) -> RecoveryReport:
    """Close what the previous run left live, fail or requeue its unsent messages."""
    closed = failed = 0
    pairs: dict[tuple[UserUri, UserUri], int] = {}
    async with service.unit() as work:
        retention = timedelta(days=service.settings.chat_message_retention_days)
        purged = await work.tx.purge_expired(now=work.now, ended_before=work.now - retention)
        live = [s.value for s in one2one.LIVE]
        for cs in await work.tx.sessions_in_states(SessionKind.CONFIRMED, live):
            await service.transition(work, cs, one2one.SessionEvent.RESTART, reason="restart")
            closed += 1
        live = [s.value for s in adhoc.LIVE]
        for cs in await work.tx.sessions_in_states(SessionKind.ADHOC, live):
            await service.transition(work, cs, adhoc.AdhocEvent.RESTART, reason="restart")
            closed += 1
        unsent = [s.value for s in delivery.UNSENT]
        for msg in await work.tx.messages_in_states(Direction.OUTGOING, unsent):
            if msg.rest_session != ADHOC:
                await service.outgoing_transition(work, msg, OutgoingEvent.SEND_ERROR)
                failed += 1
                continue
            await service.outgoing_transition(work, msg, OutgoingEvent.REQUEUE, detach=True)
            pairs[(msg.user, msg.peer)] = pairs.get((msg.user, msg.peer), 0) + 1
    report = RecoveryReport(closed, failed, sum(pairs.values()), purged)
    if closed or failed or pairs or purged:
        log.info(
            "- chat recovery: %d sessions closed, %d messages failed, %d requeued, %d purged",
            report.sessions_closed,
            report.messages_failed,
            report.messages_requeued,
            report.purged,
        )
    for user, peer in pairs:
        await service.pump_adhoc(user, peer)
    return report
