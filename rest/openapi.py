"""The OpenAPI 3.1 document of the REST surface, served at ``GET /openapi.json`` and ``GET /docs``.

The document is generated, once, from what the application really serves:

* **paths and verbs** come from the aiohttp router (:func:`router_operations`):
  every route the app answers is looked up in :data:`OPERATIONS` (summary,
  bodies, answers, faults per path template and verb); a route without an
  entry, or an entry without a route, stops the application from starting, so
  the document cannot drift from the route tables (``rest.handlers.*``);
* **schemas** come from the pydantic models (``rest.models``,
  ``rest.channel_models``) through ``models_json_schema(by_alias=True)``:
  request bodies in validation mode, answers in serialization mode, each body
  wrapped in its single root (``{"chatMessage": {...}}``, OMA REST_NetAPI_Common);
* **formats** as ``rest.body`` negotiates them (docs/rest-formats.md): JSON and
  XML everywhere, ``application/x-www-form-urlencoded`` on the creating POSTs;
* **faults** share one ``requestError`` schema (OMA REST_NetAPI_Common), with the
  statuses each route can answer (401 with ``WWW-Authenticate``, 503 with
  ``Retry-After``); a verb a path does not serve answers 405 with ``Allow``
  (OMA REST Chat v1.0 resources), and HEAD is served wherever GET is (RFC 9110 §9.3.2);
* **notifications** (OMA REST Chat v1.0 notifications) are the ``webhooks`` POSTed to a
  ``notifyURL``, and the items of a Notification Channel's ``notificationList``
  (OMA NotificationChannel v1.0).

``/docs`` is a self-contained HTML page listing the operations (no external
asset).
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from rest import xmlbody
from rest.channel_models import (
    CHANNEL_LIST_ROOT,
    CHANNEL_ROOT,
    NOTIFICATION_LIST_ROOT,
    NotificationChannel,
    NotificationChannelList,
)
from rest.models import (
    NOTIFICATION_MODELS,
    REQUEST_ERROR,
    ChatMessage,
    ChatNotificationSubscription,
    ChatSessionInformation,
    ChatSubscriptionList,
    ExceptionDetail,
    ExtensionParameters,
    GroupChatSessionInformation,
    IsComposing,
    MessageStatusReport,
    ParticipantInformation,
    ParticipantList,
    ParticipantSessionStatus,
    ResourceReference,
)

OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"
HEALTH_PATH = "/health"
READY_PATH = "/ready"
METRICS_PATH = "/metrics"
PUBLIC_PATHS = frozenset({HEALTH_PATH, READY_PATH, METRICS_PATH, OPENAPI_PATH, DOCS_PATH})
"""Served without authentication (``rest.auth``)."""

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
XML = xmlbody.XML

ANY_VERB = ("GET", "PUT", "POST", "DELETE", "PATCH")
"""The verbs documented for a ``*`` route (it answers every verb)."""

Mode = Literal["validation", "serialization"]

BODY_MODELS: dict[str, type[BaseModel]] = {
    m.ROOT: m
    for m in (
        ChatNotificationSubscription,
        ChatSubscriptionList,
        ChatMessage,
        IsComposing,
        ChatSessionInformation,
        MessageStatusReport,
        ParticipantSessionStatus,
        ParticipantInformation,
        GroupChatSessionInformation,
        ParticipantList,
        ExtensionParameters,
        ResourceReference,
    )
}
BODY_MODELS[CHANNEL_ROOT] = NotificationChannel
BODY_MODELS[CHANNEL_LIST_ROOT] = NotificationChannelList
BODY_MODELS.update(NOTIFICATION_MODELS)
"""Root element name → model of every body the API reads or writes."""


# --- the operation table -------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One successful answer: status, body root (None: no body), description."""

    status: int
    root: str | None
    description: str
    location: bool = False


