"""One conference member's status: an Enum, a (state, event) table and one method that
changes it; plus the conference-info ``<user>`` each status is reported as (RFC 4575 §5.6).

Statuses and their conference-info form follow docs/group-chat.md ("Wire contract", item 3):

=============  ===========================================================================
DIALING_OUT    ``dialing-out`` (the focus is inviting the user)
CONNECTED      ``connected``
DEPARTED       ``disconnected`` + ``departed`` (the user left with BYE)
BOOTED         ``disconnected`` + ``booted`` (removed by the chairman, RFC 4579 REFER BYE)
DECLINED       ``disconnected`` + ``failed`` + reason ``SIP;cause=603``
FAILED         ``disconnected`` + ``failed`` + reason ``SIP;cause=<final status>``
=============  ===========================================================================
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

from sip.conference import (
    DisconnectionMethod,
    Endpoint,
    EndpointStatus,
    Execution,
    JoiningMethod,
    User,
)
from sip.dialog import Dialog

log = logging.getLogger(__name__)

CHAIRMAN = "chairman"
"""The role of the conference creator (RFC 4575 §5.6.2, docs/group-chat.md item 3)."""


class MemberStatus(enum.Enum):
    """Where one member stands in the conference."""

    DIALING_OUT = "dialing-out"
    CONNECTED = "connected"
    DEPARTED = "departed"
    BOOTED = "booted"
    DECLINED = "declined"
    FAILED = "failed"


class MemberEvent(enum.Enum):
    """What can happen to a member."""

    INVITE = "invite"  # the focus dials out (again)
    CONNECT = "connect"  # 2xx and MSRP bound
    DECLINE = "decline"  # 603 to the dial-out
    FAIL = "fail"  # any other final failure, or the media failed
    LEAVE = "leave"  # the member's BYE
    BOOT = "boot"  # removed by the chairman
    END = "end"  # the conference ends under the member


class IllegalTransition(Exception):
    """An event that the member's current status does not allow (a bug, never ignored)."""


_S = MemberStatus
_E = MemberEvent
_GONE = (_S.DEPARTED, _S.BOOTED, _S.DECLINED, _S.FAILED)

TRANSITIONS: dict[tuple[MemberStatus, MemberEvent], MemberStatus] = {
    (_S.DIALING_OUT, _E.CONNECT): _S.CONNECTED,
    (_S.DIALING_OUT, _E.DECLINE): _S.DECLINED,
    (_S.DIALING_OUT, _E.FAIL): _S.FAILED,
    (_S.DIALING_OUT, _E.BOOT): _S.BOOTED,
    (_S.DIALING_OUT, _E.END): _S.FAILED,
    (_S.CONNECTED, _E.LEAVE): _S.DEPARTED,
    (_S.CONNECTED, _E.BOOT): _S.BOOTED,
    (_S.CONNECTED, _E.FAIL): _S.FAILED,
    (_S.CONNECTED, _E.END): _S.DEPARTED,
    **{(gone, _E.INVITE): _S.DIALING_OUT for gone in _GONE},
}
"""Every legal (status, event) -> next status; anything else raises IllegalTransition."""

ACTIVE = frozenset({_S.DIALING_OUT, _S.CONNECTED})
"""Statuses that keep a conference alive (docs/group-chat.md item 9)."""


@dataclass(slots=True)
class Member:
    """One user of a conference: address, status and (once up) its INVITE dialog."""

    uri: str
    """The address the focus dials (or that dialled in), as given."""
    key: str
    """The comparison key (``sip.rcs.normalize_user``)."""
    display_name: str | None = None
    status: MemberStatus = MemberStatus.DIALING_OUT
    chairman: bool = False
    cause: int | None = None
    """The SIP status of a failed dial-out (603 for a decline)."""
    referred_by: str | None = None
    dialog: Dialog | None = field(default=None, repr=False)

    def handle(self, event: MemberEvent, *, cause: int | None = None) -> MemberStatus:
        """Applies ``event`` per TRANSITIONS (the only place the status changes); logs it."""
        new = TRANSITIONS.get((self.status, event))
        if new is None:
            raise IllegalTransition(f"{self.key}: {event.value} in {self.status.value}")
        log.info("- %s %s -> %s", self.key, self.status.value, new.value)
        self.status = new
        if new is MemberStatus.DECLINED:
            self.cause = 603
        elif new is MemberStatus.FAILED:
            self.cause = cause or 500
        elif new is MemberStatus.DIALING_OUT:
            self.cause = None
        return new

    @property
    def active(self) -> bool:
        """True while connected or being invited."""
        return self.status in ACTIVE

    def user(self) -> User:
        """This member as a conference-info ``<user>`` (RFC 4575 §5.6, §5.7)."""
        return User(
            entity=self.uri,
            display_text=self.display_name,
            roles=(CHAIRMAN,) if self.chairman else (),
            endpoints=(self._endpoint(),),
        )

    def _endpoint(self) -> Endpoint:
        status = self.status
        if status is MemberStatus.DIALING_OUT:
            return Endpoint(entity=self.uri, status=EndpointStatus.DIALING_OUT)
        if status is MemberStatus.CONNECTED:
            joining = JoiningMethod.DIALED_IN if self.chairman else JoiningMethod.DIALED_OUT
            return Endpoint(
                entity=self.uri, status=EndpointStatus.CONNECTED, joining_method=joining
            )
        if status is MemberStatus.DEPARTED:
            method, info = DisconnectionMethod.DEPARTED, None
        elif status is MemberStatus.BOOTED:
            method, info = DisconnectionMethod.BOOTED, None
        else:
            method = DisconnectionMethod.FAILED
            info = Execution(reason=f"SIP;cause={self.cause or 500}")
        return Endpoint(
            entity=self.uri,
            status=EndpointStatus.DISCONNECTED,
            disconnection_method=method,
            disconnection_info=info,
        )
