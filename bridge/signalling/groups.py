"""Group legs of the signalling adapter: the bridge as a participant of a group chat.

Public API (held by the adapter as ``SipSignalling.groups``; the port methods
``start_group``, ``invite_participants``, ``remove_participant`` and
``leave_group`` call it)::

    groups = GroupLegs(adapter)
    await groups.start(leg, user, factory, invitees, subject=)   # INVITE to the factory
    groups.invitation(invite, offer, user) -> (Leg, IncomingGroupInvitation)
    await groups.invite(leg, invitees) / groups.remove(leg, uri) / groups.leave(leg)

Wire behaviour: docs/group-chat.md "Wire contract" (docs/protocol-mapping.md
N2, N12, N13). A group leg is an ordinary :class:`~bridge.signalling.legs.Leg` with
``group`` set: the INVITE, the 200/ACK, the MSRP bind and the per-leg event
queue are the 1-1 code (``bridge.signalling.sessions``); what differs is here:

* create: ``Require: recipient-list-invite`` and a ``recipient-list`` part
  (RFC 5366 §4); the 200's Contact (``;isfocus``) is the conference URI, which
  becomes the leg's peer (CPIM To of what we send) and ``SessionAccepted.conference``;
* a focus INVITE (Contact ``isfocus``) is an :class:`IncomingGroupInvitation`:
  inviter = Referred-By (RFC 3892), members from a resource-lists part (status
  Invited), the user left out;
* once up, the leg's :class:`~bridge.signalling.conference.ConferenceWatch`
  subscribes to the conference and reports ParticipantsChanged;
* add / remove: one in-dialog REFER per member (RFC 3515, ``Refer-Sub: false``
  RFC 4488; ``method=BYE`` in the Refer-To to remove, RFC 4579 §5.5);
* leave: BYE with ``Reason: SIP;cause=200;text="Call completed"`` (RFC 3326).
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import TYPE_CHECKING

from bridge.chat.model import Invitee, LegId, Participant, ParticipantStatus
from bridge.chat.ports import (
    IncomingGroupInvitation,
    ParticipantsChanged,
    SignallingError,
)
from bridge.ids import UserUri
from bridge.signalling import payload
from bridge.signalling.conference import ConferenceWatch
from bridge.signalling.legs import Leg, LegState
from sip import rcs, resource_lists
from sip.callback import Bound
from sip.errors import CodecError, ProtocolError
from sip.headers import NameAddr
from sip.uri import SipURI
from sip.usage import IncomingInvite

if TYPE_CHECKING:
    from bridge.signalling.sessions import SessionLegs

log = logging.getLogger(__name__)

LEAVE_REASON = 'SIP;cause=200;text="Call completed"'
"""The Reason of a member's own BYE (docs/group-chat.md contract 8; RFC 3326)."""
REQUIRE = "recipient-list-invite"
_QUOTED = re.compile(r'^\s*"((?:[^"\\]|\\.)*)"')


def conference_uri(contact: NameAddr) -> str:
    """The conference URI a focus Contact names: its URI without parameters."""
    uri = contact.uri
    if isinstance(uri, SipURI):
        return str(uri.without_params(*(name for name, _ in uri.params.items)))
    return str(uri).split(";", 1)[0]


def display_name(value: str) -> str | None:
    """The display name of a name-addr header value (quoted or a plain token run)."""
    quoted = _QUOTED.match(value)
    if quoted:
        return quoted.group(1).replace('\\"', '"').replace("\\\\", "\\") or None
    head = value.split("<", 1)[0].strip() if "<" in value else ""
    return head or None


def listed_participants(body: bytes | None, user: UserUri) -> tuple[Participant, ...]:
    """The members a focus INVITE lists (RFC 5366 recipient-list-history), user left out."""
    if body is None:
        return ()
    try:
        entries = resource_lists.parse(body).entries()
    except CodecError as exc:
        log.info("x unusable participant list in a focus INVITE: %s", exc)
        return ()
    out: list[Participant] = []
    for entry in entries:
        try:
            address = UserUri(rcs.normalize_user(entry.uri))
        except ValueError:
            continue
        if address != user:
            out.append(Participant(address, ParticipantStatus.INVITED, entry.display_name))
    return tuple(out)


