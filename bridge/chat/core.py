"""The machinery shared by the chat use cases: units of work, transitions, timers, dispatch.

A *unit* (:meth:`ChatCore.unit`) is one store transaction plus the
notifications enqueued in it; ``Notifier.wake`` runs after the commit, so chat
state and its notifications become durable together (docs/decisions.md
"Notification delivery").

Exactly one method changes a session's state (:meth:`ChatCore.transition`)
and one a message's status (:meth:`ChatCore.outgoing_transition`,
:meth:`ChatCore.incoming_transition`): each checks the machine's table
(``one2one``, ``adhoc``, ``group``, ``delivery``), logs ``- OLD -> NEW``, persists, and
runs the on-enter effects inside the unit (notifications, timers, failing the
unsent messages of a finished confirmed session). Wire effects (INVITE, BYE,
MSRP SEND) run after the commit, in the callers.

Locking: callers take the ``KeyedLocks`` key of the session or message before
they open a unit, never inside one (a SQLite writer waiting for a lock held by
a task that waits for the writer would stall until the busy timeout). Keys:
``s:<id>`` confirmed or group session, ``a:<user>|<peer>`` implicit session of a pair,
``m:<user>|<messageId>`` one message's status.

Owed reports (migration 28; issue 13, defect 9): the IMDNs a received
message's status change makes due (RFC 5438 §7) are recorded as owed in the
unit that changes the status (:meth:`ChatCore.incoming_transition`), so a
crash before they leave cannot lose them: ``bridge.chat.recovery`` sends again
whatever is still owed at start. An owed report is forgotten once the peer
took it (MSRP 200 to the SEND, RFC 4975 §7.1; a 2xx to the MESSAGE, RFC 3428
§7) and :data:`REPORT_TAKEN_GRACE` seconds have passed: an MSRP receiver
answers 200 before its application has stored the report (ours does: the
transaction 200 is sent on receipt), so forgetting it at once would lose it
again when that receiver is this very bridge and it crashes before its own
commit. A report sent twice is harmless: the receiving side ignores a
Delivered for a message already Delivered (``delivery.OUTGOING`` no-ops).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from bridge.chat import adhoc, delivery, group, notifications, one2one
from bridge.chat.delivery import IncomingEvent, IncomingStatus, OutgoingEvent, OutgoingStatus
from bridge.chat.locks import KeyedLocks
from bridge.chat.model import (
    ChatSession,
    DialogIds,
    Direction,
    LegId,
    ParticipantStatus,
    ReportKind,
    SessionKind,
    StoredMessage,
)
from bridge.chat.notifications import Body, ChatUrls
from bridge.chat.ports import (
    IncomingMessage,
    OutgoingMessage,
    OutgoingReport,
    ReportDelivery,
    SignallingError,
    SignallingPort,
)
from bridge.chat.store import ChatStore, ChatTransaction, OwedReport
from bridge.config import Settings
from bridge.ids import ChatSessionId, UserUri
from bridge.ports import Notifier
from bridge.subscriptions import Subscription

log = logging.getLogger(__name__)

REPORT_TAKEN_GRACE = 5.0
"""Seconds an acknowledged IMDN stays owed before it is forgotten (module docstring)."""

Builder = Callable[[Subscription], tuple[str, Body]]
AnyEvent = one2one.SessionEvent | adhoc.AdhocEvent | group.GroupEvent
Coro = Callable[[], Coroutine[Any, Any, None]]
"""A timer's work, started as a task when it fires (:meth:`ChatCore.arm`)."""

NO_SUBSCRIPTION = 480
"""SIP status for a request toward a user nobody listens for.

docs/protocol-mapping.md "Responses the bridge sends".
"""
NO_SESSION = 481
"""SIP status for traffic on a leg the bridge does not know (RFC 3261 §12.2.2)."""


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def session_key(cs: ChatSession) -> str:
    """The lock key of a session (the pair's key for an implicit session)."""
    if cs.kind is SessionKind.ADHOC:
        return pair_key(cs.user, cs.peer)
    return confirmed_key(cs.id)


def confirmed_key(session_id: str) -> str:
    """The lock key of a confirmed session, from its REST sessionId alone."""
    return "s:" + session_id


def pair_key(user: UserUri, peer: UserUri) -> str:
    """The lock key of the implicit session between ``user`` and ``peer``."""
    return f"a:{user}|{peer}"


def message_key(user: UserUri, message_id: str) -> str:
    """The lock key of one message's status."""
    return f"m:{user}|{message_id}"


