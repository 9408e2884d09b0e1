"""A group-chat participant built from sip/ only, to drive the focus in tests
(docs/group-chat.md "Wire contract": create, answer dial-outs, messages, SUBSCRIBE, REFER, BYE).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from datetime import UTC, datetime

from sip import conference, cpim, multipart, rcs, resource_lists, sdp
from sip.conference_view import ConferenceView, ParticipantStatus, participant_status
from sip.message import Request, Response
from sip.msrp import MessageReceived, MSRPSession, MSRPStack
from sip.stack import SipStack
from sip.subscription import ClientSubscription
from sip.usage import IncomingInvite, InviteSession

PROFILE = rcs.Profile.CPM
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _split(body: bytes, content_type: str | None) -> sdp.MSRPMedia:
    ctype = multipart.parse_content_type(content_type or sdp.CONTENT_TYPE)
    if ctype.media_type == multipart.CONTENT_TYPE:
        part = multipart.parse(body, content_type or "").find(sdp.CONTENT_TYPE)
        assert part is not None
        body = part.body
    return sdp.msrp_media(sdp.parse(body))


async def start_stack(*, port: int = 0, outbound_proxy: str | None = None) -> SipStack:
    """A started SipStack on 127.0.0.1 (UDP+TCP, one port); retried when the TCP bind on
    the port UDP got loses a race with another socket (port 0). ``outbound_proxy``: send
    every request there (a Kamailio test bed, tests/testbed)."""
    for attempt in range(5):
        stack = SipStack(
            port=port, outbound_proxy=outbound_proxy, contact_params=rcs.feature_tags(PROFILE)
        )
        try:
            await stack.start()
        except OSError:
            if attempt == 4:
                raise
            continue
        return stack
    raise AssertionError("unreachable")


class Participant:
    """One user with its own SIP and MSRP stacks on 127.0.0.1."""

    def __init__(self, name: str, *, outbound_proxy: str | None = None) -> None:
        self.name = name
        self.outbound_proxy = outbound_proxy
        self.sip = SipStack(port=0, contact_params=rcs.feature_tags(PROFILE))
        self.msrp: MSRPStack | None = None
        self.uri = ""
        self.policy = "accept"  # "ring" (180, never answers), or a final status (603, 486)
        self.cancelled: list[Request] = []
        self.invites: list[Request] = []
        self.session: InviteSession | None = None
        self.media: MSRPSession | None = None
        self.conference_target = ""
        self.received: list[MessageReceived] = []
        self.notifies: list[conference.ConferenceInfo] = []
        self.view = ConferenceView(normalize=rcs.normalize_user)
        self.history: list[dict[str, ParticipantStatus | None]] = []
        """``statuses()`` after each NOTIFY with a body, in arrival order."""
        self.subscription: ClientSubscription | None = None
        self.byes: list[str] = []
        self.bye_reasons: list[str] = []
        self._changed = asyncio.Event()

    async def start(self) -> Participant:
        self.sip = await start_stack(outbound_proxy=self.outbound_proxy)
        self.msrp = MSRPStack("127.0.0.1", 0)
        await self.msrp.start()
        self.uri = f"sip:{self.name}@127.0.0.1:{self.sip.port}"
        self.sip.on_request("INVITE", self._on_invite)
        return self

    async def stop(self) -> None:
        if self.media is not None:
            await self.media.close()
        assert self.msrp is not None
        await self.msrp.close()
        await self.sip.stop()

    # -- waiting ----------------------------------------------------------------------------

    def _poke(self) -> None:
        self._changed.set()

    async def wait(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        async def loop() -> None:
            while not pred():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)

    def statuses(self) -> dict[str, ParticipantStatus | None]:
        return {key: participant_status(user) for key, user in self.view.users.items()}

    # -- media ------------------------------------------------------------------------------

    async def _media(self) -> MSRPSession:
        assert self.msrp is not None
        session = await self.msrp.create_session(accept_types=("message/cpim",))
        session.on_event = self._on_msrp
        return session

    def _on_msrp(self, event: object) -> None:
        if isinstance(event, MessageReceived):
            self.received.append(event)
            self._poke()

    def _sdp(self, session: MSRPSession, offer: sdp.SessionDescription | None) -> bytes:
        assert self.msrp is not None
        kw = dict(
            address="127.0.0.1",
            port=self.msrp.port,
            path=(session.path_attribute,),
            accept_types=("message/cpim",),
            accept_wrapped_types=("text/plain", "message/imdn+xml"),
            session_id=str(secrets.randbelow(10**9)),
        )
        if offer is None:
            return sdp.serialize(sdp.msrp_offer(**kw))  # type: ignore[arg-type]
        return sdp.serialize(sdp.msrp_answer(offer, **kw))  # type: ignore[arg-type]

    # -- create (item 1) --------------------------------------------------------------------

    async def create(
        self,
        factory: str,
        invitees: list[str],
        subject: str = "Lunch",
        *,
        require: bool | str = True,
        with_list: bool = True,
    ) -> Response:
        self.media = await self._media()
        parts = [multipart.Part.build(sdp.CONTENT_TYPE, self._sdp(self.media, None))]
        if with_list:
            entries = tuple(
                resource_lists.Entry(u, copy_control=resource_lists.CopyControl.TO)
                for u in invitees
            )
            doc = resource_lists.ResourceLists((resource_lists.ResourceList(entries),))
            parts.append(
                multipart.Part.build(
                    resource_lists.CONTENT_TYPE,
                    resource_lists.serialize(doc),
                    disposition="recipient-list",
                )
            )
        body = multipart.Multipart("b-" + secrets.token_hex(4), tuple(parts))
        ids = rcs.new_chat_ids(PROFILE)
        headers = [*rcs.session_headers(PROFILE, ids), ("Subject", subject)]
        if require:
            tags = "recipient-list-invite" if require is True else str(require)
            headers.append(("Require", tags))
        call = self.sip.invite(
            factory,
            sender=self.uri,
            body=multipart.serialize(body),
            content_type=body.content_type,
            headers=headers,
        )
        response = await call.response()
        if response.is_success:
            assert call.session is not None
            self.session = call.session
            self._watch(self.session)
            self.conference_target = str(response.contacts[0].uri)
            media = _split(response.body, response.get("Content-Type"))
            active = media.setup is not sdp.Setup.ACTIVE
            await self.media.start(" ".join(media.path), active)
        return response

    # -- dial-outs (item 2) -----------------------------------------------------------------

    async def _on_invite(self, incoming: IncomingInvite) -> None:
        self.invites.append(incoming.request)
        self._poke()
        if self.policy == "ring":
            incoming.ring()
            await incoming.cancelled.wait()  # the transaction layer answered 487
            self.cancelled.append(incoming.request)
            self._poke()
            return
        if self.policy != "accept":
            incoming.reject(int(self.policy))
            return
        offer_media = _split(incoming.request.body, incoming.request.get("Content-Type"))
        ctype = incoming.request.get("Content-Type") or ""
        body = incoming.request.body
        if ctype.startswith("multipart"):
            part = multipart.parse(body, ctype).find(sdp.CONTENT_TYPE)
            assert part is not None
            body = part.body
        self.media = await self._media()
        answer = self._sdp(self.media, sdp.parse(body))
        self.session = await incoming.accept(answer)
        self._watch(self.session)
        self.conference_target = str(incoming.request.contacts[0].uri)
        active = sdp.answer_setup(offer_media.setup) is sdp.Setup.ACTIVE
        await self.media.start(" ".join(offer_media.path), active)
        self._poke()

    def _watch(self, session: InviteSession) -> None:
        """Records the Reason of a BYE from the focus (the session answers it itself)."""
        session.on_ended = self._ended

    def _ended(self, session: InviteSession) -> None:
        if session.end_reason == "remote BYE":
            self.bye_reasons.append(session.bye_reason or "")
        self.byes.append(session.end_reason)
        self._poke()

    # -- requests ---------------------------------------------------------------------------

    async def send(self, text: str, mid: str | None = None, *, sender: str | None = None) -> None:
        assert self.media is not None
        message = cpim.build_chat_message(
            sender=cpim.NameAddr(sender or self.uri),
            recipient=cpim.NameAddr(self.conference_target),
            message_id=mid or secrets.token_hex(6),
            timestamp=NOW,
            body=text.encode(),
        )
        await self.media.send(cpim.CONTENT_TYPE, cpim.serialize(message))

    async def send_raw(self, body: bytes) -> None:
        assert self.media is not None
        await self.media.send(cpim.CONTENT_TYPE, body)

    async def subscribe(self, *, in_dialog: bool = False) -> None:
        if in_dialog:
            assert self.session is not None
            self.session.on_request("NOTIFY", self._on_dialog_notify)
            response = await self.session.request(
                "SUBSCRIBE",
                [("Event", "conference"), ("Expires", "600"), ("Accept", conference.CONTENT_TYPE)],
            )
            assert response.status == 200, response.status
            return
        self.subscription = await self.sip.subscribe(
            self.conference_target,
            "conference",
            sender=self.uri,
            accept=conference.CONTENT_TYPE,
            on_notify=self._on_notify,
        )

    def _on_dialog_notify(self, incoming: object) -> None:
        request = incoming.request  # type: ignore[attr-defined]
        incoming.respond(200)  # type: ignore[attr-defined]
        self._on_notify(request)

    def _on_notify(self, request: Request) -> None:
        if request.body:
            doc = conference.parse(request.body)
            self.notifies.append(doc)
            self.view, update = self.view.apply(doc)
            assert update.applied, (doc.version, update)
            self.history.append(self.statuses())
        self._poke()

    async def refer(self, target: str, *, bye: bool = False) -> Response:
        assert self.session is not None
        refer_to = f"<{target};method=BYE>" if bye else target
        return await self.session.refer(refer_to)

    async def refer_list(self, targets: list[str], *, in_dialog: bool = True) -> Response:
        """One REFER naming several members (RFC 5368): ``Refer-To: <cid:…>`` and a
        resource-lists body with that Content-ID; ``;method=BYE`` in a target removes it."""
        cid = f"list-{secrets.token_hex(4)}@127.0.0.1"
        entries = tuple(resource_lists.Entry(t) for t in targets)
        doc = resource_lists.ResourceLists((resource_lists.ResourceList(entries),))
        headers = [
            ("Refer-To", f"<cid:{cid}>"),
            ("Referred-By", f"<{self.uri}>"),
            ("Refer-Sub", "false"),
            ("Require", "multiple-refer, norefersub"),
            ("Content-Disposition", "recipient-list"),
            ("Content-ID", f"<{cid}>"),
        ]
        body = resource_lists.serialize(doc)
        if in_dialog:
            assert self.session is not None
            return await self.session.request("REFER", headers, body, resource_lists.CONTENT_TYPE)
        return await self.sip.send_request(
            "REFER",
            self.conference_target,
            sender=self.uri,
            headers=headers,
            body=body,
            content_type=resource_lists.CONTENT_TYPE,
        )

    async def leave(self) -> None:
        assert self.session is not None
        await self.session.bye([("Reason", 'SIP;cause=200;text="Call completed"')])
