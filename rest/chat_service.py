"""The REST adapter of chat: ``rest.handlers.chat.ChatService`` over ``bridge.chat``.

Converts the pydantic models of the route table into the frozen dataclasses of
``bridge.chat.model`` and back (docs/architecture.md "Packages"), so pydantic never reaches the
state machines. It calls the parts of the assembled ``bridge.chat.assembly.ChatBridge``:
confirmed 1-1 sessions (R3-R5) ``chat.confirmed``, 1-1 messages (R6-R7b, ``adhoc``
included) ``chat.messages``, group chat (R9-R15) and promote (R8) ``chat.groups``.

Group input rules (OMA REST_NetAPI_Common faults): a participant list naming an address
twice → 400 SVC0002; one holding only the creator (or, for promote, only the
two 1-1 members) → 400 SVC0004; more members than ``chat_group_max_size``, the
creator included → 403 POL0003; the creator's own entry in the list only
carries its name (``originatorName`` wins); ``originatorAddress`` other than
the caller → 400 SVC0002.

Wiring (the lead / H8, in ``bridge.app.serve`` after ``make_app``)::

    from rest.chat_service import install_chat

    app = make_app(settings, database)
    chat = install_chat(app, signalling)   # signalling: bridge.chat.ports.SignallingPort

:func:`install_chat` builds the service with :func:`build_chat_service`
(``bridge.chat.assembly.build_chat`` with store = ``state.chat_store.SQLChatStore``,
notifier = ``app[NOTIFIER]``, URLs = ``app[SERVER_ROOT]``; it binds the event
router as the signalling port's sink), plugs the adapter into
``rest.handlers.chat.CHAT_SERVICE``, keeps the assembled service in
:data:`CHAT_BRIDGE`, and adds a ``cleanup_ctx`` that runs restart
recovery and registers the delivery listener on start (after the notifier
started) and stops timers on shutdown (before the notifier stops).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from datetime import datetime

from aiohttp import web

from bridge.chat import group, one2one
from bridge.chat.assembly import ChatBridge, build_chat
from bridge.chat.core import utcnow
from bridge.chat.model import (
    ChatSession,
    Composing,
    ComposingState,
    Invitee,
    NewGroup,
    NewSession,
    OutgoingText,
    Participant,
    RestStatus,
    StoredMessage,
)
from bridge.chat.notifications import ChatUrls
from bridge.chat.ports import SignallingPort
from bridge.config import Settings
from bridge.ids import UserUri
from bridge.ports import Notifier
from rest.app import DATABASE, SERVER_ROOT, SETTINGS
from rest.delivery import DeliveryService
from rest.errors import OMAFault, invalid_input, no_valid_address
from rest.handlers.channels import NOTIFIER
from rest.handlers.chat import CHAT_SERVICE, ChatTarget, Created
from rest.models import (
    ChatMessage,
    ChatSessionInformation,
    ExtensionParameters,
    GroupChatSessionInformation,
    IsComposing,
    MessageStatus,
    MessageStatusReport,
    ParticipantInformation,
    ParticipantList,
    ParticipantSessionStatus,
    ParticipantStatus,
)
from rest.observability import METRICS
from state.chat_backlog import OutboxBacklog
from state.chat_store import CommitHook, SQLChatStore
from state.db import Database

log = logging.getLogger(__name__)

CHAT_BRIDGE: web.AppKey[ChatBridge] = web.AppKey("chat_bridge")
"""The assembled chat service (its router is the signalling event sink), for tests."""


def build_chat_service(
    settings: Settings,
    database: Database,
    notifier: Notifier,
    signalling: SignallingPort,
    urls: ChatUrls,
    *,
    clock: Callable[[], datetime] = utcnow,
    on_commit: CommitHook | None = None,
) -> ChatBridge:
    """The chat service over the SQL store, its router bound as ``signalling``'s event sink."""
    return build_chat(
        settings=settings,
        store=SQLChatStore(
            database,
            commit_interval=settings.store_commit_interval,
            claims=notifier if isinstance(notifier, DeliveryService) else None,
            owner=settings.instance_id,
            on_commit=on_commit,
        ),
        notifier=notifier,
        signalling=signalling,
        urls=urls,
        clock=clock,
    )