def is_terminal(cs: ChatSession) -> bool:
    """True once the session is over."""
    if cs.kind is SessionKind.ADHOC:
        return adhoc.AdhocState(cs.state) not in adhoc.LIVE
    if cs.kind is SessionKind.GROUP:
        return group.GroupState(cs.state) in group.TERMINAL
    return one2one.SessionState(cs.state) in one2one.TERMINAL


def received(
    incoming: IncomingMessage,
    *,
    user: UserUri,
    peer: UserUri,
    session_id: ChatSessionId | None,
    rest_session: str,
    now: datetime,
) -> StoredMessage:
    """A message just received, as stored for ``user`` (1-1 and group alike)."""
    return StoredMessage(
        id=incoming.message_id,
        user=user,
        peer=peer,
        direction=Direction.INCOMING,
        session_id=session_id,
        rest_session=rest_session,
        text=incoming.text,
        content_type=incoming.content_type,
        reports=frozenset(),
        dispositions=incoming.dispositions,
        status=IncomingStatus.RECEIVED.value,
        date_time=incoming.date_time or now,
        created_at=now,
        sender_name=incoming.sender_name,
        report_route=incoming.route,
    )


def is_connected(cs: ChatSession) -> bool:
    """True while the session's MSRP leg is up."""
    return cs.state == "connected"


@dataclass
class Unit:
    """One store transaction and the notifications it enqueued."""

    tx: ChatTransaction
    now: datetime
    subscriptions: dict[UserUri, list[Subscription]] = field(default_factory=dict)
    """Active subscriptions read in this unit, per user (read once per unit)."""

    async def active_subscriptions(self, user: UserUri) -> list[Subscription]:
        """The subscriptions receiving ``user``'s notifications (cached for the unit)."""
        found = self.subscriptions.get(user)
        if found is None:
            found = await self.tx.active_subscriptions(user, self.now)
            self.subscriptions[user] = found
        return found

    async def notify(
        self,
        user: UserUri,
        build: Builder,
        *,
        where: Callable[[Subscription], bool] | None = None,
    ) -> int:
        """Enqueue one notification per active subscription of ``user``; return how many."""
        subs = await self.active_subscriptions(user)
        count = 0
        for sub in subs:
            if where is not None and not where(sub):
                continue
            root, body = build(sub)
            await self.tx.enqueue(
                user=user,
                subscription_id=sub.id,
                notify_url=sub.notify_url,
                root=root,
                body=body,
                now=self.now,
            )
            count += 1
        return count


class _UnitScope:
    """``ChatCore.unit`` (a class, not an ``@asynccontextmanager``: several per message)."""

    __slots__ = ("_core", "_scope", "_tx")

    def __init__(self, core: ChatCore) -> None:
        self._core = core
        self._scope: AbstractAsyncContextManager[ChatTransaction] | None = None
        self._tx: ChatTransaction | None = None

    async def __aenter__(self) -> Unit:
        scope = self._scope = self._core.store.transaction()
        tx = self._tx = await scope.__aenter__()
        return Unit(tx, self._core.clock())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._scope is not None and self._tx is not None
        suppressed = await self._scope.__aexit__(exc_type, exc, tb)
        if exc_type is None and self._tx.notifications:
            self._core.notifier.wake(*self._tx.notifications)
        return suppressed