@dataclass(frozen=True)
class Operation:
    """What one verb on one path does, in the terms of the document."""

    summary: str
    tag: str
    answers: tuple[Answer, ...]
    faults: frozenset[int]
    body: tuple[str, ...] = ()
    """Roots the request body may carry (one of them); empty: no body is read."""
    form: bool = False
    body_optional: bool = False
    public: bool = False
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


AUTHED = frozenset({400, 401, 403, 406})
"""Faults of every authenticated route: bad or forbidden {userId}, credentials, Accept."""
WITH_BODY = frozenset({413, 415})
FOUND = frozenset({404})
CHAT = frozenset({404, 409, 503})
"""Faults from the chat service (bridge.errors: NotFound, Conflict, Unavailable)."""
UNCONFIGURED = frozenset({501})
"""A bridge built without a chat service (rest.handlers.chat)."""

SUBS = "/chat/v1/{userId}/subscriptions"
CHANNELS = "/notificationchannel/v1/{userId}/channels"
ONE = "/chat/v1/{userId}/oneToOne/{otherUserId}"
SESS = ONE + "/{sessionId}"
GROUP = "/chat/v1/{userId}/group"
GSESS = GROUP + "/{sessionId}"
PART = GSESS + "/participants/{participantId}"

_CM = (ChatMessage.ROOT, IsComposing.ROOT)
_PARTS = (ParticipantInformation.ROOT, ParticipantList.ROOT)
_NO_CONTENT = Answer(204, None, "done")


def _messages(where: str) -> Operation:
    return Operation(
        f"Send a chat message or an isComposing indication ({where})",
        "chat messages",
        (
            Answer(201, ResourceReference.ROOT, "message sent: its status URL", location=True),
            Answer(200, ResourceReference.ROOT, "clientCorrelator replay: the existing message"),
            Answer(204, None, "isComposing sent"),
        ),
        AUTHED | WITH_BODY | CHAT | UNCONFIGURED,
        body=_CM,
        form=True,
    )


def _message(where: str) -> Operation:
    return Operation(
        f"Read a sent or received message ({where})",
        "chat messages",
        (Answer(200, ChatMessage.ROOT, "the message"),),
        AUTHED | CHAT,
    )


def _status_read(where: str) -> Operation:
    return Operation(
        f"Read the status of a sent message ({where})",
        "chat messages",
        (Answer(200, MessageStatusReport.ROOT, "the status"),),
        AUTHED | CHAT,
    )


def _status_put(where: str) -> Operation:
    return Operation(
        f"Report a received message Delivered or Displayed ({where})",
        "chat messages",
        (_NO_CONTENT,),
        AUTHED | WITH_BODY | CHAT,
        body=(MessageStatusReport.ROOT,),
    )


def _callback() -> Operation:
    return Operation(
        "A channel's callbackURL: only a subscription's notifyURL (any verb is refused)",
        "notification channels",
        (),
        AUTHED | FOUND,
        description="Answers 403 for a live channel and 404 otherwise, whatever the verb.",
    )


