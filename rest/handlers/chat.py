"""The chat route table: R3-R15b of docs/protocol-mapping.md "Resources", promote (R8) included.

Paths under ``{serverRoot}/chat/v1/{userId}``; each answers exactly the verbs
below, any other verb gets 405 + ``Allow``:

====  ===============================================================  ==========
R3    ``/oneToOne/{otherUserId}``                                      POST
R4    ``/oneToOne/{otherUserId}/{sessionId}``                          GET DELETE
R5    ``/oneToOne/{otherUserId}/{sessionId}/status``                   GET PUT
R6    ``/oneToOne/{otherUserId}/{sessionId}/messages``                 POST
R7b   ``/oneToOne/{otherUserId}/{sessionId}/messages/{messageId}``     GET
R7    ``/oneToOne/{otherUserId}/{sessionId}/messages/{messageId}/status``  GET PUT
R8    ``/oneToOne/{otherUserId}/{sessionId}/extend``                   POST
R9    ``/group``                                                       POST
R10   ``/group/{sessionId}``                                           GET DELETE
R11   ``/group/{sessionId}/participants``                              GET POST
R12   ``/group/{sessionId}/participants/{participantId}``              GET DELETE
R13   ``/group/{sessionId}/participants/{participantId}/status``       GET PUT
R14   ``/group/{sessionId}/messages``                                  POST
R15b  ``/group/{sessionId}/messages/{messageId}``                      GET
R15   ``/group/{sessionId}/messages/{messageId}/status``               GET PUT
====  ===============================================================  ==========

(GET is offered wherever a ``resourceURL`` or ``link`` points, docs/decisions.md
"URLs and user ids".)

Every handler first validates the path users and the body with the models
(400 SVC0002/SVC0003/SVC0004), with the caller already authorized by
``rest.auth``; then it calls the :class:`ChatService` port plugged into
:data:`CHAT_SERVICE`, and builds the answer: ``resourceURL``/``Location`` come
from ``{serverRoot}`` here, never from the service. Until a service is plugged
in (issue 4), nothing pretends to work: a resource under a ``{sessionId}``
cannot exist (404) and the creation endpoints (new 1-1 or group session, adhoc
message, adhoc extend) answer 501 SVC0001 "no chat service is configured on
this bridge" (only an application built without ``rest.chat_service.install_chat``,
as in unit tests of the REST layer alone).

Bodies are JSON or XML; the creating POSTs (R3, R6, R8, R9, R11, R14) also
take ``application/x-www-form-urlencoded`` (docs/rest-formats.md).

The service raises ``bridge.errors`` (``NotFound`` → 404, ``Conflict`` → 409,
``PolicyViolation`` → 403, ``Unavailable`` → 503), rendered by the fault
middleware. A ``Created.created`` of False marks a ``clientCorrelator`` replay:
200 with the existing resource instead of 201.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from aiohttp import web

from bridge.ids import UserUri
from rest import auth
from rest.app import SERVER_ROOT
from rest.body import OMAModel, parse_body, parse_body_choice, respond
from rest.errors import OMAFault, invalid_enum, invalid_input, no_valid_address, not_found
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
    ResourceReference,
)
from rest.uris import InvalidUserUri, ServerRoot, canonical_user

log = logging.getLogger(__name__)

ADHOC = "adhoc"
"""The reserved sessionId of the implicit 1-1 session (OMA REST Chat v1.0 adhoc chat)."""
MAX_ID_LEN = 256

T = TypeVar("T", bound=OMAModel)


@dataclass(frozen=True)
class ChatTarget:
    """The conversation a message operation applies to: a 1-1 (``other``) or a group."""

    user: UserUri
    session_id: str
    other: UserUri | None = None

    @property
    def is_group(self) -> bool:
        """True for a group chat."""
        return self.other is None


@dataclass(frozen=True)
class Created(Generic[T]):
    """The outcome of a create: the resource, its id, and False on a correlator replay."""

    resource: T
    resource_id: str
    created: bool = True


class ChatService(Protocol):
    """The chat side of the bridge, as the REST handlers call it (implemented by issue 4)."""

    async def create_session(
        self, user: UserUri, other: UserUri, info: ChatSessionInformation
    ) -> Created[ChatSessionInformation]:
        """Invite ``other`` to a confirmed 1-1 session (R3); resource_id = sessionId."""

    async def get_session(
        self, user: UserUri, other: UserUri, session_id: str
    ) -> ChatSessionInformation:
        """The 1-1 session (R4)."""

    async def end_session(self, user: UserUri, other: UserUri, session_id: str) -> None:
        """Decline an invitation or end the session (R4 DELETE)."""

    async def get_session_status(
        self, user: UserUri, other: UserUri, session_id: str
    ) -> ParticipantSessionStatus:
        """The user's own participation in the 1-1 session (R5)."""

    async def accept_session(self, user: UserUri, other: UserUri, session_id: str) -> None:
        """Accept a 1-1 invitation (R5 PUT Connected)."""

    async def send_message(self, target: ChatTarget, message: ChatMessage) -> Created[ChatMessage]:
        """Send a chat message (R6, R14); resource_id = messageId."""

    async def send_composing(self, target: ChatTarget, composing: IsComposing) -> None:
        """Send a typing indication (R6, R14)."""

    async def get_message(self, target: ChatTarget, message_id: str) -> ChatMessage:
        """A sent or received message (R7b, R15b)."""

    async def get_message_status(self, target: ChatTarget, message_id: str) -> MessageStatusReport:
        """The status of a sent message (R7, R15)."""

    async def report_message(
        self, target: ChatTarget, message_id: str, status: MessageStatus
    ) -> None:
        """Send a Delivered/Displayed report for a received message (R7, R15 PUT)."""

    async def extend_session(
        self, user: UserUri, other: UserUri, session_id: str, params: ExtensionParameters
    ) -> Created[GroupChatSessionInformation]:
        """Promote a 1-1 chat to a group (R8); resource_id = the group's sessionId."""

    async def create_group(
        self, user: UserUri, info: GroupChatSessionInformation
    ) -> Created[GroupChatSessionInformation]:
        """Start a group chat (R9); resource_id = sessionId."""

    async def get_group(self, user: UserUri, session_id: str) -> GroupChatSessionInformation:
        """The group session (R10)."""

    async def leave_group(self, user: UserUri, session_id: str) -> None:
        """Leave or terminate the user's participation (R10 DELETE)."""

    async def list_participants(self, user: UserUri, session_id: str) -> ParticipantList:
        """The group's participants (R11)."""

    async def add_participants(
        self, user: UserUri, session_id: str, participants: Sequence[ParticipantInformation]
    ) -> Created[ParticipantList]:
        """Invite participants (R11 POST)."""

    async def get_participant(
        self, user: UserUri, session_id: str, participant: UserUri
    ) -> ParticipantInformation:
        """One participant (R12)."""

    async def remove_participant(
        self, user: UserUri, session_id: str, participant: UserUri
    ) -> None:
        """Own address: decline or leave; other address: remove (R12 DELETE)."""

    async def get_participant_status(
        self, user: UserUri, session_id: str, participant: UserUri
    ) -> ParticipantSessionStatus:
        """A participant's status (R13)."""

    async def accept_group(self, user: UserUri, session_id: str) -> None:
        """Accept a group invitation (R13 PUT Connected on one's own address)."""