def install_chat(
    app: web.Application, signalling: SignallingPort, *, recover: Collection[str] | None = None
) -> ChatBridge:
    """Build the chat service for ``app`` (made by ``make_app``) and plug it in.

    ``recover``: the instances whose live sessions start-up recovery ends
    (``bridge.chat.recovery.recover``; None: all).
    """
    metrics = app.get(METRICS)
    chat = build_chat_service(
        app[SETTINGS],
        app[DATABASE],
        app[NOTIFIER],
        signalling,
        app[SERVER_ROOT],
        on_commit=None if metrics is None else metrics.store_committed,
    )
    app[CHAT_BRIDGE] = chat
    app[CHAT_SERVICE] = RestChatService(chat, app[SETTINGS])

    async def lifetime(_app: web.Application) -> AsyncIterator[None]:
        await chat.start(OutboxBacklog(app[DATABASE]), recover)
        yield
        await chat.stop()

    app.cleanup_ctx.append(lifetime)
    return chat


def _not_one_to_one() -> OMAFault:
    # a group target reached a 1-1 only operation: a routing bug, not a client error
    return OMAFault(500, "SVC0001", ["internal error: a 1-1 operation on a group chat"])


def session_view(cs: ChatSession) -> ChatSessionInformation:
    """``chatSessionInformation`` of a stored session (resourceURL added by the handler)."""
    return ChatSessionInformation(
        subject=cs.subject,
        originator_address=cs.originator,
        originator_name=cs.originator_name,
        t_participant_address=cs.invitee,
        t_participant_name=cs.t_participant_name,
        status=ParticipantStatus(one2one.REST_STATUS[one2one.SessionState(cs.state)]),
        client_correlator=cs.client_correlator,
    )


def message_view(msg: StoredMessage) -> ChatMessage:
    """``chatMessage`` of a stored message."""
    reports = sorted(msg.reports, key=lambda r: list(RestStatus).index(r))
    return ChatMessage(
        text=msg.text,
        report_request=[MessageStatus(r.value) for r in reports] or None,
        client_correlator=msg.client_correlator,
    )


def participant_view(p: Participant) -> ParticipantInformation:
    """``participantInformation`` of a member (resourceURL added by the handler)."""
    return ParticipantInformation(
        address=p.address,
        name=p.name,
        is_originator=p.is_originator or None,
        status=ParticipantStatus(p.status.value),
    )


def group_view(cs: ChatSession, people: Sequence[Participant]) -> GroupChatSessionInformation:
    """``groupChatSessionInformation`` of ``cs`` (status = the caller's own participation)."""
    originator = next((p for p in people if p.is_originator), None)
    return GroupChatSessionInformation(
        subject=cs.subject,
        participant=[participant_view(p) for p in people],
        originator_address=None if originator is None else originator.address,
        originator_name=cs.originator_name if originator is None else originator.name,
        status=ParticipantStatus(group.REST_STATUS[group.GroupState(cs.state)].value),
        client_correlator=cs.client_correlator,
    )


def _invitees(
    part: str, people: Sequence[ParticipantInformation], members: Sequence[UserUri]
) -> tuple[tuple[Invitee, ...], dict[UserUri, str | None]]:
    """The invitees (``members`` left out) and the names given to ``members``; 400 on repeats."""
    seen: set[UserUri] = set()
    invitees: list[Invitee] = []
    names: dict[UserUri, str | None] = {}
    for p in people:
        if p.address in seen:
            raise invalid_input(f"{part}.address", f"{p.address} is listed twice")
        seen.add(p.address)
        if p.address in members:
            names[p.address] = p.name
            continue
        invitees.append(Invitee(p.address, p.name))
    return tuple(invitees), names