OPERATIONS: dict[str, dict[str, Operation]] = {
    HEALTH_PATH: {
        "GET": Operation(
            "Liveness of the bridge and its store",
            "service",
            (Answer(200, None, "the store answers"),),
            frozenset({503}),
            public=True,
        )
    },
    READY_PATH: {
        "GET": Operation(
            "Readiness: store, SIP and MSRP listeners, IMS core (docs/operations.md)",
            "service",
            (Answer(200, None, "ready to take traffic"),),
            frozenset({503}),
            public=True,
        )
    },
    METRICS_PATH: {
        "GET": Operation(
            "Prometheus metrics in the text exposition format (docs/operations.md)",
            "service",
            (Answer(200, None, "the metrics"),),
            frozenset({401}),
            public=True,
            description="Needs the REST credentials only with the setting metrics_require_auth.",
        )
    },
    OPENAPI_PATH: {
        "GET": Operation(
            "This OpenAPI document",
            "service",
            (Answer(200, None, "the document"),),
            frozenset(),
            public=True,
        )
    },
    DOCS_PATH: {
        "GET": Operation(
            "A human-readable list of the operations (HTML)",
            "service",
            (Answer(200, None, "the page"),),
            frozenset(),
            public=True,
        )
    },
    SUBS: {
        "GET": Operation(
            "List the chat notification subscriptions (R1)",
            "subscriptions",
            (Answer(200, ChatSubscriptionList.ROOT, "the subscriptions (maybe none)"),),
            AUTHED,
        ),
        "POST": Operation(
            "Subscribe to chat notifications (R1)",
            "subscriptions",
            (
                Answer(201, ChatNotificationSubscription.ROOT, "created", location=True),
                Answer(200, ChatNotificationSubscription.ROOT, "clientCorrelator replay"),
            ),
            AUTHED | WITH_BODY,
            body=(ChatNotificationSubscription.ROOT,),
            form=True,
        ),
    },
    SUBS + "/{subscriptionId}": {
        "GET": Operation(
            "Read a subscription (R2)",
            "subscriptions",
            (Answer(200, ChatNotificationSubscription.ROOT, "the subscription"),),
            AUTHED | FOUND,
        ),
        "DELETE": Operation(
            "Delete a subscription (R2)", "subscriptions", (_NO_CONTENT,), AUTHED | FOUND
        ),
    },
    CHANNELS: {
        "GET": Operation(
            "List the live notification channels",
            "notification channels",
            (Answer(200, CHANNEL_LIST_ROOT, "the channels (maybe none)"),),
            AUTHED,
        ),
        "POST": Operation(
            "Create a LongPolling notification channel",
            "notification channels",
            (
                Answer(201, CHANNEL_ROOT, "created", location=True),
                Answer(200, CHANNEL_ROOT, "clientCorrelator replay", location=True),
            ),
            AUTHED | WITH_BODY,
            body=(CHANNEL_ROOT,),
            form=True,
        ),
    },
    CHANNELS + "/{channelId}": {
        "GET": Operation(
            "Read a notification channel",
            "notification channels",
            (Answer(200, CHANNEL_ROOT, "the channel"),),
            AUTHED | FOUND,
        ),
        "DELETE": Operation(
            "Delete a notification channel, its queue and its subscriptions",
            "notification channels",
            (_NO_CONTENT,),
            AUTHED | FOUND,
        ),
    },
    CHANNELS + "/{channelId}/poll": {
        "POST": Operation(
            "Long poll a channel (its channelURL)",
            "notification channels",
            (Answer(200, NOTIFICATION_LIST_ROOT, "the queued notifications (maybe none)"),),
            AUTHED | FOUND | WITH_BODY,
            body=("any",),
            body_optional=True,
            description="The body, if any, is ignored but must be well-formed JSON or XML.",
        ),
    },
    CHANNELS + "/{channelId}/callback": {verb: _callback() for verb in ANY_VERB},
    ONE: {
        "POST": Operation(
            "Invite otherUserId to a confirmed 1-1 chat session (R3)",
            "1-1 chat",
            (
                Answer(201, ChatSessionInformation.ROOT, "invited", location=True),
                Answer(200, ChatSessionInformation.ROOT, "clientCorrelator replay"),
            ),
            AUTHED | WITH_BODY | CHAT | UNCONFIGURED,
            body=(ChatSessionInformation.ROOT,),
            form=True,
        ),
    },
    SESS: {
        "GET": Operation(
            "Read a 1-1 chat session (R4)",
            "1-1 chat",
            (Answer(200, ChatSessionInformation.ROOT, "the session"),),
            AUTHED | CHAT,
        ),
        "DELETE": Operation(
            "Decline the invitation or end the 1-1 session (R4)",
            "1-1 chat",
            (_NO_CONTENT,),
            AUTHED | CHAT,
        ),
    },
    SESS + "/status": {
        "GET": Operation(
            "Read one's own participation in the 1-1 session (R5)",
            "1-1 chat",
            (Answer(200, ParticipantSessionStatus.ROOT, "the status"),),
            AUTHED | CHAT,
        ),
        "PUT": Operation(
            "Accept the 1-1 invitation: status Connected, or no body (R5)",
            "1-1 chat",
            (_NO_CONTENT,),
            AUTHED | WITH_BODY | CHAT,
            body=(ParticipantSessionStatus.ROOT,),
            body_optional=True,
        ),
    },
    SESS + "/messages": {"POST": _messages("1-1, sessionId may be adhoc; R6")},
    SESS + "/messages/{messageId}": {"GET": _message("1-1; R7b")},
    SESS + "/messages/{messageId}/status": {
        "GET": _status_read("1-1; R7"),
        "PUT": _status_put("1-1; R7"),
    },
    SESS + "/extend": {
        "POST": Operation(
            "Promote the 1-1 chat to a group chat (R8)",
            "group chat",
            (
                Answer(201, GroupChatSessionInformation.ROOT, "the new group", location=True),
                Answer(200, GroupChatSessionInformation.ROOT, "clientCorrelator replay"),
            ),
            AUTHED | WITH_BODY | CHAT | UNCONFIGURED,
            body=(ExtensionParameters.ROOT,),
            form=True,
        ),
    },
    GROUP: {
        "POST": Operation(
            "Start a group chat (R9)",
            "group chat",
            (
                Answer(201, GroupChatSessionInformation.ROOT, "created", location=True),
                Answer(200, GroupChatSessionInformation.ROOT, "clientCorrelator replay"),
            ),
            AUTHED | WITH_BODY | CHAT | UNCONFIGURED,
            body=(GroupChatSessionInformation.ROOT,),
            form=True,
        ),
    },
    GSESS: {
        "GET": Operation(
            "Read a group chat session (R10)",
            "group chat",
            (Answer(200, GroupChatSessionInformation.ROOT, "the group"),),
            AUTHED | CHAT,
        ),
        "DELETE": Operation(
            "Leave the group chat (R10)", "group chat", (_NO_CONTENT,), AUTHED | CHAT
        ),
    },
    GSESS + "/participants": {
        "GET": Operation(
            "List the participants (R11)",
            "group chat",
            (Answer(200, ParticipantList.ROOT, "the participants"),),
            AUTHED | CHAT,
        ),
        "POST": Operation(
            "Invite one participant or a list (R11)",
            "group chat",
            (
                Answer(201, ResourceReference.ROOT, "invited", location=True),
                Answer(200, ResourceReference.ROOT, "clientCorrelator replay"),
            ),
            AUTHED | WITH_BODY | CHAT,
            body=_PARTS,
            form=True,
        ),
    },
    PART: {
        "GET": Operation(
            "Read a participant (R12)",
            "group chat",
            (Answer(200, ParticipantInformation.ROOT, "the participant"),),
            AUTHED | CHAT,
        ),
        "DELETE": Operation(
            "Own address: decline or leave; another: remove the participant (R12)",
            "group chat",
            (_NO_CONTENT,),
            AUTHED | CHAT,
        ),
    },
    PART + "/status": {
        "GET": Operation(
            "Read a participant's status (R13)",
            "group chat",
            (Answer(200, ParticipantSessionStatus.ROOT, "the status"),),
            AUTHED | CHAT,
        ),
        "PUT": Operation(
            "Accept a group invitation on one's own address: Connected, or no body (R13)",
            "group chat",
            (_NO_CONTENT,),
            AUTHED | WITH_BODY | CHAT,
            body=(ParticipantSessionStatus.ROOT,),
            body_optional=True,
        ),
    },
    GSESS + "/messages": {"POST": _messages("group; R14")},
    GSESS + "/messages/{messageId}": {"GET": _message("group; R15b")},
    GSESS + "/messages/{messageId}/status": {
        "GET": _status_read("group; R15"),
        "PUT": _status_put("group; R15"),
    },
}
"""Path template (under ``{serverRoot}``'s path, except the public ones) → verb → operation."""