CHAT_SERVICE: web.AppKey[ChatService] = web.AppKey("chat_service")
"""Where issue 4 plugs in its :class:`ChatService`."""


# --- helpers -----------------------------------------------------------------


def _service(request: web.Request) -> ChatService | None:
    return request.app.get(CHAT_SERVICE)


def _unavailable() -> OMAFault:
    return OMAFault(501, "SVC0001", ["no chat service is configured on this bridge"])


def _path_user(request: web.Request, name: str) -> UserUri:
    try:
        return canonical_user(request.match_info[name])
    except InvalidUserUri:
        raise no_valid_address(name) from None


def _path_id(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if len(value) > MAX_ID_LEN:
        raise not_found(request.path)
    return value


def _root(request: web.Request) -> ServerRoot:
    return request.app[SERVER_ROOT]


def _created(
    request: web.Request, root_name: str, body: OMAModel, url: str, created: bool
) -> web.Response:
    if created:
        return respond(request, root_name, body, status=201, headers={"Location": url})
    return respond(request, root_name, body)


def _one_to_one(request: web.Request) -> tuple[UserUri, UserUri]:
    return auth.acting_user(request), _path_user(request, "otherUserId")


def _target(request: web.Request, group: bool) -> ChatTarget:
    user = auth.acting_user(request)
    other = None if group else _path_user(request, "otherUserId")
    return ChatTarget(user, _path_id(request, "sessionId"), other)


def _target_url(root: ServerRoot, target: ChatTarget, *segments: str) -> str:
    if target.other is None:
        return root.chat(target.user, "group", target.session_id, *segments)
    return root.chat(target.user, "oneToOne", target.other, target.session_id, *segments)


def _with_participant_urls(
    root: ServerRoot, user: UserUri, session_id: str, people: Sequence[ParticipantInformation]
) -> list[ParticipantInformation]:
    return [
        p
        if p.resource_url
        else p.model_copy(
            update={"resource_url": root.chat(user, "group", session_id, "participants", p.address)}
        )
        for p in people
    ]


def _group_view(
    root: ServerRoot, user: UserUri, session_id: str, info: GroupChatSessionInformation
) -> GroupChatSessionInformation:
    return info.model_copy(
        update={
            "resource_url": root.chat(user, "group", session_id),
            "participant": _with_participant_urls(root, user, session_id, info.participant),
        }
    )


def _accepting(status: ParticipantSessionStatus | None, part: str) -> None:
    # GSMA clients PUT without a body to accept (as the GSMA OneAPI 0.1 test suite does)
    if status is not None and status.status is not ParticipantStatus.CONNECTED:
        raise invalid_enum(f"{part}.status", [ParticipantStatus.CONNECTED.value])


REPORTABLE = (MessageStatus.DELIVERED, MessageStatus.DISPLAYED)


# --- 1-1 sessions (R3-R5, R8) -----------------------------------------------


async def create_session(request: web.Request) -> web.Response:
    """R3 POST: invite ``otherUserId`` to a confirmed 1-1 session."""
    user, other = _one_to_one(request)
    info = await parse_body(request, ChatSessionInformation, ChatSessionInformation.ROOT, form=True)
    assert info is not None
    if info.originator_address not in (None, user):
        raise invalid_input(f"{info.ROOT}.originatorAddress", "must be the userId of the URL")
    if info.t_participant_address not in (None, other):
        raise invalid_input(
            f"{info.ROOT}.tParticipantAddress", "must be the otherUserId of the URL"
        )
    if info.status is not None:
        raise invalid_input(f"{info.ROOT}.status", "set by the server")
    info = info.model_copy(update={"originator_address": user, "t_participant_address": other})
    service = _service(request)
    if service is None:
        raise _unavailable()
    result = await service.create_session(user, other, info)
    url = _root(request).chat(user, "oneToOne", other, result.resource_id)
    body = result.resource.model_copy(update={"resource_url": url})
    return _created(request, info.ROOT, body, url, result.created)


async def read_session(request: web.Request) -> web.Response:
    """R4 GET: the 1-1 session."""
    target = _target(request, group=False)
    service = _service(request)
    if service is None or target.session_id == ADHOC:
        raise not_found(request.path)
    assert target.other is not None
    info = await service.get_session(target.user, target.other, target.session_id)
    url = _target_url(_root(request), target)
    return respond(request, info.ROOT, info.model_copy(update={"resource_url": url}))


async def delete_session(request: web.Request) -> web.Response:
    """R4 DELETE: decline the invitation or end the session."""
    target = _target(request, group=False)
    service = _service(request)
    if service is None or target.session_id == ADHOC:
        raise not_found(request.path)
    assert target.other is not None
    await service.end_session(target.user, target.other, target.session_id)
    return web.Response(status=204)


async def read_session_status(request: web.Request) -> web.Response:
    """R5 GET: the caller's own participation status."""
    target = _target(request, group=False)
    service = _service(request)
    if service is None or target.session_id == ADHOC:
        raise not_found(request.path)
    assert target.other is not None
    status = await service.get_session_status(target.user, target.other, target.session_id)
    url = _target_url(_root(request), target, "status")
    return respond(request, status.ROOT, status.model_copy(update={"resource_url": url}))


async def update_session_status(request: web.Request) -> web.Response:
    """R5 PUT: accept the invitation (``Connected``, or an empty body)."""
    target = _target(request, group=False)
    root = ParticipantSessionStatus.ROOT
    status = await parse_body(request, ParticipantSessionStatus, root, allow_empty=True)
    _accepting(status, root)
    service = _service(request)
    if service is None or target.session_id == ADHOC:
        raise not_found(request.path)
    assert target.other is not None
    await service.accept_session(target.user, target.other, target.session_id)
    return web.Response(status=204)


async def extend_session(request: web.Request) -> web.Response:
    """R8 POST: promote the 1-1 chat to a group chat; 201 + the new group."""
    target = _target(request, group=False)
    params = await parse_body(request, ExtensionParameters, ExtensionParameters.ROOT, form=True)
    assert params is not None and target.other is not None
    service = _service(request)
    if service is None:
        if target.session_id == ADHOC:
            raise _unavailable()
        raise not_found(request.path)
    result = await service.extend_session(target.user, target.other, target.session_id, params)
    root = _root(request)
    body = _group_view(root, target.user, result.resource_id, result.resource)
    url = root.chat(target.user, "group", result.resource_id)
    return _created(request, body.ROOT, body, url, result.created)


# --- messages (R6, R7, R7b, R14, R15, R15b) -----------------------------------


def _messages(group: bool) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def send(request: web.Request) -> web.Response:
        """R6/R14 POST: a ``chatMessage`` (201 + resourceReference) or ``isComposing`` (204)."""
        target = _target(request, group)
        body = await parse_body_choice(
            request, {ChatMessage.ROOT: ChatMessage, IsComposing.ROOT: IsComposing}, form=True
        )
        service = _service(request)
        if service is None:
            if target.session_id == ADHOC and not group:
                raise _unavailable()
            raise not_found(request.path)
        if isinstance(body, IsComposing):
            await service.send_composing(target, body)
            return web.Response(status=204)
        assert isinstance(body, ChatMessage)
        result = await service.send_message(target, body)
        url = _target_url(_root(request), target, "messages", result.resource_id, "status")
        ref = ResourceReference(resource_url=url)
        return _created(request, ref.ROOT, ref, url, result.created)

    return send


def _message(group: bool) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def read(request: web.Request) -> web.Response:
        """R7b/R15b GET: one message."""
        target = _target(request, group)
        message_id = _path_id(request, "messageId")
        service = _service(request)
        if service is None:
            raise not_found(request.path)
        message = await service.get_message(target, message_id)
        url = _target_url(_root(request), target, "messages", message_id)
        return respond(request, message.ROOT, message.model_copy(update={"resource_url": url}))

    return read


def _message_status(group: bool) -> dict[str, Callable[[web.Request], Awaitable[web.Response]]]:
    async def read(request: web.Request) -> web.Response:
        """R7/R15 GET: the status of a sent message."""
        target = _target(request, group)
        message_id = _path_id(request, "messageId")
        service = _service(request)
        if service is None:
            raise not_found(request.path)
        report = await service.get_message_status(target, message_id)
        url = _target_url(_root(request), target, "messages", message_id, "status")
        return respond(request, report.ROOT, report.model_copy(update={"resource_url": url}))

    async def update(request: web.Request) -> web.Response:
        """R7/R15 PUT: send a Delivered or Displayed report for a received message."""
        target = _target(request, group)
        message_id = _path_id(request, "messageId")
        report = await parse_body(request, MessageStatusReport, MessageStatusReport.ROOT)
        assert report is not None
        if report.status not in REPORTABLE:
            raise invalid_enum(f"{report.ROOT}.status", [s.value for s in REPORTABLE])
        service = _service(request)
        if service is None:
            raise not_found(request.path)
        await service.report_message(target, message_id, report.status)
        return web.Response(status=204)

    return {"GET": read, "PUT": update}


# --- group chat (R9-R13) ------------------------------------------------------


async def create_group(request: web.Request) -> web.Response:
    """R9 POST: start a group chat; 201 + Location + ``groupChatSessionInformation``."""
    user = auth.acting_user(request)
    info = await parse_body(
        request, GroupChatSessionInformation, GroupChatSessionInformation.ROOT, form=True
    )
    assert info is not None
    if info.status is not None:
        raise invalid_input(f"{info.ROOT}.status", "set by the server")
    service = _service(request)
    if service is None:
        raise _unavailable()
    result = await service.create_group(user, info)
    root = _root(request)
    body = _group_view(root, user, result.resource_id, result.resource)
    url = root.chat(user, "group", result.resource_id)
    return _created(request, body.ROOT, body, url, result.created)


def _group_service(request: web.Request) -> tuple[ChatService, UserUri, str]:
    user = auth.acting_user(request)
    session_id = _path_id(request, "sessionId")
    service = _service(request)
    if service is None:
        raise not_found(request.path)
    return service, user, session_id


async def read_group(request: web.Request) -> web.Response:
    """R10 GET: the group session."""
    service, user, session_id = _group_service(request)
    info = await service.get_group(user, session_id)
    body = _group_view(_root(request), user, session_id, info)
    return respond(request, body.ROOT, body)


async def delete_group(request: web.Request) -> web.Response:
    """R10 DELETE: leave the group (or end the caller's participation)."""
    service, user, session_id = _group_service(request)
    await service.leave_group(user, session_id)
    return web.Response(status=204)


async def list_participants(request: web.Request) -> web.Response:
    """R11 GET: the participants."""
    service, user, session_id = _group_service(request)
    plist = await service.list_participants(user, session_id)
    root = _root(request)
    body = plist.model_copy(
        update={
            "participant": _with_participant_urls(root, user, session_id, plist.participant),
            "resource_url": root.chat(user, "group", session_id, "participants"),
        }
    )
    return respond(request, body.ROOT, body)


async def add_participants(request: web.Request) -> web.Response:
    """R11 POST: ``participantInformation`` or ``participantList``; 201 + resourceReference."""
    user = auth.acting_user(request)
    session_id = _path_id(request, "sessionId")
    body = await parse_body_choice(
        request,
        {
            ParticipantInformation.ROOT: ParticipantInformation,
            ParticipantList.ROOT: ParticipantList,
        },
        form=True,
    )
    if isinstance(body, ParticipantInformation):
        people: list[ParticipantInformation] = [body]
    else:
        assert isinstance(body, ParticipantList)
        if not body.participant:
            raise invalid_input(f"{body.ROOT}.participant", "at least one participant")
        people = list(body.participant)
    service = _service(request)
    if service is None:
        raise not_found(request.path)
    result = await service.add_participants(user, session_id, people)
    segments = ("participants",) if len(people) != 1 else ("participants", people[0].address)
    url = _root(request).chat(user, "group", session_id, *segments)
    ref = ResourceReference(resource_url=url)
    return _created(request, ref.ROOT, ref, url, result.created)


async def read_participant(request: web.Request) -> web.Response:
    """R12 GET: one participant."""
    participant = _path_user(request, "participantId")
    service, user, session_id = _group_service(request)
    info = await service.get_participant(user, session_id, participant)
    (body,) = _with_participant_urls(_root(request), user, session_id, [info])
    return respond(request, body.ROOT, body)


async def delete_participant(request: web.Request) -> web.Response:
    """R12 DELETE: own address → decline or leave; another → remove."""
    participant = _path_user(request, "participantId")
    service, user, session_id = _group_service(request)
    await service.remove_participant(user, session_id, participant)
    return web.Response(status=204)


async def read_participant_status(request: web.Request) -> web.Response:
    """R13 GET: a participant's status."""
    participant = _path_user(request, "participantId")
    service, user, session_id = _group_service(request)
    status = await service.get_participant_status(user, session_id, participant)
    url = _root(request).chat(user, "group", session_id, "participants", participant, "status")
    return respond(request, status.ROOT, status.model_copy(update={"resource_url": url}))


async def update_participant_status(request: web.Request) -> web.Response:
    """R13 PUT: accept a group invitation (``Connected`` on one's own address)."""
    participant = _path_user(request, "participantId")
    user = auth.acting_user(request)
    root = ParticipantSessionStatus.ROOT
    status = await parse_body(request, ParticipantSessionStatus, root, allow_empty=True)
    _accepting(status, root)
    if participant != user:
        raise OMAFault(403, "POL0001", ["only the invited user accepts an invitation"])
    service, user, session_id = _group_service(request)
    await service.accept_group(user, session_id)
    return web.Response(status=204)


Handler = Callable[[web.Request], Awaitable[web.Response]]


def route_table(prefix: str) -> dict[str, dict[str, Handler]]:
    """Path → {verb: handler} of every chat resource (the table in this module's docstring)."""
    base = f"{prefix}/chat/v1/{{userId}}"
    one = base + "/oneToOne/{otherUserId}"
    sess = one + "/{sessionId}"
    group = base + "/group"
    gsess = group + "/{sessionId}"
    part = gsess + "/participants/{participantId}"
    one_status = _message_status(group=False)
    group_status = _message_status(group=True)
    return {
        one: {"POST": create_session},
        sess: {"GET": read_session, "DELETE": delete_session},
        sess + "/status": {"GET": read_session_status, "PUT": update_session_status},
        sess + "/messages": {"POST": _messages(group=False)},
        sess + "/messages/{messageId}": {"GET": _message(group=False)},
        sess + "/messages/{messageId}/status": one_status,
        sess + "/extend": {"POST": extend_session},
        group: {"POST": create_group},
        gsess: {"GET": read_group, "DELETE": delete_group},
        gsess + "/participants": {"GET": list_participants, "POST": add_participants},
        part: {"GET": read_participant, "DELETE": delete_participant},
        part + "/status": {"GET": read_participant_status, "PUT": update_participant_status},
        gsess + "/messages": {"POST": _messages(group=True)},
        gsess + "/messages/{messageId}": {"GET": _message(group=True)},
        gsess + "/messages/{messageId}/status": group_status,
    }


def setup(app: web.Application, prefix: str) -> None:
    """Add the chat routes under ``prefix`` (the service is plugged in via CHAT_SERVICE)."""
    for path, verbs in route_table(prefix).items():
        for method, handler in verbs.items():
            if method == "GET":
                app.router.add_get(path, handler)
            else:
                app.router.add_route(method, path, handler)
