"""The focus's store port: live conferences and their members, with the dialog state a
BYE needs after a restart (RFC 3261 §12.2.1.1; docs/group-chat.md "Parts").

Writes happen on membership changes only (create, a member's status change, end), never
per relayed message. ``MemoryConferenceStore`` is the in-process implementation (tests,
or a bridge without a database); ``state.focus_store.SQLConferenceStore`` is the SQL one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

__all__ = [
    "ConferenceRecord",
    "ConferenceStore",
    "DialogRecord",
    "MemberRecord",
    "MemoryConferenceStore",
]


@dataclass(frozen=True)
class DialogRecord:
    """What an in-dialog BYE needs (RFC 3261 §12.2.1.1)."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    remote_target: str
    route_set: tuple[str, ...]
    local_cseq: int
    is_uac: bool


@dataclass(frozen=True)
class MemberRecord:
    """One member as stored: address, status value and the dialog while it is up."""

    uri: str
    status: str
    display_name: str | None = None
    chairman: bool = False
    cause: int | None = None
    dialog: DialogRecord | None = None


@dataclass(frozen=True)
class ConferenceRecord:
    """One conference as stored."""

    uri: str
    creator: str
    contribution_id: str | None
    conversation_id: str | None
    subject: str | None
    created_at: datetime
    ended_at: datetime | None = None


class ConferenceStore(Protocol):
    """Where the focus keeps its conferences (implemented in state/focus_store.py)."""

    async def save_conference(self, conference: ConferenceRecord) -> None:
        """Inserts a new live conference."""

    async def save_members(self, conference_uri: str, members: list[MemberRecord]) -> None:
        """Inserts or replaces members of a conference, in one transaction."""

    async def end_conference(self, conference_uri: str, ended_at: datetime) -> None:
        """Marks a conference ended."""

    async def live_conferences(self) -> list[tuple[ConferenceRecord, list[MemberRecord]]]:
        """Every conference not ended, with its members (restart recovery)."""


class MemoryConferenceStore:
    """A ConferenceStore in a dict (tests; a bridge without a database)."""

    def __init__(self) -> None:
        self.conferences: dict[str, ConferenceRecord] = {}
        self.members: dict[str, dict[str, MemberRecord]] = {}
        self.writes = 0

    async def save_conference(self, conference: ConferenceRecord) -> None:
        self.writes += 1
        self.conferences[conference.uri] = conference
        self.members.setdefault(conference.uri, {})

    async def save_members(self, conference_uri: str, members: list[MemberRecord]) -> None:
        self.writes += 1
        known = self.members.setdefault(conference_uri, {})
        for member in members:
            known[member.uri] = member

    async def end_conference(self, conference_uri: str, ended_at: datetime) -> None:
        self.writes += 1
        known = self.conferences.get(conference_uri)
        if known is not None:
            self.conferences[conference_uri] = replace(known, ended_at=ended_at)

    async def live_conferences(self) -> list[tuple[ConferenceRecord, list[MemberRecord]]]:
        return [
            (conf, list(self.members.get(uri, {}).values()))
            for uri, conf in self.conferences.items()
            if conf.ended_at is None
        ]