# --- the router ----------------------------------------------------------------


def router_operations(app: web.Application) -> dict[str, set[str]]:
    """Path template → verbs the app's router serves (``*`` kept as is, HEAD left out)."""
    served: dict[str, set[str]] = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("formatter") or info.get("path")
        if not isinstance(path, str) or route.method == "HEAD":
            continue
        served.setdefault(path, set()).add(route.method)
    return served


def documented_verbs(verbs: Iterable[str]) -> set[str]:
    """The verbs the document lists for a route's verbs (``*`` → :data:`ANY_VERB`)."""
    out: set[str] = set()
    for verb in verbs:
        out.update(ANY_VERB if verb == "*" else (verb,))
    return out


def _table(prefix: str) -> dict[str, dict[str, Operation]]:
    return {(p if p in PUBLIC_PATHS else prefix + p): ops for p, ops in OPERATIONS.items()}


class DocumentOutOfStep(RuntimeError):
    """The router and :data:`OPERATIONS` disagree (a route added without its documentation)."""


# --- schemas -------------------------------------------------------------------

_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _doc_name(root: str, mode: Mode) -> str:
    return f"{root}.{'request' if mode == 'validation' else 'response'}"


def _xml_object(root: str) -> dict[str, Any]:
    ns = xmlbody.namespace_of(root)
    return {"name": root, "namespace": ns, "prefix": xmlbody.PREFIXES[ns]}


