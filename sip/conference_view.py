"""The participants of a conference subscription, folded from conference-info (RFC 4575 §4.6).

Public API::

    view = ConferenceView(normalize=key)    # frozen, empty; key(entity) -> comparison key
    view, update = view.apply(sip.conference.parse(notify_body))
        update.changes: (UserChange(kind=ADDED|CHANGED|DELETED, entity, user), ...)
        update.applied / .stale (old version, ignored) / .resync_needed (a version gap, or a
        partial document before any full one: re-SUBSCRIBE for a full state)
    view = view.reset()                  # new subscription: forget the version, keep users
    participant_status(user) -> ParticipantStatus | None   the OMA REST status
"""

# Design notes
# ------------
# The codec (sip.conference) only says what one document contains; this module keeps the
# state across NOTIFYs. A partial document is a delta: users and endpoints marked
# ``partial`` merge field by field into what is known, ``deleted`` ones leave, others
# replace. A version not above the last one is stale and ignored; a partial document must
# follow the last version by exactly one (else resync_needed), a full one may skip ahead
# and replaces the user set. Everything is pure and frozen, so the group chat machine can
# hold a view in its state and diff two of them.

from __future__ import annotations

import enum
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache

from sip.conference import (
    ConferenceDescription,
    ConferenceInfo,
    DisconnectionMethod,
    ElementState,
    Endpoint,
    EndpointStatus,
    Execution,
    User,
)

__all__ = [
    "ChangeKind",
    "ConferenceView",
    "ParticipantStatus",
    "UserChange",
    "ViewUpdate",
    "participant_status",
]


class ParticipantStatus(enum.StrEnum):
    """The OMA REST ParticipantStatus a user maps to (docs/protocol-mapping.md "Group chat")."""

    INVITED = "Invited"
    CONNECTED = "Connected"
    DISCONNECTED = "Disconnected"
    DECLINED = "Declined"
    FAILED = "Failed"


SHARED_USERS = 8192
"""Recent distinct users whose one copy the views share. Every member of a conference sees
the same ``<user>`` of each other member, so a view keeps the first equal copy instead of
its own (docs/group-chat.md, "Memory"); a user not among the recent ones is kept as is."""

_CONNECTED = {EndpointStatus.CONNECTED, EndpointStatus.ON_HOLD, EndpointStatus.MUTED_VIA_FOCUS}
_INVITED = {
    EndpointStatus.PENDING,
    EndpointStatus.DIALING_OUT,
    EndpointStatus.DIALING_IN,
    EndpointStatus.ALERTING,
}


def participant_status(user: User) -> ParticipantStatus | None:
    """Maps a user's first endpoint to a REST participant status; None if unknown."""
    if user.state is ElementState.DELETED:
        return ParticipantStatus.DISCONNECTED
    status = next((e.status for e in user.endpoints if e.status is not None), None)
    if status is None:
        return None
    if status in _CONNECTED:
        return ParticipantStatus.CONNECTED
    if status in _INVITED:
        return ParticipantStatus.INVITED
    if status is EndpointStatus.DECLINED:
        return ParticipantStatus.DECLINED
    endpoint = next(e for e in user.endpoints if e.status is status)
    if endpoint.disconnection_method is DisconnectionMethod.FAILED:
        info = endpoint.disconnection_info
        reason = "" if info is None or info.reason is None else info.reason
        return ParticipantStatus.DECLINED if "603" in reason else ParticipantStatus.FAILED
    return ParticipantStatus.DISCONNECTED


# ---------------------------------------------------------------- conference view


class ChangeKind(enum.StrEnum):
    """How a user changed between two views."""

    ADDED = "added"
    CHANGED = "changed"
    DELETED = "deleted"


@dataclass(frozen=True)
class UserChange:
    """One user's change; ``user`` is the new state (the last known one when deleted)."""

    kind: ChangeKind
    entity: str
    user: User


@dataclass(frozen=True)
class ViewUpdate:
    """The outcome of ``ConferenceView.apply``."""

    changes: tuple[UserChange, ...] = ()
    applied: bool = True
    stale: bool = False
    resync_needed: bool = False


def _merge_execution(old: Execution | None, new: Execution | None) -> Execution | None:
    if old is None or new is None:
        return new or old
    return Execution(new.when or old.when, new.reason or old.reason, new.by or old.by)


def _merge_endpoint(old: Endpoint, new: Endpoint) -> Endpoint:
    media = {m.id: m for m in old.media}
    media.update({m.id: m for m in new.media})
    return Endpoint(
        entity=old.entity,
        display_text=new.display_text if new.display_text is not None else old.display_text,
        referred=_merge_execution(old.referred, new.referred),
        status=new.status or old.status,
        joining_method=new.joining_method or old.joining_method,
        joining_info=_merge_execution(old.joining_info, new.joining_info),
        disconnection_method=new.disconnection_method or old.disconnection_method,
        disconnection_info=_merge_execution(old.disconnection_info, new.disconnection_info),
        media=tuple(media.values()),
    )


