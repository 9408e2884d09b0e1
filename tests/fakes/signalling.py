"""Fakes of ``bridge.chat.ports.SignallingPort``.

:class:`FakeSignalling` records every call (and can be told to fail one);
tests feed events to the service themselves. :class:`LoopbackSignalling`
plays the whole SIP/MSRP side between users of the same bridge, like the
embedded default does over real sockets: an INVITE from A becomes an
invitation for B, B's accept becomes A's ``SessionAccepted``, an MSRP SEND
becomes a ``MessageSendResult`` for the sender and a ``MessageReceived`` for
the peer, and so on. Events are delivered from tasks, never from inside the
port call (the real adapter is asynchronous too, and the service holds its
session lock while it calls the port); :meth:`FakeSignalling.settle` waits
until every event has been handled.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from bridge.chat.model import Composing, LegId
from bridge.chat.ports import (
    ComposingReceived,
    EventRejected,
    IncomingInvitation,
    IncomingMessage,
    MessageReceived,
    MessageSendResult,
    OutgoingMessage,
    OutgoingReport,
    ReportReceived,
    SessionAccepted,
    SessionCancelled,
    SessionEnded,
    SessionFailed,
    SignallingError,
    SignallingEvent,
    SignallingEvents,
)
from bridge.ids import UserUri


@dataclass
class Call:
    """One recorded port call."""

    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


class FakeSignalling:
    """Records every call; ``fail[name]`` makes that method raise once."""

    def __init__(self) -> None:
        self.sink: SignallingEvents | None = None
        self.calls: list[Call] = []
        self.fail: dict[str, SignallingError] = {}
        self.rejected: list[tuple[SignallingEvent, int]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def bind(self, sink: SignallingEvents) -> None:
        self.sink = sink

    def _record(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append(Call(name, args, kwargs))
        error = self.fail.pop(name, None)
        if error is not None:
            raise error

    def named(self, name: str) -> list[Call]:
        """The calls of one method, in order."""
        return [c for c in self.calls if c.name == name]

    def emit(self, event: SignallingEvent) -> None:
        """Hand ``event`` to the sink from a task (see the module docstring)."""
        task = asyncio.get_running_loop().create_task(self._deliver(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, event: SignallingEvent) -> None:
        assert self.sink is not None
        try:
            await self.sink.handle_event(event)
        except EventRejected as exc:
            self.rejected.append((event, exc.status))
            await self.on_rejected(event, exc.status)

    async def on_rejected(self, event: SignallingEvent, status: int) -> None:
        """What the SIP side does with a refused request (nothing here)."""

    async def settle(self, service: Any = None, rounds: int = 50) -> None:
        """Wait until no event task (and no service background task) is running."""
        for _ in range(rounds):
            await asyncio.sleep(0)
            if self._tasks:
                await asyncio.gather(*list(self._tasks))
                continue
            if service is not None and service._tasks:
                await service.drain()
                continue
            await asyncio.sleep(0)
            if not self._tasks:
                return
        raise AssertionError("signalling did not settle")

    async def start_session(
        self,
        leg: LegId,
        user: UserUri,
        peer: UserUri,
        *,
        subject: str | None = None,
        first: OutgoingMessage | None = None,
    ) -> None:
        self._record("start_session", leg, user, peer, subject=subject, first=first)

    async def accept_session(self, leg: LegId) -> None:
        self._record("accept_session", leg)

    async def reject_session(self, leg: LegId, status: int) -> None:
        self._record("reject_session", leg, status)

    async def cancel_session(self, leg: LegId) -> None:
        self._record("cancel_session", leg)

    async def end_session(self, leg: LegId) -> None:
        self._record("end_session", leg)

    async def send_message(self, leg: LegId, message: OutgoingMessage) -> None:
        self._record("send_message", leg, message)

    async def send_composing(self, leg: LegId, user: UserUri, composing: Composing) -> None:
        self._record("send_composing", leg, user, composing)

    async def send_report(self, leg: LegId | None, report: OutgoingReport) -> None:
        self._record("send_report", leg, report)

    async def send_pager(self, message: OutgoingMessage) -> None:
        self._record("send_pager", message)


def _incoming(message: OutgoingMessage) -> IncomingMessage:
    return IncomingMessage(
        message_id=message.message_id,
        sender=message.user,
        text=message.text,
        date_time=message.date_time,
        dispositions=message.dispositions,
        content_type=message.content_type,
    )


class LoopbackSignalling(FakeSignalling):
    """Connects users of one bridge to each other, in memory (module docstring).

    ``answer_invites`` = False leaves outgoing INVITEs unanswered;
    ``refuse[peer] = status`` makes INVITEs to ``peer`` fail with ``status``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pair: dict[LegId, LegId] = {}
        self.owner: dict[LegId, UserUri] = {}
        self.first: dict[LegId, OutgoingMessage] = {}
        self.refuse: dict[UserUri, int] = {}
        self.answer_invites = True

    async def start_session(
        self,
        leg: LegId,
        user: UserUri,
        peer: UserUri,
        *,
        subject: str | None = None,
        first: OutgoingMessage | None = None,
    ) -> None:
        await super().start_session(leg, user, peer, subject=subject, first=first)
        if peer in self.refuse:
            self.emit(SessionFailed(leg, self.refuse[peer], "refused"))
            return
        if not self.answer_invites:
            return
        other = LegId("in-" + leg)
        self.pair[leg], self.pair[other] = other, leg
        self.owner[leg], self.owner[other] = user, peer
        if first is not None:
            self.first[leg] = first
        self.emit(
            IncomingInvitation(
                leg=other,
                user=peer,
                peer=user,
                subject=subject,
                first_message=None if first is None else _incoming(first),
            )
        )

    async def on_rejected(self, event: SignallingEvent, status: int) -> None:
        if isinstance(event, IncomingInvitation):
            await self._fail_invite(event.leg, status)
        elif isinstance(event, MessageReceived) and event.leg is None:
            pass  # the pager sender already had its result

    async def _fail_invite(self, incoming: LegId, status: int) -> None:
        outgoing = self.pair.get(incoming)
        if outgoing is None:
            return
        self.first.pop(outgoing, None)
        self.emit(SessionFailed(outgoing, status, "rejected"))

    async def accept_session(self, leg: LegId) -> None:
        await super().accept_session(leg)
        outgoing = self.pair[leg]
        self.emit(SessionAccepted(leg))
        self.emit(SessionAccepted(outgoing))
        first = self.first.pop(outgoing, None)
        if first is not None:
            self.emit(MessageSendResult(first.user, first.message_id, True))

    async def reject_session(self, leg: LegId, status: int) -> None:
        await super().reject_session(leg, status)
        await self._fail_invite(leg, status)

    async def cancel_session(self, leg: LegId) -> None:
        await super().cancel_session(leg)
        if leg in self.pair:
            self.emit(SessionCancelled(self.pair[leg]))

    async def end_session(self, leg: LegId) -> None:
        await super().end_session(leg)
        if leg in self.pair:
            self.emit(SessionEnded(self.pair[leg], "BYE"))

    async def send_message(self, leg: LegId, message: OutgoingMessage) -> None:
        await super().send_message(leg, message)
        self.emit(MessageSendResult(message.user, message.message_id, True))
        self.emit(MessageReceived(self.pair[leg], message.peer, _incoming(message)))

    async def send_pager(self, message: OutgoingMessage) -> None:
        await super().send_pager(message)
        self.emit(MessageSendResult(message.user, message.message_id, True))
        self.emit(MessageReceived(None, message.peer, _incoming(message)))

    async def send_composing(self, leg: LegId, user: UserUri, composing: Composing) -> None:
        await super().send_composing(leg, user, composing)
        self.emit(ComposingReceived(self.pair[leg], self.owner[self.pair[leg]], user, composing))

    async def send_report(self, leg: LegId | None, report: OutgoingReport) -> None:
        await super().send_report(leg, report)
        back = None if leg is None else self.pair[leg]
        self.emit(ReportReceived(back, report.peer, report.user, report.message_id, report.kind))