class _Schemas:
    """Component schemas: the models in both modes, their single-root documents, faults."""

    def __init__(self) -> None:
        keys: list[tuple[type[BaseModel], JsonSchemaMode]] = []
        for model in dict.fromkeys(BODY_MODELS.values()):
            keys += [(model, "validation"), (model, "serialization")]
        keys.append((ExceptionDetail, "serialization"))
        refs, defs = models_json_schema(keys, by_alias=True, ref_template=_REF)
        self.components: dict[str, Any] = dict(defs.get("$defs", {}))
        self._refs = {(m, mode): r for (m, mode), r in refs.items()}
        detail = self.model(ExceptionDetail, "serialization")
        kinds = ("serviceException", "policyException")
        self.components[REQUEST_ERROR] = self.document(
            REQUEST_ERROR,
            {
                "type": "object",
                "description": "An OMA fault (OMA REST_NetAPI_Common): exactly one exception kind.",
                "properties": {k: detail for k in kinds},
                "oneOf": [{"required": [k]} for k in kinds],
                "additionalProperties": False,
            },
        )
        notification = {"oneOf": [self.doc(r, "serialization") for r in NOTIFICATION_MODELS]}
        self.components["notification"] = notification
        self.components[NOTIFICATION_LIST_ROOT] = self.document(
            NOTIFICATION_LIST_ROOT, {"type": "array", "items": _ref("notification")}
        )

    def model(self, model: type[BaseModel], mode: Mode) -> dict[str, Any]:
        """The reference to ``model``'s schema in ``mode``."""
        return dict(self._refs[(model, mode)])

    def doc(self, root: str, mode: Mode) -> dict[str, Any]:
        """The reference to the single-root document of ``root`` (added on first use)."""
        name = _doc_name(root, mode)
        if name not in self.components:
            self.components[name] = self.document(root, self.model(BODY_MODELS[root], mode))
        return _ref(name)

    @staticmethod
    def document(root: str, inner: dict[str, Any]) -> dict[str, Any]:
        """``{root: inner}`` with nothing else (OMA REST_NetAPI_Common)."""
        return {
            "type": "object",
            "properties": {root: inner},
            "required": [root],
            "additionalProperties": False,
        }


# --- the document ----------------------------------------------------------------