class ChatCore:
    """State, timers and dispatch shared by every part of the chat service.

    One instance per bridge, built by ``bridge.chat.assembly.build_chat`` and
    handed to each part's constructor; nothing derives from it.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        store: ChatStore,
        notifier: Notifier,
        signalling: SignallingPort,
        urls: ChatUrls,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.store = store
        self.notifier = notifier
        self.signalling = signalling
        self.urls = urls
        self.clock = clock
        self.locks = KeyedLocks()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._legs: dict[LegId, ChatSession] = {}
        """Live legs → their session (identity fields only are read from it: kind, ids, users)."""
        self._delivery = signalling if isinstance(signalling, ReportDelivery) else None
        self._taken: list[tuple[float, OwedReport]] = []
        """Owed reports the peer took, with when (loop time): forgotten after the grace."""

    # --- units of work ---------------------------------------------------------------

    def unit(self) -> AbstractAsyncContextManager[Unit]:
        """A store transaction; its notifications are woken after the commit."""
        return _UnitScope(self)

    def retention(self, now: datetime) -> datetime:
        """When a message stored at ``now`` expires."""
        return now + timedelta(days=self.settings.chat_message_retention_days)

    # --- the one place a session changes state -----------------------------------------

    async def transition(
        self,
        work: Unit,
        cs: ChatSession,
        event: AnyEvent,
        *,
        reason: str | None = None,
        ids: DialogIds | None = None,
    ) -> ChatSession:
        """Apply ``event`` to ``cs``: check the table, log, persist, notify (module docstring)."""
        if cs.kind is SessionKind.ADHOC:
            assert isinstance(event, adhoc.AdhocEvent)
            old_a = adhoc.AdhocState(cs.state)
            new_value = adhoc.next_state(old_a, event).value
            terminal = new_value not in {s.value for s in adhoc.LIVE}
        elif cs.kind is SessionKind.GROUP:
            assert isinstance(event, group.GroupEvent)
            new_g = group.next_state(group.GroupState(cs.state), event)
            new_value = new_g.value
            terminal = new_g in group.TERMINAL
        else:
            assert isinstance(event, one2one.SessionEvent)
            old_c = one2one.SessionState(cs.state)
            new_c = one2one.next_state(old_c, event)
            new_value = new_c.value
            terminal = new_c in one2one.TERMINAL
        log.info(
            "- %s session %s of %s: %s -> %s (%s)",
            cs.kind.value,
            cs.id,
            cs.user,
            cs.state.upper(),
            new_value.upper(),
            event.name,
        )
        updated = replace(
            cs,
            state=new_value,
            updated_at=work.now,
            ended_at=work.now if terminal else None,
            end_reason=(reason or event.name.lower()) if terminal else cs.end_reason,
            ids=ids if ids is not None else cs.ids,
        )
        await work.tx.save_session(updated)
        if terminal:
            for prefix in ("ring:", "invite:", "idle:"):
                self.disarm(prefix + cs.id)
            if cs.leg is not None:
                self._legs.pop(cs.leg, None)
        if terminal and cs.kind is SessionKind.GROUP:
            await self._freeze_members(work, cs)
        if cs.kind is not SessionKind.ADHOC:
            if terminal:  # message failures first, then the event (as GSMA servers order them)
                for msg in await work.tx.session_messages(
                    cs.id, Direction.OUTGOING, [s.value for s in delivery.UNSENT]
                ):
                    await self.outgoing_transition(work, msg, OutgoingEvent.SEND_ERROR)
            outgoing = cs.direction is Direction.OUTGOING
            if isinstance(event, group.GroupEvent):  # the group machine's own table
                kind = group.event_for(outgoing, group.GroupState(cs.state), event)
            else:
                assert isinstance(event, one2one.SessionEvent)
                kind = one2one.event_for(outgoing, one2one.SessionState(new_value), event)
            if kind is not None:
                await work.notify(
                    cs.user, lambda sub: notifications.session_event(self.urls, sub, updated, kind)
                )
        return updated

    @staticmethod
    async def _freeze_members(work: Unit, cs: ChatSession) -> None:
        """An ended group session lists nobody as Invited or Connected any more: the user
        no longer hears the conference, so what it last heard is closed as Disconnected
        (a GET after the end, or after a restart, never shows stale live members)."""
        live = (ParticipantStatus.INVITED, ParticipantStatus.CONNECTED)
        people = await work.tx.participants(cs.id)
        closed = [
            replace(p, status=ParticipantStatus.DISCONNECTED) for p in people if p.status in live
        ]
        if closed:
            await work.tx.save_participants(cs.id, closed, work.now)

    # --- the one place a message changes status -----------------------------------------

    async def outgoing_transition(
        self,
        work: Unit,
        msg: StoredMessage,
        event: OutgoingEvent,
        *,
        session: ChatSession | None = None,
        detach: bool = False,
    ) -> StoredMessage:
        """Apply ``event`` to a sent message; notify the sender per ``delivery.notify_outgoing``."""
        old = OutgoingStatus(msg.status)
        new = delivery.next_outgoing(old, event)
        moved = session is not None or detach
        if new is old and not moved:
            return msg
        if new is not old:
            log.debug("- message %s of %s: %s -> %s", msg.id, msg.user, old.name, new.name)
        updated = await work.tx.set_message_status(
            msg,
            new.value,
            now=work.now,
            session_id=None if session is None else session.id,
            detach=detach,
        )
        if updated.status != new.value:  # moved on meanwhile by another instance: its word wins
            log.info("- message %s of %s: %s already", msg.id, msg.user, updated.status)
            return updated
        status = delivery.notify_outgoing(old, new, msg.reports) if new is not old else None
        if status is not None:
            await work.notify(
                msg.user, lambda sub: notifications.message_status(self.urls, sub, updated, status)
            )
        return updated

    async def incoming_transition(
        self, work: Unit, msg: StoredMessage, event: IncomingEvent
    ) -> tuple[StoredMessage, list[ReportKind]]:
        """Apply ``event`` to a received message; return it and the IMDNs now due."""
        old = IncomingStatus(msg.status)
        new = delivery.next_incoming(old, event)
        if new is old:
            return msg, []
        log.debug("- received message %s of %s: %s -> %s", msg.id, msg.user, old.name, new.name)
        updated = await work.tx.set_message_status(msg, new.value, now=work.now)
        if updated.status != new.value:  # moved on meanwhile by another instance
            return updated, []
        due = delivery.reports_due(msg.dispositions, old, new)
        if due:  # owed in this unit: a crash after its commit cannot lose them
            await work.tx.owe_reports([OwedReport(msg.user, msg.id, k) for k in due], work.now)
        return updated, due

    async def leg_session(self, leg: LegId) -> ChatSession | None:
        """The session of ``leg`` (cached while live; its ``state`` may be stale: re-read it)."""
        cached = self._legs.get(leg)
        if cached is not None:
            return cached
        async with self.unit() as work:
            found = await work.tx.session_by_leg(leg)
        if found is not None and not is_terminal(found):
            self._legs[leg] = found
        return found

    async def session_of(self, session_id: ChatSessionId) -> ChatSession | None:
        """Any session by internal id (tests, diagnostics)."""
        async with self.unit() as work:
            return await work.tx.session_by_id(session_id)

    # --- wire effects (after commit) ------------------------------------------------------

    @staticmethod
    def outgoing(msg: StoredMessage) -> OutgoingMessage:
        """The signalling view of a stored sent message."""
        return OutgoingMessage(
            message_id=msg.id,
            user=msg.user,
            peer=msg.peer,
            text=msg.text,
            date_time=msg.date_time,
            dispositions=msg.dispositions,
            content_type=msg.content_type,
        )

    async def message_failed(self, user: UserUri, message_id: str, why: str) -> None:
        """Mark a sent message Failed (a send that could not even start)."""
        log.warning("x message %s of %s not sent: %s", message_id, user, why)
        async with self.locks.hold(message_key(user, message_id)):
            async with self.unit() as work:
                msg = await work.tx.get_message(user, message_id, Direction.OUTGOING)
                if msg is not None and delivery.accepts_outgoing(
                    OutgoingStatus(msg.status), OutgoingEvent.SEND_ERROR
                ):
                    await self.outgoing_transition(work, msg, OutgoingEvent.SEND_ERROR)

    async def end_leg(self, leg: LegId) -> None:
        """BYE ``leg`` (close its MSRP), logging a failure instead of raising it."""
        try:
            await self.signalling.end_session(leg)
        except SignallingError as exc:
            log.warning("x cannot end leg %s: %s", leg, exc)

    async def send_on_leg(self, leg: LegId, msgs: list[StoredMessage]) -> None:
        """MSRP SEND each (already SENDING) message on ``leg``, failing those that cannot go."""
        for msg in msgs:
            try:
                await self.signalling.send_message(leg, self.outgoing(msg))
            except SignallingError as exc:
                await self.message_failed(msg.user, msg.id, str(exc))

    async def send_by_pager(self, msgs: list[StoredMessage]) -> None:
        """SIP MESSAGE each (already SENDING) message, failing those that cannot go."""
        for msg in msgs:
            try:
                await self.signalling.send_pager(self.outgoing(msg))
            except SignallingError as exc:
                await self.message_failed(msg.user, msg.id, str(exc))

    async def flush(self, cs: ChatSession) -> None:
        """Send a just-connected session's queued messages in order (caller holds its lock)."""
        assert cs.leg is not None
        async with self.unit() as work:
            queued = await work.tx.session_messages(
                cs.id, Direction.OUTGOING, [OutgoingStatus.QUEUED.value]
            )
            sending = [
                await self.outgoing_transition(work, m, OutgoingEvent.DISPATCH) for m in queued
            ]
        await self.send_on_leg(cs.leg, sending)

    async def send_reports(
        self, msg: StoredMessage, kinds: list[ReportKind], leg: LegId | None
    ) -> None:
        """Send the IMDNs ``kinds`` for a received message on ``leg`` (None: SIP MESSAGE).

        With a ``ReportDelivery`` adapter each goes in a task that waits until the
        peer took it, then forgets it as owed (module docstring).
        """
        for kind in kinds:
            if self._delivery is not None:
                self.spawn(self._deliver_quietly(msg, kind, leg), "imdn")
            else:
                await self.deliver_report(msg, kind, leg)

    async def _deliver_quietly(
        self, msg: StoredMessage, kind: ReportKind, leg: LegId | None
    ) -> None:
        await self.deliver_report(msg, kind, leg)

    async def deliver_report(self, msg: StoredMessage, kind: ReportKind, leg: LegId | None) -> bool:
        """Send one IMDN for a received message; True once taken (then no longer owed)."""
        report = OutgoingReport(
            message_id=msg.id,
            user=msg.user,
            peer=msg.peer,
            kind=kind,
            original_date_time=msg.date_time,
            route=msg.report_route,
        )
        try:
            if self._delivery is not None:
                taken = await self._delivery.deliver_report(leg, report)
            else:  # handed to the stack is all this adapter tells
                await self.signalling.send_report(leg, report)
                taken = True
        except SignallingError as exc:
            log.warning("x %s report for %s of %s lost: %s", kind.value, msg.id, msg.user, exc)
            return False
        if taken:
            log.debug("> %s report for %s of %s", kind.value, msg.id, msg.user)
            self._taken.append(
                (asyncio.get_running_loop().time(), OwedReport(msg.user, msg.id, kind))
            )
            if "imdn-taken" not in self._timers:
                self.arm("imdn-taken", REPORT_TAKEN_GRACE, self._forget_taken)
        return taken

    async def _forget_taken(self, grace: float | None = None) -> None:
        """Forget, in one unit, the owed reports taken at least ``grace`` seconds ago
        (default :data:`REPORT_TAKEN_GRACE`)."""
        grace = REPORT_TAKEN_GRACE if grace is None else grace
        cutoff = asyncio.get_running_loop().time() - grace
        split = next((i for i, (t, _) in enumerate(self._taken) if t > cutoff), len(self._taken))
        done = [o for _, o in self._taken[:split]]
        del self._taken[:split]
        if self._taken:
            wait = self._taken[0][0] - cutoff
            self.arm("imdn-taken", wait, self._forget_taken)
        if done:
            async with self.unit() as work:
                await work.tx.reports_taken(done)

    @staticmethod
    async def report_leg(tx: ChatTransaction, msg: StoredMessage) -> LegId | None:
        """The connected leg toward the sender, if any (docs/protocol-mapping.md "Reports")."""
        if msg.session_id is not None:
            cs = await tx.session_by_id(msg.session_id)
            if cs is not None and is_connected(cs) and cs.leg is not None:
                return cs.leg
        live = await tx.live_adhoc_session(msg.user, msg.peer, [adhoc.AdhocState.CONNECTED.value])
        return None if live is None else live.leg

    # --- timers and background tasks ---------------------------------------------------

    def arm(self, key: str, delay: float, factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """(Re)start timer ``key``: after ``delay`` seconds run ``factory()`` as a task."""
        self.disarm(key)
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self._fire, key, factory)

    def disarm(self, key: str) -> None:
        """Stop timer ``key`` if it runs."""
        handle = self._timers.pop(key, None)
        if handle is not None:
            handle.cancel()

    def _fire(self, key: str, factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._timers.pop(key, None)
        self.spawn(factory(), key)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` in a tracked task; its errors are logged, never lost.

        The task runs ``coro`` itself (no wrapper coroutine): a task cancelled before
        its first step then closes ``coro`` rather than leaving it never awaited.
        """
        if self._closed:
            coro.close()
            return
        task = asyncio.create_task(coro, name=f"chat-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("x chat task %s failed", task.get_name()[5:], exc_info=exc)

    async def drain(self) -> None:
        """Wait until no background task is running (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def settle(self, timeout: float) -> int:
        """Wait, ``timeout`` seconds at most and without cancelling anything, until no
        background task runs (the graceful shutdown); how many still run."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tasks and loop.time() < deadline:
            await asyncio.wait(list(self._tasks), timeout=deadline - loop.time())
        return len(self._tasks)

    async def forget_taken_reports(self) -> None:
        """Forget every owed report the peer took, grace or not (a clean stop: the grace
        only covers a crash of this process before its own inbound side stored it)."""
        self.disarm("imdn-taken")
        try:
            await self._forget_taken(grace=0.0)
        except Exception:  # they stay owed: sent once more at the next start
            log.warning("x cannot forget %d reports taken", len(self._taken), exc_info=True)

    async def close(self) -> None:
        """Stop every timer and background task."""
        self._closed = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
