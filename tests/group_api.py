"""Group chat REST client of a real ``chat-bridge serve`` process (integration tests, bench).

The out-of-process sibling of :mod:`tests.chat_api`: the same ``call`` / ``subscribe`` /
``notes`` vocabulary, but over real HTTP toward a :class:`~tests.serve_process.ServeProcess`,
plus the group chat steps of docs/group-chat.md "REST behaviour" (OMA REST Chat v1.0 R8-R15):
create, accept, decline, leave, add, send, report. Every body the bridge answers and every
notification it POSTs is validated against its model in :mod:`rest.models`; every fault
against ``requestError``.

Every wait is bounded (:attr:`GroupApi.timeout`, 10 s by default) and fails with what *did*
arrive for that user and the tail of the bridge's log, so a test that stops on a missing
notification says which one and what came instead.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from rest.models import (
    NOTIFICATION_MODELS,
    GroupChatSessionInformation,
    MessageStatusReport,
    ModelT,
    ParticipantList,
    RequestError,
    ResourceReference,
    parse_document,
)
from rest.uris import quote_segment
from tests.chat_api import q
from tests.serve_process import ServeProcess, serve_env
from tests.testbed_fixture import free_port_block
from tests.unit.test_delivery_support import Receiver

REPO = Path(__file__).resolve().parent.parent
"""The checkout these tests come from: the bridge subprocess imports from it too."""

Json = dict[str, Any]

ACCEPT = {"participantSessionStatus": {"status": "Connected"}}


def tree_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with this checkout first on PYTHONPATH.

    The ``chat-bridge`` entry point of the venv imports whatever the editable install points
    at; a test run from another worktree must start a bridge built from its own tree. On a
    fresh clone (CI) both are the same directory and this changes nothing.
    """
    paths = [str(REPO), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    return {**env, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


def links(note: Json) -> dict[str, str]:
    """``{rel: href}`` of a notification or resource."""
    return {link["rel"]: link["href"] for link in note.get("link") or []}


def statuses(participants: Iterable[Json]) -> dict[str, str | None]:
    """``{address: status}`` of a ``participant`` array."""
    return {p["address"]: p.get("status") for p in participants}


def summary(root: str, note: Json) -> str:
    """One line per notification for failure messages."""
    keys = ("sessionId", "eventType", "status", "messageId", "senderAddress", "subject")
    parts = [f"{k}={note[k]}" for k in keys if k in note]
    if "participant" in note:
        parts.append(f"participant={statuses(note['participant'])}")
    if "chatMessage" in note:
        parts.append(f"text={note['chatMessage'].get('text')!r}")
    if "isComposing" in note:
        parts.append(f"isComposing={note['isComposing'].get('state')}")
    return f"{root}({', '.join(parts)})"


def as_participants(people: Sequence[str | tuple[str, str]]) -> list[Json]:
    """``participant`` array of addresses, or of (address, name) pairs."""
    out: list[Json] = []
    for p in people:
        if isinstance(p, tuple):
            out.append({"address": p[0], "name": p[1]})
        else:
            out.append({"address": p})
    return out


@dataclass(frozen=True)
class Group:
    """One member's view of a group: its own sessionId and group session URL."""

    user: str
    session_id: str
    url: str
    """``{serverRoot}/chat/v1/{user}/group/{sessionId}``."""


@dataclass(frozen=True)
class Invitation:
    """A ``groupChatSessionInvitationNotification`` as the invitee received it."""

    user: str
    note: Json

    @property
    def session_id(self) -> str:
        return str(self.note["sessionId"])

    @property
    def links(self) -> dict[str, str]:
        return links(self.note)

    @property
    def group(self) -> Group:
        return Group(self.user, self.session_id, self.links["GroupChatSessionInformation"])


class GroupApi:
    """REST calls toward one ``chat-bridge serve`` and the notifications its users received."""

    def __init__(
        self, serve: ServeProcess, receiver: Receiver, *, timeout: float = 10.0, poll: float = 0.05
    ) -> None:
        self.serve = serve
        self.receiver = receiver
        self.timeout = timeout
        self.poll = poll
        self._http: aiohttp.ClientSession | None = None

    # --- HTTP -------------------------------------------------------------------

    @property
    def root(self) -> str:
        return self.serve.root

    def url(self, user: str, *segments: str) -> str:
        """``{serverRoot}/chat/v1/{user}/{segments…}`` as the bridge spells it."""
        return "/".join([self.root, "chat", "v1", *map(quote_segment, (user, *segments))])

    def local(self, url: str) -> str:
        """The path of a URL the bridge emitted (it must start with its serverRoot)."""
        assert url.startswith(self.root + "/"), f"{url} is not under {self.root}"
        return url.removeprefix(self.root)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def request(
        self, method: str, path: str, body: Any = None
    ) -> tuple[int, Any, dict[str, str]]:
        """One request (``path`` relative to the root, or a full URL); status, JSON, headers."""
        if self._http is None:
            self._http = aiohttp.ClientSession()
        url = path if path.startswith("http") else self.root + path
        async with self._http.request(method, url, json=body) as resp:
            text = await resp.text()
            doc = await resp.json(content_type=None) if text else None
            return resp.status, doc, dict(resp.headers)

    async def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        """One request; asserts the status and returns the JSON body (None when empty)."""
        got, doc, _ = await self.request(method, path, body)
        assert got == status, f"{method} {path}: {got} {doc}\n{self.log_tail()}"
        return doc

    async def created(self, path: str, body: Json, model: type[ModelT]) -> tuple[ModelT, str]:
        """POST expecting 201 + Location; the body validated as ``model`` and the Location."""
        got, doc, headers = await self.request("POST", path, body)
        assert got == 201, f"POST {path}: {got} {doc}\n{self.log_tail()}"
        location = headers.get("Location", "")
        assert location, f"POST {path}: 201 without Location"
        return parse_document(doc, model), location

    async def fault(
        self,
        method: str,
        path: str,
        body: Any,
        status: int | Sequence[int],
        message_id: str | None = None,
    ) -> RequestError:
        """A request that must fail: the status (one of) and an OMA ``requestError`` body."""
        allowed = (status,) if isinstance(status, int) else tuple(status)
        got, doc, _ = await self.request(method, path, body)
        assert got in allowed, f"{method} {path}: {got} {doc}, expected {allowed}"
        err = parse_document(doc, RequestError)
        detail = err.service_exception or err.policy_exception
        assert detail is not None
        if message_id is not None:
            assert detail.message_id == message_id, f"{method} {path}: {doc}"
        return err

    async def subscribe(self, user: str, **flags: bool) -> None:
        """Subscribe ``user`` to chat notifications at the receiver's ``/{user}``."""
        callback = {"notifyURL": self.receiver.url(f"/{user}"), "callbackData": user}
        body = {"chatNotificationSubscription": {"callbackReference": callback, **flags}}
        await self.call("POST", f"/chat/v1/{q(user)}/subscriptions", body, 201)

    # --- notifications ------------------------------------------------------------

    def got(self, user: str, root: str) -> list[Json]:
        """Every ``root`` notification ``user`` received so far, each validated by its model."""
        out = []
        for r in self.receiver.received:
            if r.path == f"/{user}" and root in r.document:
                parse_document(r.document, NOTIFICATION_MODELS[root])
                out.append(r.document[root])
        return out

    def arrived(self, user: str) -> str:
        """What ``user`` received, one notification per line."""
        lines = [
            summary(root, body)
            for r in self.receiver.received
            if r.path == f"/{user}"
            for root, body in r.document.items()
        ]
        return "\n  ".join(lines) or "(nothing)"

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return "--- bridge log tail ---\n" + self.serve.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no bridge log)"

    async def notes(
        self,
        user: str,
        root: str,
        count: int = 1,
        match: Callable[[Json], bool] = lambda _n: True,
        what: str = "",
        timeout: float | None = None,
    ) -> list[Json]:
        """Wait (bounded) until ``user`` got ``count`` ``root`` notifications that ``match``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        while True:
            found = [n for n in self.got(user, root) if match(n)]
            if len(found) >= count:
                return found
            if loop.time() >= deadline:
                raise AssertionError(
                    f"{user}: {len(found)} of {count} {root} {what}; it received:\n  "
                    f"{self.arrived(user)}\n{self.log_tail()}"
                )
            await asyncio.sleep(self.poll)

    async def note(
        self,
        user: str,
        root: str,
        match: Callable[[Json], bool] = lambda _n: True,
        what: str = "",
        timeout: float | None = None,
    ) -> Json:
        """The first ``root`` notification of ``user`` that ``match``es (bounded wait)."""
        return (await self.notes(user, root, 1, match, what, timeout))[0]

    async def event(self, user: str, session_id: str, event_type: str) -> Json:
        """``chatEventNotification`` ``event_type`` on ``user``'s session ``session_id``."""
        return await self.note(
            user,
            "chatEventNotification",
            lambda n: n["sessionId"] == session_id and n["eventType"] == event_type,
            f"{event_type} on {session_id}",
        )

    async def participant_status(
        self, user: str, session_id: str, address: str, status: str
    ) -> Json:
        """``chatParticipantStatusNotification`` on ``session_id`` with ``address`` ``status``."""
        return await self.note(
            user,
            "chatParticipantStatusNotification",
            lambda n: (
                n["sessionId"] == session_id and statuses(n["participant"]).get(address) == status
            ),
            f"with {address} {status} on {session_id}",
        )

    async def until(
        self,
        probe: Callable[[], Awaitable[tuple[bool, Any]]],
        what: str,
        timeout: float | None = None,
    ) -> Any:
        """Poll ``probe`` (→ done, detail) until done; fail with the last detail."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        while True:
            done, detail = await probe()
            if done:
                return detail
            if loop.time() >= deadline:
                raise AssertionError(f"{what}: still {detail}\n{self.log_tail()}")
            await asyncio.sleep(self.poll * 2)

    # --- group chat (docs/group-chat.md "REST behaviour") --------------------------

    async def create_group(
        self, owner: str, people: Sequence[str | tuple[str, str]], subject: str | None = None
    ) -> tuple[Group, GroupChatSessionInformation]:
        """R9: POST ``…/group``; 201 + Location = resourceURL + ``groupChatSessionInformation``."""
        body: Json = {"participant": as_participants(people)}
        if subject is not None:
            body["subject"] = subject
        info, location = await self.created(
            f"/chat/v1/{q(owner)}/group",
            {"groupChatSessionInformation": body},
            GroupChatSessionInformation,
        )
        assert info.resource_url == location, (info.resource_url, location)
        prefix = self.url(owner, "group") + "/"
        assert location.startswith(prefix), f"{location} is not under {prefix}"
        return Group(owner, location.removeprefix(prefix), location), info

    async def invitation(
        self, user: str, match: Callable[[Json], bool] = lambda _n: True, what: str = ""
    ) -> Invitation:
        """The ``groupChatSessionInvitationNotification`` of ``user`` that ``match``es."""
        note = await self.note(user, "groupChatSessionInvitationNotification", match, what)
        return Invitation(user, note)

    async def accept(self, inv: Invitation) -> None:
        """R13 PUT ``Connected`` on the invitation's ``ParticipantInformationStatus`` link → 204."""
        await self.call("PUT", self.local(inv.links["ParticipantInformationStatus"]), ACCEPT, 204)

    async def decline(self, inv: Invitation) -> None:
        """R12 DELETE of the invitation's ``ParticipantInformation`` link (own address) → 204."""
        await self.call("DELETE", self.local(inv.links["ParticipantInformation"]), None, 204)

    async def leave(self, group: Group) -> None:
        """R10 DELETE of one's own group session → 204."""
        await self.call("DELETE", self.local(group.url), None, 204)

    async def read_group(self, group: Group) -> GroupChatSessionInformation:
        """R10 GET, validated; its resourceURL is the group session URL."""
        doc = await self.call("GET", self.local(group.url))
        info = parse_document(doc, GroupChatSessionInformation)
        assert info.resource_url == group.url, (info.resource_url, group.url)
        return info

    async def participants(self, group: Group) -> dict[str, str | None]:
        """R11 GET: ``{address: status}``."""
        doc = await self.call("GET", self.local(group.url) + "/participants")
        plist = parse_document(doc, ParticipantList)
        return {p.address: p.status.value if p.status else None for p in plist.participant}

    async def own_status(self, group: Group, status: str) -> GroupChatSessionInformation:
        """Wait until the group session's own ``status`` is ``status`` (R10 GET)."""

        async def probe() -> tuple[bool, Any]:
            info = await self.read_group(group)
            now = info.status.value if info.status else None
            return now == status, info if now == status else now

        result: GroupChatSessionInformation = await self.until(
            probe, f"{group.user} on {group.session_id}: status {status}"
        )
        return result

    async def add(self, group: Group, address: str, name: str | None = None) -> str:
        """R11 POST ``participantInformation`` → 201 + ``resourceReference``; its URL."""
        person: Json = {"address": address}
        if name is not None:
            person["name"] = name
        ref, location = await self.created(
            self.local(group.url) + "/participants",
            {"participantInformation": person},
            ResourceReference,
        )
        assert ref.resource_url == location
        return ref.resource_url

    async def send(self, path_or_url: str, text: str, reports: Sequence[str] = ()) -> str:
        """R6/R14 POST ``chatMessage`` → 201 + resourceReference (…/messages/{id}/status)."""
        session = self.local(path_or_url) if path_or_url.startswith("http") else path_or_url
        message: Json = {"text": text}
        if reports:
            message["reportRequest"] = list(reports)
        ref, location = await self.created(
            session + "/messages", {"chatMessage": message}, ResourceReference
        )
        assert ref.resource_url == location
        head, sep, tail = ref.resource_url.rpartition("/messages/")
        assert sep and tail.endswith("/status") and self.local(head) == session, ref.resource_url
        return tail.removesuffix("/status")

    async def composing(self, group: Group, state: str = "active") -> None:
        """R14 POST ``isComposing`` → 204."""
        body = {"isComposing": {"state": state, "refresh": 60}}
        await self.call("POST", self.local(group.url) + "/messages", body, 204)

    async def message_status(self, session_url: str, message_id: str) -> str:
        """R7/R15 GET of a sent message's status."""
        doc = await self.call("GET", f"{self.local(session_url)}/messages/{message_id}/status")
        return parse_document(doc, MessageStatusReport).status.value

    async def report(self, session_url: str, message_id: str, status: str) -> None:
        """R7/R15 PUT a Delivered/Displayed report for a received message → 204."""
        body = {"messageStatusReport": {"status": status}}
        await self.call("PUT", f"{self.local(session_url)}/messages/{message_id}/status", body, 204)

    async def received_message(
        self, user: str, session_id: str, message_id: str, sender: str
    ) -> Json:
        """``user``'s chatMessageNotification of ``message_id`` on its session, from ``sender``."""
        note = await self.note(
            user,
            "chatMessageNotification",
            lambda n: n.get("messageId") == message_id,
            f"of message {message_id}",
        )
        assert note["sessionId"] == session_id, (note, session_id)
        assert note["senderAddress"] == sender, (note, sender)
        return note


def group_serve_env(tmp_path: Path, **settings: str) -> tuple[dict[str, str], int]:
    """A hermetic embedded-default environment (no outbound proxy) and its HTTP port.

    Short notification back-off and invitation timers, so every bounded wait of a test has
    room; ``settings`` override. The bridge subprocess imports from this checkout.
    """
    base = free_port_block(size=4)
    env = serve_env(
        tmp_path / "bridge.db",
        http_port=base,
        sip_port=base + 1,
        **{
            "CHAT_BRIDGE_NOTIFICATION_BACKOFF_INITIAL": "0.1",
            "CHAT_BRIDGE_NOTIFICATION_BACKOFF_MAX": "0.3",
            "CHAT_BRIDGE_NOTIFICATION_HTTP_TIMEOUT": "2",
            "CHAT_BRIDGE_CHAT_INVITE_TIMEOUT": "8",
            "CHAT_BRIDGE_LOG_LEVEL": "INFO",
            **settings,
        },
    )
    return tree_env(env), base


@asynccontextmanager
async def group_bridge(
    tmp_path: Path, receiver: Receiver, *, timeout: float = 10.0, **settings: str
) -> AsyncIterator[GroupApi]:
    """A started ``chat-bridge serve`` on the embedded default and its :class:`GroupApi`."""
    env, port = group_serve_env(tmp_path, **settings)
    assert "CHAT_BRIDGE_SIP_OUTBOUND_PROXY" not in env
    serve = ServeProcess(env, tmp_path / "bridge.log", port)
    api = GroupApi(serve, receiver, timeout=timeout)
    try:
        await serve.start()
        yield api
    finally:
        await api.close()
        serve.stop()