_FAULT_TEXT = {
    400: "invalid request (SVC0001-SVC0004): a path user, an element, a malformed body",
    401: "missing or wrong credentials",
    403: "policy refusal (POL0001-POL0011): another user's resource, a limit",
    404: "no such resource (never existed, deleted or expired)",
    406: "Accept admits neither JSON nor XML",
    409: "the resource's state does not allow it",
    413: "request body too large",
    415: "unsupported request Content-Type",
    501: "no chat service is configured on this bridge",
    503: "the IMS core or the store is unavailable (Retry-After)",
}
_FAULT_HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}}},
    405: {"Allow": {"schema": {"type": "string"}}},
    503: {"Retry-After": {"schema": {"type": "string"}}},
}
_USER_PATTERN = r"^(acr:auth|(tel:)?\+[0-9]{1,15}|sips?:[A-Za-z0-9._~-]+@[A-Za-z0-9.-]+)$"
_PARAMETERS: dict[str, tuple[str, dict[str, Any]]] = {
    "userId": (
        "The user acted for: a tel: or sip: URI, a bare +E.164 number, or acr:auth (the"
        " caller's own user); raw or percent-encoded (tel%3A%2B15551230001).",
        {"type": "string", "pattern": _USER_PATTERN, "examples": ["tel:+15551230001"]},
    ),
    "otherUserId": (
        "The other party of the 1-1 chat: a tel: or sip: URI or a bare +E.164 number,"
        " raw or percent-encoded.",
        {"type": "string", "pattern": _USER_PATTERN, "examples": ["tel:+15551230002"]},
    ),
    "participantId": (
        "A participant's address: a tel: or sip: URI or a bare +E.164 number, raw or"
        " percent-encoded.",
        {"type": "string", "pattern": _USER_PATTERN, "examples": ["tel:+15551230002"]},
    ),
    "sessionId": (
        "A chat session id, as the bridge gave it to this user (adhoc: the implicit 1-1"
        " session of OMA REST Chat v1.0).",
        {"type": "string", "minLength": 1},
    ),
    "messageId": ("A message id.", {"type": "string", "minLength": 1}),
    "subscriptionId": ("A subscription id.", {"type": "string", "minLength": 1}),
    "channelId": ("A notification channel id.", {"type": "string", "minLength": 1}),
}


def _content(schema_json: dict[str, Any], schema_xml: dict[str, Any]) -> dict[str, Any]:
    return {JSON: {"schema": schema_json}, XML: {"schema": schema_xml}}


def _choice(refs: list[dict[str, Any]]) -> dict[str, Any]:
    return refs[0] if len(refs) == 1 else {"oneOf": refs}


def _request_body(op: Operation, schemas: _Schemas) -> dict[str, Any]:
    if op.body == ("any",):
        return {
            "required": False,
            "description": "ignored; must be well-formed if present",
            "content": {JSON: {"schema": {}}, XML: {"schema": {}}},
        }
    docs = [schemas.doc(r, "validation") for r in op.body]
    xml = [{**schemas.model(BODY_MODELS[r], "validation"), "xml": _xml_object(r)} for r in op.body]
    content = _content(_choice(docs), _choice(xml))
    if op.form:
        flat = [schemas.model(BODY_MODELS[r], "validation") for r in op.body]
        content[FORM] = {"schema": flat[0] if len(flat) == 1 else {"anyOf": flat}}
    body: dict[str, Any] = {
        "required": not op.body_optional,
        "description": "one root element: "
        + " or ".join(op.body)
        + (" (form: flat leaf names, docs/rest-formats.md)" if op.form else ""),
        "content": content,
    }
    return body


def _answer(answer: Answer, schemas: _Schemas, path: str) -> dict[str, Any]:
    out: dict[str, Any] = {"description": answer.description}
    if answer.location:
        out["headers"] = {
            "Location": {
                "description": "the resourceURL",
                "required": True,
                "schema": {"type": "string", "format": "uri"},
            }
        }
    if path == HEALTH_PATH:
        out["content"] = {JSON: {"schema": _ref("health")}}
    elif path == READY_PATH:
        out["content"] = {JSON: {"schema": _ref("ready")}}
    elif path == METRICS_PATH:
        out["content"] = {"text/plain": {"schema": {"type": "string"}}}
    elif path == OPENAPI_PATH:
        out["content"] = {JSON: {"schema": {"type": "object"}}}
    elif path == DOCS_PATH:
        out["content"] = {"text/html": {"schema": {"type": "string"}}}
    elif answer.root is not None:
        root = answer.root
        if root in BODY_MODELS:
            xml = {**schemas.model(BODY_MODELS[root], "serialization"), "xml": _xml_object(root)}
            out["content"] = _content(schemas.doc(root, "serialization"), xml)
        else:
            out["content"] = _content(_ref(root), {"xml": _xml_object(root)})
    return out


