"""Pydantic models of every OMA Chat data structure (OMA REST Chat v1.0, REST_NetAPI_Common).

Field names are the snake_case of the OMA element names; the alias generator
turns them back into the exact camelCase names, and the irregular ones
(``resourceURL``, ``notifyURL``) carry explicit aliases. Each model names its
JSON root element in ``ROOT`` (and a module constant next to it).

JSON conventions (OMA REST_NetAPI_Common; docs/decisions.md "JSON, XML and form
bodies"): numbers and booleans are accepted native or quoted (pydantic's lax
mode) and numbers are accepted where a string is expected; output is native.
Repeated elements are lists (``reportRequest`` also accepts a single string, as
GSMA clients send it). Request models refuse unknown elements (400 SVC0002).
User addresses are validated and canonicalized with
``rest.uris.canonical_user``; a bad one is a ``user_uri`` error that
``rest.errors.fault_from_validation`` renders as 400 SVC0004. dateTime values
are parsed with any offset, kept in UTC and emitted as ``YYYY-MM-DDThh:mm:ssZ``.

Enumerations are spelled as docs/decisions.md "Enumerations and notification names"
has them; an unknown value is 400 SVC0003 with the valid values.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bridge.ids import UserUri
from bridge.subscriptions import NotificationFormat
from rest.body import OMAModel
from rest.uris import InvalidUserUri, canonical_user

__all__ = ["NotificationFormat"]  # re-exported: the CallbackReference enumeration

# --- enumerations (OMA REST Chat v1.0; docs/decisions.md) ----------------------


class EventType(str, enum.Enum):
    """``chatEventNotification.eventType``."""

    ACCEPTED = "Accepted"
    DECLINED = "Declined"
    SESSION_ENDED = "SessionEnded"
    SESSION_CANCELLED = "SessionCancelled"
    SUCCESSFUL = "Successful"
    FAILED = "Failed"


class MessageStatus(str, enum.Enum):
    """Status of a chat message; also the values of ``reportRequest``."""

    SENT = "Sent"
    DELIVERED = "Delivered"
    DISPLAYED = "Displayed"
    FAILED = "Failed"


class ParticipantStatus(str, enum.Enum):
    """Status of a participant (and of a 1-1 session's terminating party)."""

    INVITED = "Invited"
    CONNECTED = "Connected"
    DISCONNECTED = "Disconnected"
    DECLINED = "Declined"
    FAILED = "Failed"


class ComposingState(str, enum.Enum):
    """``isComposing.state`` (RFC 3994)."""

    ACTIVE = "active"
    IDLE = "idle"


class LinkRel(str, enum.Enum):
    """``link.rel`` values (OMA REST Chat v1.0 Link)."""

    CHAT_SESSION_INFORMATION = "ChatSessionInformation"
    GROUP_CHAT_SESSION_INFORMATION = "GroupChatSessionInformation"
    CHAT_MESSAGE = "ChatMessage"
    MESSAGE_STATUS_REPORT = "MessageStatusReport"
    PARTICIPANT_INFORMATION = "ParticipantInformation"
    PARTICIPANT_INFORMATION_STATUS = "ParticipantInformationStatus"
    PARTICIPANT_SESSION_STATUS = "ParticipantSessionStatus"


# --- scalar types -----------------------------------------------------------


def _user_address(value: str) -> UserUri:
    try:
        return canonical_user(value)
    except InvalidUserUri as exc:
        raise PydanticCustomError(
            "user_uri", "invalid user URI: {detail}", {"detail": str(exc)}
        ) from exc


UserAddress = Annotated[UserUri, AfterValidator(_user_address)]
"""An anyURI naming a user: validated and canonicalized."""


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def format_datetime(value: datetime) -> str:
    """``YYYY-MM-DDThh:mm:ssZ`` in UTC (docs/decisions.md "JSON, XML and form bodies")."""
    return _utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


UTCDateTime = Annotated[
    datetime, AfterValidator(_utc), PlainSerializer(format_datetime, return_type=str)
]
"""xsd:dateTime, held in UTC, emitted with ``Z``."""


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise PydanticCustomError("url", "must be an absolute http or https URL")
    return value


HttpURL = Annotated[str, AfterValidator(_http_url)]


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class _Model(OMAModel):
    """OMAModel that also accepts numbers where a string is expected (OMA REST_NetAPI_Common)."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    ROOT: ClassVar[str] = ""

    def document(self) -> dict[str, Any]:
        """The single-root JSON document ``{ROOT: {...}}``."""
        return {self.ROOT: self.to_json()}


# --- common data types (OMA REST_NetAPI_Common) --------------------------------


class Link(_Model):
    """A typed link to a related resource."""

    rel: str
    href: str


class CallbackReference(_Model):
    """Where and how notifications are delivered."""

    notify_url: HttpURL = Field(alias="notifyURL")
    callback_data: str | None = None
    notification_format: NotificationFormat | None = None


RESOURCE_REFERENCE = "resourceReference"


class ResourceReference(_Model):
    """The URL of a created resource."""

    ROOT = RESOURCE_REFERENCE
    resource_url: str = Field(alias="resourceURL")


class ExceptionDetail(_Model):
    """A ServiceException or PolicyException."""

    message_id: str
    text: str
    variables: list[str] | None = None


REQUEST_ERROR = "requestError"


class RequestError(_Model):
    """The body of every fault (OMA REST_NetAPI_Common): one of the two exception kinds."""

    ROOT = REQUEST_ERROR
    service_exception: ExceptionDetail | None = None
    policy_exception: ExceptionDetail | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> RequestError:
        if (self.service_exception is None) == (self.policy_exception is None):
            raise ValueError("exactly one of serviceException and policyException")
        return self


# --- subscriptions ----------------------------------------------------------

CHAT_NOTIFICATION_SUBSCRIPTION = "chatNotificationSubscription"


class ChatNotificationSubscription(_Model):
    """A chat notification subscription (request and response)."""

    ROOT = CHAT_NOTIFICATION_SUBSCRIPTION
    callback_reference: CallbackReference
    duration: int | None = Field(None, ge=0)
    client_correlator: str | None = Field(None, min_length=1, max_length=256)
    confirmed_chat_supported: bool | None = None
    adhoc_chat_supported: bool | None = None
    resource_url: str | None = Field(None, alias="resourceURL")
    link: list[Link] | None = None


CHAT_SUBSCRIPTION_LIST = "chatSubscriptionList"


class ChatSubscriptionList(_Model):
    """The subscriptions of one user."""

    ROOT = CHAT_SUBSCRIPTION_LIST
    chat_notification_subscription: list[ChatNotificationSubscription] = Field(default_factory=list)
    resource_url: str = Field(alias="resourceURL")


# --- chat structures --------------------------------------------------------

CHAT_MESSAGE = "chatMessage"


class ChatMessage(_Model):
    """A text chat message; ``reportRequest`` accepts a string or an array."""

    ROOT = CHAT_MESSAGE
    text: str = Field(min_length=1)
    report_request: Annotated[list[MessageStatus] | None, BeforeValidator(_one_or_many)] = None
    client_correlator: str | None = Field(None, min_length=1, max_length=256)
    resource_url: str | None = Field(None, alias="resourceURL")

    @property
    def reports(self) -> frozenset[MessageStatus]:
        """The requested reports (empty when none was asked for)."""
        return frozenset(self.report_request or ())


IS_COMPOSING = "isComposing"


class IsComposing(_Model):
    """A typing indication (RFC 3994 semantics)."""

    ROOT = IS_COMPOSING
    state: ComposingState
    last_active: UTCDateTime | None = None
    content_type: str | None = None
    refresh: int | None = Field(None, ge=0)


CHAT_SESSION_INFORMATION = "chatSessionInformation"


class ChatSessionInformation(_Model):
    """A confirmed 1-1 chat session.

    In a create request both addresses may be left out: they default to
    ``{userId}`` and ``{otherUserId}``, and must equal them when given.
    """

    ROOT = CHAT_SESSION_INFORMATION
    subject: str | None = None
    originator_address: UserAddress | None = None
    originator_name: str | None = None
    t_participant_address: UserAddress | None = None
    t_participant_name: str | None = None
    status: ParticipantStatus | None = None
    client_correlator: str | None = Field(None, min_length=1, max_length=256)
    resource_url: str | None = Field(None, alias="resourceURL")
    link: list[Link] | None = None


MESSAGE_STATUS_REPORT = "messageStatusReport"


class MessageStatusReport(_Model):
    """The status of a message (GET) or a report to send (PUT)."""

    ROOT = MESSAGE_STATUS_REPORT
    status: MessageStatus
    resource_url: str | None = Field(None, alias="resourceURL")


PARTICIPANT_SESSION_STATUS = "participantSessionStatus"


class ParticipantSessionStatus(_Model):
    """One's own participation in a session; PUT ``Connected`` accepts an invitation."""

    ROOT = PARTICIPANT_SESSION_STATUS
    status: ParticipantStatus
    resource_url: str | None = Field(None, alias="resourceURL")


PARTICIPANT_INFORMATION = "participantInformation"


class ParticipantInformation(_Model):
    """A group chat participant."""

    ROOT = PARTICIPANT_INFORMATION
    address: UserAddress
    name: str | None = None
    is_originator: bool | None = None
    status: ParticipantStatus | None = None
    client_correlator: str | None = Field(None, min_length=1, max_length=256)
    resource_url: str | None = Field(None, alias="resourceURL")
    link: list[Link] | None = None


GROUP_CHAT_SESSION_INFORMATION = "groupChatSessionInformation"


class GroupChatSessionInformation(_Model):
    """A group chat session and its participants."""

    ROOT = GROUP_CHAT_SESSION_INFORMATION
    subject: str | None = None
    participant: list[ParticipantInformation] = Field(min_length=1)
    originator_address: UserAddress | None = None
    originator_name: str | None = None
    status: ParticipantStatus | None = None
    client_correlator: str | None = Field(None, min_length=1, max_length=256)
    resource_url: str | None = Field(None, alias="resourceURL")
    link: list[Link] | None = None


PARTICIPANT_LIST = "participantList"


class ParticipantList(_Model):
    """The participants of a group chat (GET), or participants to add (POST)."""

    ROOT = PARTICIPANT_LIST
    participant: list[ParticipantInformation] = Field(default_factory=list)
    resource_url: str | None = Field(None, alias="resourceURL")


EXTENSION_PARAMETERS = "extensionParameters"


class ExtensionParameters(_Model):
    """Promote a 1-1 chat to a group: the added participants and a subject."""

    ROOT = EXTENSION_PARAMETERS
    participant: list[ParticipantInformation] = Field(min_length=1)
    subject: str | None = None
    client_correlator: str | None = Field(None, min_length=1, max_length=256)


# --- notifications, OMA 1.0 root names ---------------------------------------

CHAT_EVENT_NOTIFICATION = "chatEventNotification"


class ChatEventNotification(_Model):
    """A 1-1 or group session event for its originator or members."""

    ROOT = CHAT_EVENT_NOTIFICATION
    callback_data: str | None = None
    link: list[Link] = Field(min_length=1)
    event_type: EventType
    session_id: str
    reason: ExceptionDetail | None = None


CHAT_SESSION_INVITATION_NOTIFICATION = "chatSessionInvitationNotification"


class ChatSessionInvitationNotification(_Model):
    """An incoming 1-1 invitation awaiting accept or decline."""

    ROOT = CHAT_SESSION_INVITATION_NOTIFICATION
    callback_data: str | None = None
    originator_address: UserAddress
    originator_name: str | None = None
    t_participant_address: UserAddress | None = None
    t_participant_name: str | None = None
    subject: str | None = None
    session_id: str | None = None
    link: list[Link] = Field(min_length=1)


CHAT_MESSAGE_NOTIFICATION = "chatMessageNotification"


class ChatMessageNotification(_Model):
    """A received chat message or typing indication."""

    ROOT = CHAT_MESSAGE_NOTIFICATION
    callback_data: str | None = None
    link: list[Link] | None = None
    date_time: UTCDateTime | None = None
    chat_message: ChatMessage | None = None
    is_composing: IsComposing | None = None
    session_id: str
    message_id: str | None = None
    sender_address: UserAddress
    sender_name: str | None = None

    @model_validator(mode="after")
    def _content(self) -> ChatMessageNotification:
        if (self.chat_message is None) == (self.is_composing is None):
            raise ValueError("exactly one of chatMessage and isComposing")
        if self.chat_message is not None and not self.message_id:
            raise ValueError("messageId is mandatory with chatMessage")
        return self


CHAT_MESSAGE_STATUS_NOTIFICATION = "chatMessageStatusNotification"


class ChatMessageStatusNotification(_Model):
    """A delivery or display report (or failure) for a sent message."""

    ROOT = CHAT_MESSAGE_STATUS_NOTIFICATION
    callback_data: str | None = None
    link: list[Link] = Field(min_length=1)
    status: MessageStatus
    message_id: str


GROUP_CHAT_SESSION_INVITATION_NOTIFICATION = "groupChatSessionInvitationNotification"


class GroupChatSessionInvitationNotification(_Model):
    """An invitation to a group chat."""

    ROOT = GROUP_CHAT_SESSION_INVITATION_NOTIFICATION
    callback_data: str | None = None
    subject: str | None = None
    originator_address: UserAddress | None = None
    originator_name: str | None = None
    participant: list[ParticipantInformation] | None = None
    session_id: str
    link: list[Link] = Field(min_length=1)


CHAT_PARTICIPANT_STATUS_NOTIFICATION = "chatParticipantStatusNotification"


class ChatParticipantStatusNotification(_Model):
    """A change in a group's participants."""

    ROOT = CHAT_PARTICIPANT_STATUS_NOTIFICATION
    callback_data: str | None = None
    link: list[Link] = Field(min_length=1)
    participant: list[ParticipantInformation] = Field(min_length=1)
    session_id: str


ModelT = TypeVar("ModelT", bound=_Model)

NOTIFICATION_MODELS: dict[str, type[_Model]] = {
    m.ROOT: m
    for m in (
        ChatEventNotification,
        ChatSessionInvitationNotification,
        ChatMessageNotification,
        ChatMessageStatusNotification,
        GroupChatSessionInvitationNotification,
        ChatParticipantStatusNotification,
    )
}
"""Root name → model of every notification the bridge emits (OMA 1.0 profile)."""


def parse_document(doc: object, model: type[ModelT]) -> ModelT:
    """Validate ``{model.ROOT: {...}}`` (raises ValueError on any other shape)."""
    if not isinstance(doc, dict) or list(doc) != [model.ROOT]:
        raise ValueError(f"expected one root element {model.ROOT!r}")
    return model.model_validate(doc[model.ROOT])
