"""One live conference of the focus: its members, their SIP/MSRP legs, its event package
and its end (docs/group-chat.md "Wire contract", items 1-9; RFC 4579, RFC 4575, RFC 5366).

The Conference owns its member table (``bridge.focus.members``), one ``Leg`` per member
(the INVITE dialog and the MSRP session), a ``ConferenceNotifier`` and a ``Relay``; the
dial-out of a member and the MSRP bind live in ``bridge.focus.dialout``, which calls back
``apply``, ``hook``, ``handlers``, ``on_msrp`` and ``spawn``.
Every status change goes through ``apply``: the member's machine moves, the store gets the new
row, subscribers get a partial NOTIFY, and the end rule is checked (item 9: no member
connected and none being invited).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine

from bridge.focus import dialout, wire
from bridge.focus.dialout import BOOTED, GONE, FocusContext, Leg, dialog_record
from bridge.focus.members import Member, MemberEvent, MemberStatus
from bridge.focus.notifier import ConferenceNotifier
from bridge.focus.relay import Relay, route
from bridge.focus.store import ConferenceRecord, MemberRecord
from sip import rcs
from sip.callback import Bound
from sip.conference import ConferenceDescription, ConferenceState
from sip.conference import User as ConfUser
from sip.errors import CodecError
from sip.message import Request
from sip.msrp import MessageReceived, MSRPSession
from sip.subscription import ServerSubscription
from sip.usage import Handler, IncomingRequest, InviteSession

log = logging.getLogger(__name__)

BYE_GRACE = 2.0


class Conference:
    """One conference URI and everything that lives under it."""

    def __init__(
        self,
        ctx: FocusContext,
        *,
        uri: str,
        contact: str,
        ids: rcs.ChatIds,
        subject: str | None,
        on_end: Callable[[Conference], None],
    ) -> None:
        self.ctx = ctx
        self.uri = uri
        self.contact = contact
        self.ids = ids
        self.subject = subject
        self.legs: dict[str, Leg] = {}
        self.creator: str | None = None
        self.ended = False
        self.notifier = ConferenceNotifier(uri, self._snapshot)
        self.relay = Relay(uri)
        self._on_end = on_end
        self._tasks: set[asyncio.Task[None]] = set()
        self._writes = asyncio.Lock()
        self._dirty: dict[str, MemberRecord] = {}
        self._flush_due = False

    # -- members ----------------------------------------------------------------------------

    def member(self, uri: str) -> Member | None:
        """The member with this address (any spelling ``normalize_user`` folds), or None."""
        leg = self.legs.get(wire.key_of(uri))
        return None if leg is None else leg.member

    def _snapshot(self) -> tuple[ConferenceDescription, ConferenceState, tuple[ConfUser, ...]]:
        connected = sum(
            1 for leg in self.legs.values() if leg.member.status is MemberStatus.CONNECTED
        )
        return (
            ConferenceDescription(subject=self.subject, maximum_user_count=self.ctx.max_size),
            ConferenceState(user_count=connected, active=True),
            tuple(leg.member.user() for leg in self.legs.values()),
        )

    def apply(self, leg: Leg, event: MemberEvent, *, cause: int | None = None) -> None:
        """The one place a member's status changes; then persist, notify, maybe end."""
        member = leg.member
        member.handle(event, cause=cause)
        if member.status is MemberStatus.CONNECTED and leg.session is not None:
            member.dialog = leg.session.dialog
        elif member.status is not MemberStatus.CONNECTED:
            member.dialog = None
        self._persist_member(member)
        self.notifier.changed([member.user()])
        self._check_end()

    def _check_end(self) -> None:
        if self.ended or any(leg.member.active for leg in self.legs.values()):
            return
        self.spawn(self.end("no member left"))

    # -- create (item 1) --------------------------------------------------------------------

    async def start(
        self,
        creator: Member,
        session: InviteSession,
        msrp: MSRPSession,
        active: bool,
        remote_path: str,
        invitees: list[tuple[str, str | None]],
        fingerprint: str | None = None,
    ) -> None:
        """Takes the creator's accepted INVITE, stores the conference, dials the invitees
        (``fingerprint``: the creator's SDP a=fingerprint, checked on an msrps path)."""
        self.creator = creator.key
        leg = Leg(creator, session=session, msrp=msrp)
        self.legs[creator.key] = leg
        self.hook(leg)
        await self._write(
            self.ctx.store.save_conference(
                ConferenceRecord(
                    uri=self.uri,
                    creator=creator.uri,
                    contribution_id=self.ids.contribution_id,
                    conversation_id=self.ids.conversation_id,
                    subject=self.subject,
                    created_at=self.ctx.clock(),
                )
            )
        )
        for uri, name in invitees:
            self.invite(uri, name, referred_by=creator.uri, check=False)
        self.apply(leg, MemberEvent.CONNECT)
        self.spawn(dialout.bind(self, leg, active, remote_path, fingerprint))

    # -- dial-out (items 2 and 6) -----------------------------------------------------------

    def invite(
        self, uri: str, display_name: str | None, *, referred_by: str, check: bool = True
    ) -> bool:
        """Dials ``uri`` out unless it is connected or being invited; False when full."""
        key = wire.key_of(uri)
        leg = self.legs.get(key)
        if leg is not None and leg.member.active:
            return True
        if check and sum(1 for g in self.legs.values() if g.member.active) >= self.ctx.max_size:
            return False
        if leg is None:
            leg = Leg(Member(uri=uri, key=key, display_name=display_name, referred_by=referred_by))
            self.legs[key] = leg
            self._persist_member(leg.member)
            self.notifier.changed([leg.member.user()])
        else:
            leg.member.referred_by = referred_by
            leg.session = leg.msrp = leg.call = None
            self.apply(leg, MemberEvent.INVITE)
        self.spawn(dialout.dial_out(self, leg))
        return True

    # -- in-dialog requests (items 3, 6, 7, 8) ----------------------------------------------

    def handlers(self, leg: Leg) -> dict[str, Handler]:
        """The in-dialog request handlers of a member's INVITE dialog (REFER, SUBSCRIBE)."""
        return {
            "REFER": Bound(self._on_refer, leg),
            "SUBSCRIBE": Bound(self._on_dialog_subscribe, leg),
        }

    def hook(self, leg: Leg) -> None:
        """Puts the handlers and the end callback on the leg's (now established) dialog."""
        assert leg.session is not None
        for method, handler in self.handlers(leg).items():
            leg.session.on_request(method, handler)
        leg.session.on_ended = Bound(self._on_ended, leg)

    def _on_ended(self, leg: Leg, session: InviteSession) -> None:
        if leg.session is not session or leg.member.status is not MemberStatus.CONNECTED:
            return
        self.spawn(leg.close_msrp())
        self.apply(leg, MemberEvent.LEAVE)

    def _on_refer(self, leg: Leg, incoming: IncomingRequest) -> None:
        status = self.refer(leg.member, incoming.request)
        if status != 202:
            incoming.respond(status)
            return
        if (incoming.request.get("Refer-Sub") or "").strip().lower() == "false":
            incoming.respond(202, headers=[("Refer-Sub", "false")])
        else:
            incoming.respond(202)  # RFC 3515 §2.4.5: the focus sends no sipfrag NOTIFY yet

    def refer(self, referrer: Member, request: Request) -> int:
        """Adds (``Refer-To: <uri>``) or removes (``;method=BYE``) members (docs items 6, 7);
        ``Refer-To: <cid:…>`` names a resource list of several (RFC 5368). The SIP status:
        400 unreadable, 403 (referrer not connected, a removal not by the chairman, or the
        additions would pass the size limit: then nothing changes), 404 (the one member to
        remove is not in the conference), else 202."""
        try:
            values = wire.refer_targets(
                request.get("Refer-To") or "",
                request.body,
                request.get("Content-Type"),
                request.get("Content-ID"),
            )
            targets = [wire.parse_refer_to(value) for value in values]
        except (CodecError, ValueError):
            return 400
        if not targets:
            return 400
        if referrer.status is not MemberStatus.CONNECTED:
            return 403
        removals = [target for target, is_bye in targets if is_bye]
        if removals and referrer.key != self.creator:
            return 403
        boot = [g for g in map(self.legs.get, map(wire.key_of, removals)) if g and g.member.active]
        if len(targets) == 1 and removals and not boot:
            return 404
        adds: dict[str, str] = {}
        for target, is_bye in targets:
            leg = self.legs.get(wire.key_of(target))
            if not is_bye and (leg is None or not leg.member.active):
                adds.setdefault(wire.key_of(target), target)
        active = sum(1 for g in self.legs.values() if g.member.active)
        if active - len(boot) + len(adds) > self.ctx.max_size:
            return 403
        for target in adds.values():  # before the removals: they may leave nobody active
            self.invite(target, None, referred_by=referrer.uri, check=False)
        for leg in boot:
            self._boot(leg)
        return 202

    def _boot(self, leg: Leg) -> None:
        session, call = leg.session, leg.call
        was_connected = leg.member.status is MemberStatus.CONNECTED
        self.apply(leg, MemberEvent.BOOT)
        if was_connected and session is not None:
            self.spawn(session.bye([("Reason", BOOTED)]))
        elif call is not None:
            self.spawn(call.cancel())
        self.spawn(leg.close_msrp())

    def _on_dialog_subscribe(self, leg: Leg, incoming: IncomingRequest) -> None:
        """SUBSCRIBE inside the member's INVITE dialog (RFC 6665 §4.5.2, docs item 3)."""
        assert leg.session is not None
        req = incoming.request
        if (req.get("Event") or "").split(";")[0].strip().lower() != "conference":
            incoming.respond(489)
            return
        value = req.get("Expires")
        expires = int(value) if value and value.isdigit() else 3600
        dialog = leg.session.dialog
        known = self.notifier.find(dialog.id)
        incoming.respond(200, headers=[("Expires", str(min(expires, 3600)))])
        if known is not None:
            known.receive_subscribe(expires)
            return
        if expires == 0 or self.ended:
            return
        sub = ServerSubscription(self.ctx.sip, dialog, "conference", min(expires, 3600), True)
        self.notifier.add(sub)

    def subscribe(self, sub: ServerSubscription) -> None:
        """Takes an out-of-dialog subscription the focus accepted (docs item 3)."""
        self.notifier.add(sub)

    # -- messages (items 4, 5) --------------------------------------------------------------

    def on_msrp(self, leg: Leg, event: object) -> None:
        """A member's MSRP event: CPIM messages are relayed (items 4, 5), the rest dropped."""
        if not isinstance(event, MessageReceived) or self.ended:
            return
        if event.content_type.split(";", 1)[0].strip().lower() != "message/cpim":
            log.info("x %s sent %s: not relayed", leg.member.key, event.content_type)
            return
        try:
            routed = route(event.body, leg.member.uri)
        except CodecError as exc:
            log.info("x unrelayable message from %s: %s", leg.member.key, exc)
            return
        if routed.only is not None:
            target = self.legs.get(routed.only)
            targets = [target] if target is not None and target is not leg else []
        else:
            targets = [g for g in self.legs.values() if g is not leg]
        sessions = [
            g.msrp
            for g in targets
            if g.msrp is not None and g.member.status is MemberStatus.CONNECTED
        ]
        self.spawn(self.relay.fan_out(routed.body, sessions))

    # -- end (item 9) -----------------------------------------------------------------------

    async def end(self, why: str) -> None:
        """BYEs whoever is left (cause 410), ends subscriptions, forgets the conference."""
        if self.ended:
            return
        self.ended = True
        log.info("- conference %s ended (%s)", self.uri, why)
        byes: list[Coroutine[object, object, object]] = []
        for leg in self.legs.values():
            member = leg.member
            if member.status is MemberStatus.CONNECTED and leg.session is not None:
                byes.append(leg.session.bye([("Reason", GONE)]))
            elif member.status is MemberStatus.DIALING_OUT and leg.call is not None:
                byes.append(leg.call.cancel())
            if member.active:
                member.handle(MemberEvent.END)
                member.dialog = None
                self._persist_member(member)
            if leg.msrp is not None:
                byes.append(leg.msrp.close())
        if byes:
            await asyncio.wait([asyncio.ensure_future(b) for b in byes], timeout=BYE_GRACE)
        await self.notifier.terminate_all()
        await self._write(self.ctx.store.end_conference(self.uri, self.ctx.clock()))
        self._on_end(self)
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()

    # -- plumbing ---------------------------------------------------------------------------

    def _persist_member(self, member: Member) -> None:
        """Queue the member's row; the changes of a burst (a group of 100 joining) share
        one transaction, written in order behind the conference's earlier writes."""
        self._dirty[member.uri] = MemberRecord(
            uri=member.uri,
            status=member.status.value,
            display_name=member.display_name,
            chairman=member.chairman,
            cause=member.cause,
            dialog=None if member.dialog is None else dialog_record(member.dialog),
        )
        if not self._flush_due:
            self._flush_due = True
            self.spawn(self._write(self._flush()))

    async def _flush(self) -> None:
        self._flush_due = False
        batch, self._dirty = list(self._dirty.values()), {}
        if batch:
            await self.ctx.store.save_members(self.uri, batch)

    async def _write(self, op: Coroutine[object, object, None]) -> None:
        async with self._writes:  # one at a time, in order
            try:
                await op
            except Exception:
                log.exception("x focus store write for %s failed", self.uri)

    def spawn(self, coro: Coroutine[object, object, object]) -> None:
        """Runs ``coro`` as this conference's background work (``drain`` waits, ``end`` cancels)."""

        async def run() -> None:
            await coro

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:  # a set keeps its grown table after discards: start small again
            self._tasks = set()

    async def drain(self) -> None:
        """Waits for the background work of this conference (tests, shutdown)."""
        while self._tasks - {asyncio.current_task()}:
            await asyncio.gather(*(self._tasks - {asyncio.current_task()}), return_exceptions=True)