def _fault(status: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": _FAULT_TEXT[status],
        "content": _content(_ref(REQUEST_ERROR), {"xml": _xml_object(REQUEST_ERROR)}),
    }
    if status in _FAULT_HEADERS:
        out["headers"] = _FAULT_HEADERS[status]
    return out


def _operation(path: str, verb: str, op: Operation, schemas: _Schemas) -> dict[str, Any]:
    names = [s.strip("{}") for s in path.split("/") if s.startswith("{")]
    out: dict[str, Any] = {
        "operationId": _operation_id(path, verb),
        "summary": op.summary,
        "tags": [op.tag],
    }
    if op.description:
        out["description"] = op.description
    if names:
        out["parameters"] = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": _PARAMETERS[name][0],
                "schema": _PARAMETERS[name][1],
            }
            for name in names
        ]
    if op.body:
        out["requestBody"] = _request_body(op, schemas)
    responses: dict[str, Any] = {}
    for answer in op.answers:
        responses[str(answer.status)] = _answer(answer, schemas, path)
    for status in sorted(op.faults):
        if path == HEALTH_PATH and status == 503:
            responses["503"] = {
                "description": "the store does not answer",
                "content": {JSON: {"schema": _ref("health")}},
            }
        elif path == READY_PATH and status == 503:
            responses["503"] = {
                "description": "not ready: the reasons by check (store, sip, msrp, ims_core)",
                "content": {JSON: {"schema": _ref("ready")}},
            }
        else:
            responses[str(status)] = _fault(status)
    out["responses"] = responses
    if op.public:
        out["security"] = []
    return out


def _operation_id(path: str, verb: str) -> str:
    words = [s.strip("{}") for s in path.split("/") if s and s not in {"v1", "chat"}]
    return verb.lower() + "".join(w[:1].upper() + w[1:] for w in words).replace(".", "")