def _merge_user(old: User, new: User) -> User:
    endpoints = {e.entity: e for e in old.endpoints}
    for endpoint in new.endpoints:
        known = endpoints.get(endpoint.entity)
        if endpoint.state is ElementState.DELETED:
            endpoints.pop(endpoint.entity, None)
        elif endpoint.state is ElementState.PARTIAL and known is not None:
            endpoints[endpoint.entity] = _merge_endpoint(known, endpoint)
        else:
            endpoints[endpoint.entity] = replace(endpoint, state=ElementState.FULL)
    return User(
        entity=old.entity,
        display_text=new.display_text if new.display_text is not None else old.display_text,
        roles=new.roles or old.roles,
        endpoints=tuple(endpoints.values()),
        yourown=new.yourown or old.yourown,
    )


def _identity(entity: str) -> str:
    return entity


@lru_cache(maxsize=SHARED_USERS)
def _shared(user: User) -> User:
    """The first equal ``User`` of the recent ones (values are frozen: sharing is safe)."""
    return user


def _key(normalize: Callable[[str], str], entity: str) -> str:
    return sys.intern(normalize(entity))


@dataclass(frozen=True, slots=True)
class ConferenceView:
    """The current participants of one conference subscription (RFC 4575 §4.6).

    ``apply`` returns a new view and the per-user changes; ``normalize`` maps
    user entities to the comparison key (e.g. E.164 for tel/sip;user=phone).
    """

    users: dict[str, User] = field(default_factory=dict)
    version: int | None = None
    description: ConferenceDescription | None = None
    normalize: Callable[[str], str] = _identity

    def reset(self) -> ConferenceView:
        """Forgets the version (new subscription) but keeps users to diff the next full state."""
        return replace(self, version=None)

    def apply(self, doc: ConferenceInfo) -> tuple[ConferenceView, ViewUpdate]:
        """Folds a full or partial document into the view, checking its version."""
        if doc.state is not ElementState.FULL:
            if self.version is None and doc.version is not None:
                return self, ViewUpdate(applied=False, resync_needed=True)
        if self.version is not None and doc.version is not None:
            if doc.version <= self.version:
                return self, ViewUpdate(applied=False, stale=True)
            if doc.state is not ElementState.FULL and doc.version > self.version + 1:
                return self, ViewUpdate(applied=False, resync_needed=True)
        if doc.state is ElementState.DELETED:
            users: dict[str, User] = {}
        elif doc.state is ElementState.FULL or doc.users_state is ElementState.FULL:
            users = self._full_users(doc)
        else:
            users = self._partial_users(doc)
        description = self.description
        if doc.state is ElementState.FULL or doc.description is not None:
            description = self._merged_description(doc)
        view = replace(
            self,
            users=users,
            version=doc.version if doc.version is not None else self.version,
            description=description,
        )
        return view, ViewUpdate(changes=self._diff(users))

    def _merged_description(self, doc: ConferenceInfo) -> ConferenceDescription | None:
        new = doc.description
        old = self.description
        if doc.state is ElementState.FULL or old is None or new is None:
            return new
        return ConferenceDescription(
            display_text=new.display_text if new.display_text is not None else old.display_text,
            subject=new.subject if new.subject is not None else old.subject,
            free_text=new.free_text if new.free_text is not None else old.free_text,
            maximum_user_count=new.maximum_user_count
            if new.maximum_user_count is not None
            else old.maximum_user_count,
        )

    def _full_users(self, doc: ConferenceInfo) -> dict[str, User]:
        users: dict[str, User] = {}
        for user in doc.users or ():
            if user.entity is None or user.state is ElementState.DELETED:
                continue
            users[_key(self.normalize, user.entity)] = _shared(
                _merge_user(User(entity=user.entity), user)
            )
        return users

    def _partial_users(self, doc: ConferenceInfo) -> dict[str, User]:
        users = dict(self.users)
        for user in doc.users or ():
            if user.entity is None:
                continue
            key = _key(self.normalize, user.entity)
            known = users.get(key)
            if user.state is ElementState.DELETED:
                users.pop(key, None)
            elif user.state is ElementState.PARTIAL and known is not None:
                users[key] = _shared(_merge_user(known, user))
            else:
                users[key] = _shared(_merge_user(User(entity=user.entity), user))
        return users

    def _diff(self, users: dict[str, User]) -> tuple[UserChange, ...]:
        changes: list[UserChange] = []
        for key, user in users.items():
            old = self.users.get(key)
            if old is None:
                changes.append(UserChange(ChangeKind.ADDED, key, user))
            elif old != user:
                changes.append(UserChange(ChangeKind.CHANGED, key, user))
        for key, old in self.users.items():
            if key not in users:
                changes.append(
                    UserChange(ChangeKind.DELETED, key, replace(old, state=ElementState.DELETED))
                )
        return tuple(changes)