class RestChatService:
    """``rest.handlers.chat.ChatService``: 1-1 chat, promote and group chat."""

    def __init__(self, chat: ChatBridge, settings: Settings) -> None:
        self.chat = chat
        self.settings = settings

    # --- 1-1 sessions ------------------------------------------------------------------

    async def create_session(
        self, user: UserUri, other: UserUri, info: ChatSessionInformation
    ) -> Created[ChatSessionInformation]:
        """R3: invite ``other``."""
        new = NewSession(
            subject=info.subject,
            originator_name=info.originator_name,
            t_participant_name=info.t_participant_name,
            client_correlator=info.client_correlator,
        )
        cs, created = await self.chat.confirmed.create_session(user, other, new)
        return Created(session_view(cs), cs.id, created)

    async def get_session(
        self, user: UserUri, other: UserUri, session_id: str
    ) -> ChatSessionInformation:
        """R4 GET."""
        return session_view(await self.chat.confirmed.get_session(user, other, session_id))

    async def end_session(self, user: UserUri, other: UserUri, session_id: str) -> None:
        """R4 DELETE."""
        await self.chat.confirmed.end_session(user, other, session_id)

    async def get_session_status(
        self, user: UserUri, other: UserUri, session_id: str
    ) -> ParticipantSessionStatus:
        """R5 GET."""
        cs = await self.chat.confirmed.get_session(user, other, session_id)
        state = one2one.SessionState(cs.state)
        return ParticipantSessionStatus(status=ParticipantStatus(one2one.REST_STATUS[state]))

    async def accept_session(self, user: UserUri, other: UserUri, session_id: str) -> None:
        """R5 PUT Connected."""
        await self.chat.confirmed.accept_session(user, other, session_id)

    # --- messages --------------------------------------------------------------------

    @staticmethod
    def _one(target: ChatTarget) -> UserUri:
        if target.other is None:
            raise _not_one_to_one()
        return target.other

    async def send_message(self, target: ChatTarget, message: ChatMessage) -> Created[ChatMessage]:
        """R6/R14: a chat message; 400 SVC0002 above ``chat_max_text_bytes``."""
        size = len(message.text.encode("utf-8"))
        if size > self.settings.chat_max_text_bytes:
            raise invalid_input(
                "chatMessage.text",
                f"{size} bytes, at most {self.settings.chat_max_text_bytes} allowed",
            )
        text = OutgoingText(
            text=message.text,
            reports=frozenset(RestStatus(r.value) for r in message.reports),
            client_correlator=message.client_correlator,
        )
        if target.is_group:
            msg, created = await self.chat.groups.send_message(target.user, target.session_id, text)
            return Created(message_view(msg), msg.id, created)
        other = self._one(target)
        msg, created = await self.chat.messages.send_message(
            target.user, other, target.session_id, text
        )
        return Created(message_view(msg), msg.id, created)

    async def send_composing(self, target: ChatTarget, composing: IsComposing) -> None:
        """R6/R14: isComposing."""
        state = Composing(
            state=ComposingState(composing.state.value),
            last_active=composing.last_active,
            content_type=composing.content_type,
            refresh=composing.refresh,
        )
        if target.is_group:
            await self.chat.groups.send_composing(target.user, target.session_id, state)
            return
        other = self._one(target)
        await self.chat.messages.send_composing(target.user, other, target.session_id, state)

    async def get_message(self, target: ChatTarget, message_id: str) -> ChatMessage:
        """R7b/R15b GET."""
        if target.is_group:
            msg = await self.chat.groups.get_message(target.user, target.session_id, message_id)
            return message_view(msg)
        other = self._one(target)
        msg = await self.chat.messages.get_message(
            target.user, other, target.session_id, message_id
        )
        return message_view(msg)

    async def get_message_status(self, target: ChatTarget, message_id: str) -> MessageStatusReport:
        """R7/R15 GET."""
        if target.is_group:
            status = await self.chat.groups.get_message_status(
                target.user, target.session_id, message_id
            )
            return MessageStatusReport(status=MessageStatus(status.value))
        other = self._one(target)
        status = await self.chat.messages.get_message_status(
            target.user, other, target.session_id, message_id
        )
        return MessageStatusReport(status=MessageStatus(status.value))

    async def report_message(
        self, target: ChatTarget, message_id: str, status: MessageStatus
    ) -> None:
        """R7/R15 PUT Delivered/Displayed."""
        if target.is_group:
            await self.chat.groups.report_message(
                target.user, target.session_id, message_id, RestStatus(status.value)
            )
            return
        other = self._one(target)
        await self.chat.messages.report_message(
            target.user, other, target.session_id, message_id, RestStatus(status.value)
        )

    # --- promote and group chat (R8-R13) ---------------------------------------------

    def _check_size(self, count: int, part: str) -> None:
        if count > self.settings.chat_group_max_size:
            raise OMAFault(403, "POL0003", [part])

    async def extend_session(
        self, user: UserUri, other: UserUri, session_id: str, params: ExtensionParameters
    ) -> Created[GroupChatSessionInformation]:
        """R8: a new group with ``other`` and the new participants; the 1-1 ends."""
        part = f"{params.ROOT}.participant"
        invitees, _ = _invitees(part, params.participant, [user, other])
        if not invitees:
            raise no_valid_address(part)
        self._check_size(len(invitees) + 2, part)
        new = NewGroup(invitees, params.subject, params.client_correlator)
        cs, created = await self.chat.groups.promote(user, other, session_id, new)
        return await self._created_group(user, cs, created)

    async def _created_group(
        self, user: UserUri, cs: ChatSession, created: bool
    ) -> Created[GroupChatSessionInformation]:
        cs, people = await self.chat.groups.get(user, cs.id)
        return Created(group_view(cs, people), cs.id, created)

    async def create_group(
        self, user: UserUri, info: GroupChatSessionInformation
    ) -> Created[GroupChatSessionInformation]:
        """R9: invite the participants to a new group chat."""
        part = f"{info.ROOT}.participant"
        if info.originator_address not in (None, user):
            raise invalid_input(f"{info.ROOT}.originatorAddress", "must be the userId of the URL")
        invitees, names = _invitees(part, info.participant, [user])
        if not invitees:
            raise no_valid_address(part)
        self._check_size(len(invitees) + 1, part)
        name = info.originator_name if info.originator_name is not None else names.get(user)
        new = NewGroup(invitees, info.subject, info.client_correlator, name)
        cs, created = await self.chat.groups.create(user, new)
        return await self._created_group(user, cs, created)

    async def get_group(self, user: UserUri, session_id: str) -> GroupChatSessionInformation:
        """R10 GET."""
        cs, people = await self.chat.groups.get(user, session_id)
        return group_view(cs, people)

    async def leave_group(self, user: UserUri, session_id: str) -> None:
        """R10 DELETE: decline or leave."""
        await self.chat.groups.leave(user, session_id)

    async def list_participants(self, user: UserUri, session_id: str) -> ParticipantList:
        """R11 GET."""
        _cs, people = await self.chat.groups.get(user, session_id)
        return ParticipantList(participant=[participant_view(p) for p in people])

    async def add_participants(
        self, user: UserUri, session_id: str, participants: Sequence[ParticipantInformation]
    ) -> Created[ParticipantList]:
        """R11 POST: REFER the new members (see ``bridge.chat.groups``: who is skipped)."""
        part = f"{ParticipantList.ROOT}.participant"
        invitees, _ = _invitees(part, participants, [])
        added = await self.chat.groups.add(user, session_id, invitees)
        plist = ParticipantList(participant=[participant_view(p) for p in added])
        return Created(plist, session_id, True)

    async def get_participant(
        self, user: UserUri, session_id: str, participant: UserUri
    ) -> ParticipantInformation:
        """R12 GET."""
        _cs, p = await self.chat.groups.participant(user, session_id, participant)
        return participant_view(p)

    async def remove_participant(
        self, user: UserUri, session_id: str, participant: UserUri
    ) -> None:
        """R12 DELETE: own address → decline/leave; another → remove (creator only)."""
        await self.chat.groups.remove(user, session_id, participant)

    async def get_participant_status(
        self, user: UserUri, session_id: str, participant: UserUri
    ) -> ParticipantSessionStatus:
        """R13 GET."""
        _cs, p = await self.chat.groups.participant(user, session_id, participant)
        return ParticipantSessionStatus(status=ParticipantStatus(p.status.value))

    async def accept_group(self, user: UserUri, session_id: str) -> None:
        """R13 PUT Connected on one's own address."""
        await self.chat.groups.accept(user, session_id)
