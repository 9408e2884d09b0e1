"""Restart recovery of chat (docs/decisions.md "Restart recovery").

``bridge.chat.assembly.ChatBridge.start`` runs :func:`recover` with the shared
runtime (``ChatCore``), the implicit sessions' part (``AdhocChat``: requeued
messages) and ``Messages`` (owed reports).

Several instances on one PostgreSQL (issue 10; docs/several-instances.md):
every session, message and conference records its ``owner`` instance, and
``recover`` is given the owners it may touch (``owners``): this instance and
those provably dead (their advisory lock was free, ``state.instances``). A live
peer's sessions are never ended. The same function serves a survivor's
takeover of a dead peer (``bridge.takeover``). On SQLite (one instance)
``owners`` is None: everything left live is the previous run's.

The SIP dialogs and MSRP connections of the previous run died with its
process, so nothing that was live can be resumed; it is reported instead, in
one transaction with its notifications (unchanged from before the dialogs
were stored):

* confirmed sessions: INVITING → ``Failed``, RINGING → ``SessionCancelled``,
  ACCEPTING/CONNECTED → ``SessionEnded`` (the RESTART event of ``one2one``);
  their unacknowledged messages → ``Failed``;
* group sessions (``bridge.chat.group``): INVITED → ``SessionCancelled``,
  JOINING → ``Failed``, ACCEPTING/CONNECTED → ``SessionEnded`` (RESTART);
  their unacknowledged messages → ``Failed``; an established group leg gets
  a BYE like a 1-1 dialog (the focus then reports the member departed);
* implicit sessions are closed without notification; their unacknowledged
  messages, and pager messages without an answer, are queued again and sent
  on a new implicit session (or by pager), once: the peer deduplicates on
  imdn.Message-ID, so a message that did arrive is not shown twice;
* messages and ended sessions past ``chat_message_retention_days`` are purged.

The peers still hold the dialogs. After that commit, in the background so
that start-up never waits for the network, every dialog that was established
(confirmed ACCEPTING/CONNECTED, implicit CONNECTED, and implicit CONNECTING on
the answering side, whichever side sent the INVITE) gets a BYE built from the
dialog state the store kept (``DialogIds``, migration 22) through the
signalling side's :class:`StaleDialogs`. At most :data:`BYE_CONCURRENCY` run
at once, each bounded by the adapter (``STALE_BYE_TIMEOUT``); a 481, a 408 or
no answer is logged and changes nothing: the session already ended. The
sessions keep their Call-ID, tags, Contribution-ID and Conversation-ID for
correlation (docs/protocol-mapping.md "Identifiers"). A dialog whose 2xx
arrived but whose MSRP bind had not finished before the crash is not known
(its To tag was never stored) and gets no BYE.

Owed "delivered" reports: the IMDN goes out when the chatMessageNotification
reaches the app (``bridge.chat.messages.Messages.on_delivered``). The notification outbox deletes
a delivered row a few milliseconds after the 2xx, while the listener runs
beside it; a crash in between leaves the message RECEIVED with no row left,
and no listener will ever run for it. :func:`send_owed_reports` finds those
messages: received, positive-delivery requested, still RECEIVED, younger than
``notification_max_age`` (an older row may have been dropped undelivered, not
delivered), of a user who has a subscription, and with no chatMessageNotification
for it left in the outbox (:class:`NotificationBacklog`). Each goes through
``mark_received`` as if its notification had just been delivered: status
Delivered and the IMDN, on the session if it were up, else by SIP MESSAGE
to the IMDN-Record-Route or the sender (docs/protocol-mapping.md "Reports"); after a
restart no session is up, so it is the MESSAGE. It runs in the background too,
after the delivery listener is registered, so a row delivered meanwhile is
handled by the listener or here, and the message's status machine makes the
second one a no-op.

Reports owed by the previous run (migration 28, ``bridge.chat.core`` "Owed
reports"): a status change that makes an IMDN due records it as owed in the
same transaction, and it stays owed until the peer took it (plus a grace
period). That covers the crash after the Delivered status was committed but
before the IMDN left, or before the peer had it stored (issue 13, defect 9:
about a fifth of the reports of a 500-message burst were lost that way).
:func:`resend_owed_reports` claims every owed report that no other instance
holds (``claimed_until`` past; one ``UPDATE ... RETURNING``, so two instances
restarting on one PostgreSQL database never both send one) and sends it by SIP
MESSAGE, :data:`RESEND_CONCURRENCY` at a time; a report taken is forgotten, one
lost stays owed (claimed for :data:`OWED_CLAIM` seconds) for the next pass. A
report whose message is gone (retention) is dropped, and the retention sweep
deletes those too. It runs in the background at start, before the inference
above, which records what it finds as owed too; and while running,
:class:`OwedRetry` passes over the reports owed for a while (a peer that was
away: its leg dropped, its MESSAGE timed out), with a backoff while they are
not taken.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from bridge.chat import adhoc, delivery, group, one2one
from bridge.chat.delivery import IncomingEvent, IncomingStatus, OutgoingEvent
from bridge.chat.model import (
    ADHOC,
    ChatSession,
    DialogIds,
    Direction,
    Disposition,
    SessionKind,
    StoredMessage,
)
from bridge.chat.ports import SignallingError
from bridge.chat.store import OwedReport
from bridge.ids import MessageId, UserUri

if TYPE_CHECKING:
    from bridge.chat.core import ChatCore
    from bridge.chat.implicit import AdhocChat
    from bridge.chat.messages import Messages

log = logging.getLogger(__name__)

BYE_CONCURRENCY = 16
"""BYEs for the dialogs of the previous run in flight at once."""
RESEND_CONCURRENCY = 16
"""Owed IMDNs of the previous run in flight at once."""
OWED_CLAIM = 30.0
"""Seconds an instance holds the owed reports it claimed for resending."""
OWED_RETRY_INITIAL = 60.0
"""Seconds between two passes over the owed IMDNs while running (:class:`OwedRetry`)."""
OWED_RETRY_MAX = 3600.0
"""Longest wait between two passes while the peers do not take the reports sent again."""
OWED_MIN_AGE = 60.0
"""Seconds a report must have been owed before a pass sends it again: the first attempt
may take up to 64*T1 (32 s, RFC 3261 Timer F) to fail."""


@runtime_checkable
class StaleDialogs(Protocol):
    """What recovery asks of the signalling side: end a dialog of the previous run."""

    async def end_stale_dialog(self, ids: DialogIds) -> int:
        """BYE the dialog ``ids`` describes; the final status (408: none in time).

        Raises ``SignallingError`` when ``ids`` cannot make a request.
        """
        ...


class NotificationBacklog(Protocol):
    """Which chatMessageNotifications are still waiting in the outbox."""

    async def queued_message_notifications(
        self, users: Collection[UserUri]
    ) -> set[tuple[UserUri, MessageId]]:
        """``(user, messageId)`` of every queued chatMessageNotification of ``users``."""
        ...


@dataclass(frozen=True)
class RecoveryReport:
    """What a restart found and did (the background work is not counted here)."""

    sessions_closed: int = 0
    messages_failed: int = 0
    messages_requeued: int = 0
    purged: int = 0
    dialogs_to_end: int = 0
    """Established dialogs of the previous run that get a BYE in the background."""


def dialog_established(cs: ChatSession) -> bool:
    """True when ``cs`` had a SIP dialog the peer still holds, and its state is stored."""
    if not cs.ids.can_bye:
        return False
    if cs.kind is SessionKind.ADHOC:
        state = adhoc.AdhocState(cs.state)
        return state is adhoc.AdhocState.CONNECTED or (
            state is adhoc.AdhocState.CONNECTING and cs.direction is Direction.INCOMING
        )
    if cs.kind is SessionKind.GROUP:
        return group.GroupState(cs.state) in (
            group.GroupState.ACCEPTING,
            group.GroupState.CONNECTED,
        )
    return one2one.SessionState(cs.state) in (
        one2one.SessionState.ACCEPTING,
        one2one.SessionState.CONNECTED,
    )


async def recover(
    core: ChatCore,
    adhoc_chat: AdhocChat,
    messages: Messages,
    backlog: NotificationBacklog | None = None,
    owners: Collection[str] | None = None,
) -> RecoveryReport:
    """Close what the previous run left live, fail or requeue its unsent messages.

    With ``owners`` (several instances on PostgreSQL), only the sessions and
    messages of those instances: this one and the provably dead ones
    (``state.instances``), never a live peer's. None: everything (SQLite, one
    instance). BYEs for the dialogs and the "delivered" IMDNs owed are sent by
    background tasks started here (module docstring).
    """
    closed = failed = 0
    pairs: dict[tuple[UserUri, UserUri], int] = {}
    stale: list[ChatSession] = []
    async with core.unit() as work:
        retention = timedelta(days=core.settings.chat_message_retention_days)
        purged = await work.tx.purge_expired(now=work.now, ended_before=work.now - retention)
        live = [s.value for s in one2one.LIVE]
        for cs in await work.tx.sessions_in_states(SessionKind.CONFIRMED, live, owners):
            if dialog_established(cs):
                stale.append(cs)
            await core.transition(work, cs, one2one.SessionEvent.RESTART, reason="restart")
            closed += 1
        live = [s.value for s in group.LIVE]
        for cs in await work.tx.sessions_in_states(SessionKind.GROUP, live, owners):
            if dialog_established(cs):
                stale.append(cs)
            await core.transition(work, cs, group.GroupEvent.RESTART, reason="restart")
            closed += 1
        live = [s.value for s in adhoc.LIVE]
        for cs in await work.tx.sessions_in_states(SessionKind.ADHOC, live, owners):
            if dialog_established(cs):
                stale.append(cs)
            await core.transition(work, cs, adhoc.AdhocEvent.RESTART, reason="restart")
            closed += 1
        unsent = [s.value for s in delivery.UNSENT]
        for msg in await work.tx.messages_in_states(Direction.OUTGOING, unsent, owners):
            if msg.rest_session != ADHOC:
                await core.outgoing_transition(work, msg, OutgoingEvent.SEND_ERROR)
                failed += 1
                continue
            await core.outgoing_transition(work, msg, OutgoingEvent.REQUEUE, detach=True)
            pairs[(msg.user, msg.peer)] = pairs.get((msg.user, msg.peer), 0) + 1
    report = RecoveryReport(closed, failed, sum(pairs.values()), purged, len(stale))
    if closed or failed or pairs or purged:
        log.info(
            "- chat recovery: %d sessions closed (%d dialogs to end), %d messages failed,"
            " %d requeued, %d purged",
            report.sessions_closed,
            report.dialogs_to_end,
            report.messages_failed,
            report.messages_requeued,
            report.purged,
        )
    for user, peer in pairs:
        await adhoc_chat.pump(user, peer)
    if stale:
        core.spawn(_end_stale_quietly(core, stale), "restart-bye")
    core.spawn(_owed_reports_quietly(messages, backlog, owners), "restart-imdn")
    return report


async def end_stale_dialogs(core: ChatCore, sessions: list[ChatSession]) -> dict[str, int]:
    """BYE the dialogs of ``sessions`` (ended by :func:`recover`); session id → final status.

    A dialog that cannot be rebuilt is logged and left out.
    """
    port = core.signalling
    if not isinstance(port, StaleDialogs):
        log.warning("x %d dialogs of the previous run: signalling cannot end them", len(sessions))
        return {}
    gate = asyncio.Semaphore(BYE_CONCURRENCY)
    results: dict[str, int] = {}

    async def one(cs: ChatSession) -> None:
        async with gate:
            try:
                status = await port.end_stale_dialog(cs.ids)
            except SignallingError as exc:
                log.warning("x no BYE for session %s of %s: %s", cs.id, cs.user, exc)
                return
        results[cs.id] = status
        if 200 <= status < 300:
            log.info(
                "- BYE for session %s of %s (Call-ID %s) after restart: %d",
                cs.id,
                cs.user,
                cs.ids.call_id,
                status,
            )
        else:
            log.info(
                "x BYE for session %s of %s (Call-ID %s) after restart answered %d:"
                " the session ended anyway",
                cs.id,
                cs.user,
                cs.ids.call_id,
                status,
            )

    await asyncio.gather(*(one(cs) for cs in sessions))
    return results


async def _end_stale_quietly(core: ChatCore, sessions: list[ChatSession]) -> None:
    results = await end_stale_dialogs(core, sessions)
    answered = sum(1 for status in results.values() if 200 <= status < 300)
    log.info("- chat recovery: %d of %d dialogs ended with a 2xx", answered, len(sessions))


async def owed_reports(
    core: ChatCore, backlog: NotificationBacklog, owners: Collection[str] | None = None
) -> list[StoredMessage]:
    """The received messages whose "delivered" IMDN a crash left owed (module docstring),
    of ``owners`` (None: anyone's)."""
    async with core.unit() as work:
        cutoff = work.now - timedelta(seconds=core.settings.notification_max_age)
        received = await work.tx.messages_in_states(
            Direction.INCOMING, [IncomingStatus.RECEIVED.value], owners
        )
        candidates = [
            m
            for m in received
            if Disposition.POSITIVE_DELIVERY in m.dispositions and m.created_at > cutoff
        ]
        listened = {u for u in {m.user for m in candidates} if await work.active_subscriptions(u)}
    candidates = [m for m in candidates if m.user in listened]
    if not candidates:
        return []
    queued = await backlog.queued_message_notifications(listened)
    return [m for m in candidates if (m.user, m.id) not in queued]


async def send_owed_reports(
    messages: Messages, backlog: NotificationBacklog, owners: Collection[str] | None = None
) -> int:
    """Mark the owed messages delivered and send their IMDNs; return how many."""
    owed = await owed_reports(messages.core, backlog, owners)
    for msg in owed:
        log.info("- message %s of %s: delivered IMDN owed since the restart", msg.id, msg.user)
        await messages.mark_received(msg.user, msg.id, IncomingEvent.NOTIFIED)
    return len(owed)


async def resend_owed_reports(
    core: ChatCore, owner: str | None = None, min_age: float = 0.0
) -> tuple[int, int]:
    """Send again the IMDNs still owed (module docstring), those owed for at least
    ``min_age`` seconds; (sent, taken by the peer)."""
    owner = (
        owner
        or core.settings.instance_id
        or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    )
    found: list[tuple[StoredMessage, OwedReport]] = []
    async with core.unit() as work:
        until = work.now + timedelta(seconds=OWED_CLAIM)
        before = work.now - timedelta(seconds=min_age) if min_age else None
        owed = await work.tx.claim_owed_reports(owner, work.now, until, before)
        gone: list[OwedReport] = []
        for o in owed:
            msg = await work.tx.get_message(o.user, o.message_id, Direction.INCOMING)
            if msg is None:
                gone.append(o)
            else:
                found.append((msg, o))
        if gone:
            await work.tx.reports_taken(gone)
    gate = asyncio.Semaphore(RESEND_CONCURRENCY)

    async def one(msg: StoredMessage, o: OwedReport) -> bool:
        async with gate:
            log.info(
                "- message %s of %s: %s IMDN still owed, sent again",
                o.message_id,
                o.user,
                o.kind.value,
            )
            return await core.deliver_report(msg, o.kind, None)

    taken = await asyncio.gather(*(one(msg, o) for msg, o in found))
    return len(found), sum(taken)


async def _owed_reports_quietly(
    messages: Messages, backlog: NotificationBacklog | None, owners: Collection[str] | None
) -> None:
    await asyncio.sleep(0)  # let ChatBridge.start register the delivery listener first
    sent, taken = await resend_owed_reports(messages.core)
    if sent:
        log.info(
            "- chat recovery: %d IMDNs the previous run owed sent again, %d taken", sent, taken
        )
    if backlog is None:
        return
    count = await send_owed_reports(messages, backlog, owners)
    if count:
        log.info("- chat recovery: %d delivered IMDNs sent that the previous run owed", count)


@dataclass
class OwedRetry:
    """Sends again, while running, the IMDNs still owed (module docstring): every
    :data:`OWED_RETRY_INITIAL` seconds, doubling up to :data:`OWED_RETRY_MAX` while a
    pass leaves some untaken (the peer is away), back to the start once one is taken or
    nothing is owed. Only reports owed for :data:`OWED_MIN_AGE` seconds are taken: the
    younger ones are still in the hands of their first attempt."""

    core: ChatCore
    interval: float = 0.0

    def start(self) -> None:
        """Arm the first pass."""
        self.interval = OWED_RETRY_INITIAL
        self.core.arm("owed-retry", self.interval, self.run)

    async def run(self) -> None:
        """One pass, then the next one armed (its failure is logged, the retry goes on)."""
        try:
            sent, taken = await resend_owed_reports(self.core, min_age=OWED_MIN_AGE)
        except Exception:
            log.warning("x owed IMDNs not sent again", exc_info=True)
            sent, taken = 1, 0
        if sent:
            log.info("- %d owed IMDNs sent again, %d taken", sent, taken)
        if sent and taken < sent:
            self.interval = min(self.interval * 2, OWED_RETRY_MAX)
        else:
            self.interval = OWED_RETRY_INITIAL
        self.core.arm("owed-retry", self.interval, self.run)