class GroupLegs:
    """The group side of the adapter (composition: it works on the adapter's legs)."""

    def __init__(self, adapter: SessionLegs) -> None:
        self.a = adapter

    def new_leg(self, leg_id: LegId, user: UserUri, peer: UserUri, *, outgoing: bool) -> Leg:
        """A group leg with its (not yet started) conference-event subscription."""
        leg = Leg(leg_id, user, peer, outgoing=outgoing)
        leg.group = True
        leg.watch = ConferenceWatch(
            self.a.sip, user, report=Bound(self._changed, leg), spawn=self.a._spawn
        )
        return leg

    def _changed(self, leg: Leg, participants: tuple[Participant, ...], full: bool) -> None:
        if not leg.ended:
            self.a._post(leg, ParticipantsChanged(leg.id, participants, full))

    # -- create (R10) ---------------------------------------------------------------

    async def start(
        self,
        leg: LegId,
        user: UserUri,
        factory: str,
        invitees: tuple[Invitee, ...],
        subject: str | None,
    ) -> None:
        """INVITE ``factory`` with our MSRP offer and the recipient list of ``invitees``."""
        self.a._check_running()
        if leg in self.a._legs:
            raise SignallingError(f"leg {leg} exists")
        try:
            recipients = payload.recipient_list((i.address, i.name) for i in invitees)
        except CodecError as exc:
            raise SignallingError(str(exc), 400) from exc
        record = self.new_leg(leg, user, UserUri(factory), outgoing=True)
        record.chat_ids = rcs.new_chat_ids(self.a.profile)
        self.a._legs[leg] = record
        self.a._spawn(self.a._run_outgoing(record, subject, None, recipients))

    @staticmethod
    def answered(leg: Leg, contacts: list[NameAddr]) -> bool:
        """Take the conference URI from the focus's 2xx Contact; False when there is none."""
        if not contacts:
            return False
        if not contacts[0].params.has("isfocus"):
            log.warning("x leg %s: the factory's 2xx Contact has no isfocus", leg.id)
        leg.conference = conference_uri(contacts[0])
        leg.peer = UserUri(leg.conference)
        return True

    # -- invited by a focus (N2) ------------------------------------------------------

    def invitation(
        self, invite: IncomingInvite, offer: payload.InviteOffer, user: UserUri
    ) -> tuple[Leg, IncomingGroupInvitation]:
        """The leg and event of a focus INVITE; raises CodecError when it names no focus."""
        request = invite.request
        contacts = request.contacts
        if not contacts:
            raise CodecError("a focus INVITE without Contact")
        conference = conference_uri(contacts[0])
        referred_by = request.get("Referred-By")
        inviter: UserUri | None = None
        if referred_by:
            try:
                inviter = UserUri(rcs.normalize_user(referred_by))
            except ValueError:
                log.info("x focus INVITE %s: unusable Referred-By", request.call_id)
        leg = self.new_leg(
            LegId("in-" + secrets.token_hex(10)), user, UserUri(conference), outgoing=False
        )
        leg.conference = conference
        leg.incoming, leg.offer, leg.remote = invite, offer, offer.media
        leg.chat_ids = rcs.chat_ids_of(
            {
                "contribution-id": request.get("Contribution-ID"),
                "conversation-id": request.get("Conversation-ID"),
            }
        )
        event = IncomingGroupInvitation(
            leg=leg.id,
            user=user,
            conference=conference,
            inviter=inviter,
            inviter_name=display_name(referred_by) if referred_by and inviter else None,
            subject=request.get("Subject"),
            participants=listed_participants(offer.recipients, user),
            ids=leg.dialog_ids(),
        )
        return leg, event

    # -- add, remove, leave (R13-R15, N13) ----------------------------------------------

    async def invite(self, leg: LegId, invitees: tuple[Invitee, ...]) -> None:
        """One in-dialog REFER per invitee; ParticipantsChanged Invited or Failed follows."""
        record = self.a._up(leg)
        for invitee in invitees:
            self.a._spawn(self._refer_add(record, invitee))

    def _refer_headers(self, leg: Leg) -> list[tuple[str, str]]:
        headers = [("Contact", leg.session.dialog.contact)] if leg.session is not None else []
        if leg.chat_ids is not None:
            headers += list(rcs.answer_headers(self.a.profile, leg.chat_ids))
        return headers

    async def _refer_add(self, leg: Leg, invitee: Invitee) -> None:
        assert leg.session is not None
        status, reason = await self._refer(leg, str(invitee.address))
        ok = 200 <= status < 300
        if not ok:
            log.info("x REFER of %s on %s: %d %s", invitee.address, leg.id, status, reason)
        state = ParticipantStatus.INVITED if ok else ParticipantStatus.FAILED
        self._changed(leg, (Participant(invitee.address, state, invitee.name),), False)

    async def _refer(self, leg: Leg, refer_to: str) -> tuple[int, str]:
        assert leg.session is not None
        try:
            response = await leg.session.refer(refer_to, headers=self._refer_headers(leg))
        except ProtocolError as exc:
            return (getattr(exc, "status", 0) or 408), str(exc)
        return response.status, response.reason

    async def remove(self, leg: LegId, participant: UserUri) -> None:
        """REFER ``Refer-To: <participant;method=BYE>``; the focus's NOTIFY tells the rest."""
        record = self.a._up(leg)
        self.a._spawn(self._refer_remove(record, participant))

    async def _refer_remove(self, leg: Leg, participant: UserUri) -> None:
        status, reason = await self._refer(leg, f"<{participant};method=BYE>")
        if not 200 <= status < 300:
            log.warning("x removal of %s refused on %s: %d %s", participant, leg.id, status, reason)
            self._changed(leg, (), False)

    async def leave(self, leg: LegId) -> None:
        """BYE with ``Reason: SIP;cause=200``, un-SUBSCRIBE, close MSRP; no event follows."""
        record = self.a._legs.get(leg)
        if record is None:
            log.info("x leave of unknown leg %s ignored", leg)
            return
        if record.state is LegState.RINGING:
            await self.a.reject_session(leg, 603)
        elif record.state is LegState.INVITING:
            self.a._cancel(record)
        else:
            self.a._spawn(self.a._hang_up(record, (("Reason", LEAVE_REASON),)))
