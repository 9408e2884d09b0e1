"""The focus's ConferenceStore on SQL (``bridge.focus.store``; docs/group-chat.md "Parts").

Tables from ``state/migrations/m0030_focus_conferences.py``. Each method is one short
transaction; the focus writes on membership changes only, never per relayed message.

Several instances (docs/several-instances.md): a conference records the instance
hosting it (``owner``, migration 41), and :meth:`SQLConferenceStore.live_conferences`,
read by the focus's start-up recovery, lists only those of the owners it may
recover (this instance and the provably dead ones, ``state.instances``), never a
live peer's.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from bridge.focus.store import ConferenceRecord, DialogRecord, MemberRecord
from state.db import Base, Database, aware
from state.outbox import write_session


class FocusConferenceRow(Base):
    """One conference of the focus."""

    __tablename__ = "focus_conferences"

    uri: Mapped[str] = mapped_column(sa.String(1024), primary_key=True)
    creator_uri: Mapped[str] = mapped_column(sa.String(512))
    contribution_id: Mapped[str | None] = mapped_column(sa.String(256))
    conversation_id: Mapped[str | None] = mapped_column(sa.String(256))
    subject: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    owner: Mapped[str] = mapped_column(sa.String(128), default="", server_default="")
    """The instance hosting the conference (migration 41; ``state.instances``)."""


class FocusMemberRow(Base):
    """One member of a focus conference, with its dialog state while up."""

    __tablename__ = "focus_members"

    conference_uri: Mapped[str] = mapped_column(
        sa.String(1024), sa.ForeignKey("focus_conferences.uri"), primary_key=True
    )
    user_uri: Mapped[str] = mapped_column(sa.String(512), primary_key=True)
    status: Mapped[str] = mapped_column(sa.String(16))
    display_name: Mapped[str | None] = mapped_column(sa.Text)
    chairman: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    cause: Mapped[int | None] = mapped_column(sa.Integer)
    call_id: Mapped[str | None] = mapped_column(sa.String(256))
    local_tag: Mapped[str | None] = mapped_column(sa.String(256))
    remote_tag: Mapped[str | None] = mapped_column(sa.String(256))
    local_uri: Mapped[str | None] = mapped_column(sa.String(1024))
    remote_uri: Mapped[str | None] = mapped_column(sa.String(1024))
    remote_target: Mapped[str | None] = mapped_column(sa.String(1024))
    route_set: Mapped[list[str] | None] = mapped_column(sa.JSON)
    local_cseq: Mapped[int | None] = mapped_column(sa.BigInteger)
    dialog_uac: Mapped[bool | None] = mapped_column(sa.Boolean)


def _dialog(row: FocusMemberRow) -> DialogRecord | None:
    if (
        row.call_id is None
        or row.local_tag is None
        or row.remote_tag is None
        or row.local_uri is None
        or row.remote_uri is None
        or row.remote_target is None
        or row.local_cseq is None
    ):
        return None
    return DialogRecord(
        call_id=row.call_id,
        local_tag=row.local_tag,
        remote_tag=row.remote_tag,
        local_uri=row.local_uri,
        remote_uri=row.remote_uri,
        remote_target=row.remote_target,
        route_set=tuple(row.route_set or ()),
        local_cseq=row.local_cseq,
        is_uac=bool(row.dialog_uac),
    )


def _member(row: FocusMemberRow) -> MemberRecord:
    return MemberRecord(
        uri=row.user_uri,
        status=row.status,
        display_name=row.display_name,
        chairman=row.chairman,
        cause=row.cause,
        dialog=_dialog(row),
    )


class SQLConferenceStore:
    """``bridge.focus.store.ConferenceStore`` on the project's Database."""

    def __init__(
        self, db: Database, *, owner: str = "", recover: Collection[str] | None = None
    ) -> None:
        self.db = db
        self.owner = owner
        """This instance's id, recorded on the conferences it creates."""
        self.recover = None if recover is None else list(recover)
        """Whose conferences :meth:`live_conferences` lists (None: everyone's)."""

    async def save_conference(self, conference: ConferenceRecord) -> None:
        async with write_session(self.db) as session:
            session.add(
                FocusConferenceRow(
                    uri=conference.uri,
                    creator_uri=conference.creator,
                    contribution_id=conference.contribution_id,
                    conversation_id=conference.conversation_id,
                    subject=conference.subject,
                    created_at=conference.created_at,
                    ended_at=conference.ended_at,
                    owner=self.owner,
                )
            )

    async def save_members(self, conference_uri: str, members: list[MemberRecord]) -> None:
        async with write_session(self.db) as session:
            for member in members:
                d = member.dialog
                await session.merge(
                    FocusMemberRow(
                        conference_uri=conference_uri,
                        user_uri=member.uri,
                        status=member.status,
                        display_name=member.display_name,
                        chairman=member.chairman,
                        cause=member.cause,
                        call_id=None if d is None else d.call_id,
                        local_tag=None if d is None else d.local_tag,
                        remote_tag=None if d is None else d.remote_tag,
                        local_uri=None if d is None else d.local_uri,
                        remote_uri=None if d is None else d.remote_uri,
                        remote_target=None if d is None else d.remote_target,
                        route_set=None if d is None else list(d.route_set),
                        local_cseq=None if d is None else d.local_cseq,
                        dialog_uac=None if d is None else d.is_uac,
                    )
                )

    async def end_conference(self, conference_uri: str, ended_at: datetime) -> None:
        async with write_session(self.db) as session:
            await session.execute(
                sa.update(FocusConferenceRow)
                .where(FocusConferenceRow.uri == conference_uri)
                .where(FocusConferenceRow.ended_at.is_(None))
                .values(ended_at=ended_at)
            )

    async def live_conferences(self) -> list[tuple[ConferenceRecord, list[MemberRecord]]]:
        async with self.db.sessions() as session:
            confs = (
                await session.scalars(
                    sa.select(FocusConferenceRow).where(
                        FocusConferenceRow.ended_at.is_(None),
                        *(
                            []
                            if self.recover is None
                            else [FocusConferenceRow.owner.in_(self.recover)]
                        ),
                    )
                )
            ).all()
            uris = [c.uri for c in confs]
            members = (
                await session.scalars(
                    sa.select(FocusMemberRow).where(FocusMemberRow.conference_uri.in_(uris))
                )
            ).all()
        by_conf: dict[str, list[MemberRecord]] = {uri: [] for uri in uris}
        for row in members:
            by_conf[row.conference_uri].append(_member(row))
        return [
            (
                ConferenceRecord(
                    uri=c.uri,
                    creator=c.creator_uri,
                    contribution_id=c.contribution_id,
                    conversation_id=c.conversation_id,
                    subject=c.subject,
                    created_at=aware(c.created_at),
                    ended_at=None,
                ),
                by_conf[c.uri],
            )
            for c in confs
        ]
