"""The signalling event sink: routes each event to the 1-1 or the group side.

The events and what they become: docs/protocol-mapping.md "Inbound events".

:class:`SignallingRouter` is what ``SignallingPort.bind`` receives
(``bridge.chat.assembly.build_chat`` builds and binds it). It routes by event
type and, for the events of a leg, by the kind of the leg's session: group
legs to ``bridge.chat.group_inbound.GroupInbound``, everything else to
``bridge.chat.inbound.OneToOneInbound``. Send results and reports always go to the
1-1 side: a group message's status machine is the 1-1 one, found by user and
message id whatever leg the report came on.
"""

from __future__ import annotations

from bridge.chat.core import ChatCore
from bridge.chat.group_inbound import GroupInbound
from bridge.chat.inbound import OneToOneInbound
from bridge.chat.model import SessionKind
from bridge.chat.ports import (
    ComposingReceived,
    IncomingGroupInvitation,
    MessageReceived,
    ParticipantsChanged,
    SessionAccepted,
    SessionCancelled,
    SessionEnded,
    SessionFailed,
    SignallingEvent,
)


class SignallingRouter:
    """``SignallingEvents``: one entry point, two sides (module docstring)."""

    def __init__(self, core: ChatCore, one2one: OneToOneInbound, groups: GroupInbound) -> None:
        self.core = core
        self.one2one = one2one
        self.groups = groups

    async def handle_event(self, event: SignallingEvent) -> None:
        """Apply one event; raises ``EventRejected`` to refuse its request."""
        match event:
            case IncomingGroupInvitation():
                await self.groups.invitation(event)
                return
            case ParticipantsChanged():
                await self.groups.participants_changed(event)
                return
            case (
                SessionAccepted()
                | SessionFailed()
                | SessionEnded()
                | SessionCancelled()
                | MessageReceived()
                | ComposingReceived()
            ) if event.leg is not None:
                cs = await self.core.leg_session(event.leg)
                if cs is not None and cs.kind is SessionKind.GROUP:
                    match event:
                        case SessionAccepted():
                            await self.groups.accepted(event, cs)
                        case SessionFailed() | SessionEnded() | SessionCancelled():
                            await self.groups.ended(event, cs)
                        case MessageReceived():
                            await self.groups.message(event, cs)
                        case ComposingReceived():
                            await self.groups.composing(event, cs)
                    return
        await self.one2one.handle(event)