def build_document(app: web.Application, server_root: str, auth_enabled: bool) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app``; raise :class:`DocumentOutOfStep` on any drift."""
    prefix = urlsplit(server_root).path.rstrip("/")
    table = _table(prefix)
    served = router_operations(app)
    missing = {
        (path, verb)
        for path, verbs in served.items()
        for verb in documented_verbs(verbs)
        if verb not in table.get(path, {})
    }
    phantom = {
        (path, verb)
        for path, ops in table.items()
        for verb in ops
        if verb not in documented_verbs(served.get(path, ()))
    }
    if missing or phantom:
        raise DocumentOutOfStep(f"undocumented routes {sorted(missing)}; phantom {sorted(phantom)}")
    schemas = _Schemas()
    schemas.components["health"] = {
        "type": "object",
        "properties": {"status": {"enum": ["ok", "unavailable"]}, "store": {"type": "boolean"}},
        "required": ["status", "store"],
    }
    schemas.components["ready"] = {
        "type": "object",
        "properties": {
            "status": {"enum": ["ok", "unavailable"]},
            "reasons": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "required": ["status", "reasons"],
    }
    paths: dict[str, Any] = {}
    for path in sorted(served, key=_path_order):
        paths[path] = {
            verb.lower(): _operation(path, verb, table[path][verb], schemas)
            for verb in sorted(table[path], key=ANY_VERB.index)
        }
    security: list[dict[str, list[str]]] = [{"basic": []}, {"bearer": []}]
    if not auth_enabled:
        security.append({})
    parts = urlsplit(server_root)
    webhooks = {
        root: {
            "post": {
                "summary": f"{root} POSTed to a subscription's notifyURL (OMA REST Chat v1.0)",
                "requestBody": {
                    "required": True,
                    "content": _content(
                        schemas.doc(root, "serialization"),
                        {
                            **schemas.model(model, "serialization"),
                            "xml": _xml_object(root),
                        },
                    ),
                },
                "responses": {"204": {"description": "received"}},
            }
        }
        for root, model in NOTIFICATION_MODELS.items()
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "chat-bridge: OMA RESTful Network API for Chat 1.0",
            "version": "1.0",
            "description": (
                "The REST surface of chat-bridge (OMA REST Chat v1.0 and Notification Channel"
                " v1.0; docs/rest-formats.md"
                " for the JSON, XML and form-encoded bodies). Every body is one root element."
                " Answers are JSON unless Accept prefers application/xml. A verb a path does"
                " not list answers 405 with Allow; HEAD is served wherever GET is. Every"
                " fault is a requestError."
            ),
        },
        "servers": [{"url": f"{parts.scheme}://{parts.netloc}"}],
        "security": security,
        "tags": [
            {"name": t}
            for t in dict.fromkeys(op.tag for ops in OPERATIONS.values() for op in ops.values())
        ],
        "paths": paths,
        "webhooks": webhooks,
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def _path_order(path: str) -> tuple[int, str]:
    return (0 if path in PUBLIC_PATHS else 1, path)


# --- the HTML page ----------------------------------------------------------------


def render_html(document: Mapping[str, Any]) -> str:
    """A self-contained page listing every path, verb, summary and answer of ``document``."""
    esc = html.escape
    rows: list[str] = []
    for path, item in document["paths"].items():
        for verb, op in item.items():
            statuses = ", ".join(op["responses"])
            body = op.get("requestBody", {}).get("content", {})
            rows.append(
                "<tr>"
                f"<td class=v>{esc(verb.upper())}</td><td><code>{esc(path)}</code></td>"
                f"<td>{esc(op['summary'])}</td><td>{esc(', '.join(body))}</td>"
                f"<td>{esc(statuses)}</td></tr>"
            )
    hooks = "".join(f"<li><code>{esc(name)}</code></li>" for name in document.get("webhooks", {}))
    info = document["info"]
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>{esc(info['title'])}</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}"
        ".v{font-weight:bold}</style></head><body>"
        f"<h1>{esc(info['title'])}</h1><p>{esc(info['description'])}</p>"
        f'<p>Machine-readable: <a href="{OPENAPI_PATH}">{OPENAPI_PATH}</a> (OpenAPI '
        f"{esc(document['openapi'])}).</p>"
        "<table><tr><th>verb</th><th>path</th><th>summary</th><th>request body</th>"
        "<th>answers</th></tr>" + "".join(rows) + "</table>"
        f"<h2>Notifications (POSTed to a notifyURL)</h2><ul>{hooks}</ul></body></html>"
    )


# --- serving --------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    """The document and its page, encoded once at application start."""

    document: dict[str, Any]
    json_bytes: bytes
    html: str


PUBLISHED = web.AppKey("openapi", Published)


async def serve_document(request: web.Request) -> web.Response:
    """``GET /openapi.json``."""
    return web.Response(body=request.app[PUBLISHED].json_bytes, content_type=JSON)


async def serve_docs(request: web.Request) -> web.Response:
    """``GET /docs``."""
    return web.Response(text=request.app[PUBLISHED].html, content_type="text/html")


def add_routes(app: web.Application) -> None:
    """Add ``/openapi.json`` and ``/docs`` (before :func:`publish`)."""
    app.router.add_get(OPENAPI_PATH, serve_document)
    app.router.add_get(DOCS_PATH, serve_docs)


def publish(app: web.Application, server_root: str, auth_enabled: bool) -> Published:
    """Build the document from ``app``'s router (every route added) and store it."""
    document = build_document(app, server_root, auth_enabled)
    published = Published(document, json.dumps(document).encode(), render_html(document))
    app[PUBLISHED] = published
    return published
