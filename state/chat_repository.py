"""Repository functions of 1-1 chat: sessions and messages (docs/protocol-mapping.md "Identifiers").

Plain ``async def``s over an ``AsyncSession`` that return the frozen
dataclasses of ``bridge.chat.model``; the caller owns the transaction
(docs/architecture.md "Store"), so a state change and the notifications it causes
(``state.outbox.enqueue``) commit together. Timestamps are timezone-aware
UTC; SQLite hands them back naive and they are re-tagged here.

Sets of REST statuses and dispositions are stored as sorted comma-separated
values (small, closed vocabularies).

:class:`SQLChatTransaction` is the direct path of the chat store (one
database transaction per unit: PostgreSQL, in-memory SQLite); the
group-commit store for a SQLite file is ``state.chat_store``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import replace
from datetime import datetime
from typing import cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.chat.model import (
    ChatSession,
    DialogIds,
    Direction,
    Disposition,
    LegId,
    Participant,
    ParticipantStatus,
    ReportKind,
    RestStatus,
    SessionKind,
    StoredMessage,
)
from bridge.chat.store import OwedReport
from bridge.ids import ChatSessionId, MessageId, SubscriptionId, UserUri
from bridge.ports import JSONObject, Notification
from bridge.subscriptions import Subscription
from state import outbox, repository
from state.chat_models import (
    STATUS_SOURCES,
    UNSENT_SQL,
    UNSENT_STATUSES,
    ChatMessageRow,
    ChatOwedReportRow,
    ChatParticipantRow,
    ChatSessionRow,
)
from state.db import aware

_S = ChatSessionRow
_M = ChatMessageRow
_P = ChatParticipantRow
_O = cast(sa.Table, ChatOwedReportRow.__table__)


def _join(values: Iterable[str]) -> str:
    return ",".join(sorted(values))


def _split(text: str) -> list[str]:
    return [v for v in text.split(",") if v]


def _to_session(row: ChatSessionRow) -> ChatSession:
    return ChatSession(
        id=ChatSessionId(row.id),
        user=UserUri(row.user_uri),
        peer=UserUri(row.peer_uri),
        kind=SessionKind(row.kind),
        direction=Direction(row.direction),
        state=row.state,
        leg=None if row.leg_id is None else LegId(row.leg_id),
        subject=row.subject,
        originator_name=row.originator_name,
        t_participant_name=row.t_participant_name,
        client_correlator=row.client_correlator,
        created_at=aware(row.created_at),
        updated_at=aware(row.updated_at),
        ended_at=None if row.ended_at is None else aware(row.ended_at),
        end_reason=row.end_reason,
        ids=DialogIds(
            call_id=row.call_id,
            local_tag=row.local_tag,
            remote_tag=row.remote_tag,
            contribution_id=row.contribution_id,
            conversation_id=row.conversation_id,
            msrp_local_uri=row.msrp_local_uri,
            msrp_remote_path=row.msrp_remote_path,
            local_uri=row.local_uri,
            remote_uri=row.remote_uri,
            remote_target=row.remote_target,
            route_set=tuple(row.route_set or ()),
            local_cseq=row.local_cseq,
            uac=row.dialog_uac,
        ),
    )


def _session_values(cs: ChatSession) -> dict[str, object]:
    return {
        "user_uri": cs.user,
        "peer_uri": cs.peer,
        "kind": cs.kind.value,
        "direction": cs.direction.value,
        "state": cs.state,
        "leg_id": cs.leg,
        "subject": cs.subject,
        "originator_name": cs.originator_name,
        "t_participant_name": cs.t_participant_name,
        "client_correlator": cs.client_correlator,
        "call_id": cs.ids.call_id,
        "local_tag": cs.ids.local_tag,
        "remote_tag": cs.ids.remote_tag,
        "contribution_id": cs.ids.contribution_id,
        "conversation_id": cs.ids.conversation_id,
        "msrp_local_uri": cs.ids.msrp_local_uri,
        "msrp_remote_path": cs.ids.msrp_remote_path,
        "local_uri": cs.ids.local_uri,
        "remote_uri": cs.ids.remote_uri,
        "remote_target": cs.ids.remote_target,
        "route_set": list(cs.ids.route_set) if cs.ids.route_set else None,
        "local_cseq": cs.ids.local_cseq,
        "dialog_uac": cs.ids.uac,
        "created_at": cs.created_at,
        "updated_at": cs.updated_at,
        "ended_at": cs.ended_at,
        "end_reason": None if cs.end_reason is None else cs.end_reason[:256],
    }


def _to_message(row: ChatMessageRow) -> StoredMessage:
    return StoredMessage(
        id=MessageId(row.message_id),
        user=UserUri(row.user_uri),
        peer=UserUri(row.peer_uri),
        direction=Direction(row.direction),
        session_id=None if row.session_id is None else ChatSessionId(row.session_id),
        rest_session=row.rest_session,
        text=row.text,
        content_type=row.content_type,
        reports=frozenset(RestStatus(v) for v in _split(row.reports)),
        dispositions=frozenset(Disposition(v) for v in _split(row.dispositions)),
        status=row.status,
        date_time=aware(row.date_time),
        created_at=aware(row.created_at),
        client_correlator=row.client_correlator,
        sender_name=row.sender_name,
        report_route=tuple(row.report_route),
        seq=row.seq,
    )


# --- sessions ---------------------------------------------------------------------


async def insert_session(session: AsyncSession, cs: ChatSession, owner: str = "") -> ChatSession:
    """Store a new session (its ``id`` and ``leg`` must be unused), owned by ``owner``."""
    await session.execute(sa.insert(_S).values(id=cs.id, owner=owner, **_session_values(cs)))
    return cs


async def save_session(session: AsyncSession, cs: ChatSession) -> ChatSession:
    """Write every field of an existing session (its ``owner`` stays)."""
    await session.execute(sa.update(_S).where(_S.id == cs.id).values(**_session_values(cs)))
    return cs


async def get_session(session: AsyncSession, user: UserUri, session_id: str) -> ChatSession | None:
    """The session ``session_id`` of ``user``, or None."""
    row = await session.scalar(sa.select(_S).where(_S.id == session_id, _S.user_uri == user))
    return None if row is None else _to_session(row)


async def session_by_id(session: AsyncSession, session_id: str) -> ChatSession | None:
    """The session with internal id ``session_id``, whoever owns it."""
    row = await session.get(_S, session_id)
    return None if row is None else _to_session(row)


async def session_by_leg(session: AsyncSession, leg: str) -> ChatSession | None:
    """The session bound to signalling leg ``leg``, or None."""
    row = await session.scalar(sa.select(_S).where(_S.leg_id == leg))
    return None if row is None else _to_session(row)


async def session_by_correlator(
    session: AsyncSession, user: UserUri, correlator: str
) -> ChatSession | None:
    """The session ``user`` created with ``clientCorrelator`` ``correlator``, or None."""
    row = await session.scalar(
        sa.select(_S).where(_S.user_uri == user, _S.client_correlator == correlator)
    )
    return None if row is None else _to_session(row)


async def live_adhoc_session(
    session: AsyncSession, user: UserUri, peer: UserUri, live_states: Iterable[str]
) -> ChatSession | None:
    """The newest implicit session between ``user`` and ``peer`` in one of ``live_states``."""
    row = await session.scalar(
        sa.select(_S)
        .where(
            _S.user_uri == user,
            _S.peer_uri == peer,
            _S.kind == SessionKind.ADHOC.value,
            _S.state.in_(list(live_states)),
        )
        .order_by(_S.created_at.desc(), _S.id.desc())
        .limit(1)
    )
    return None if row is None else _to_session(row)


def _owned(owners: Collection[str] | None) -> list[sa.ColumnElement[bool]]:
    """The condition "owned by one of ``owners``" on sessions (None: no condition)."""
    return [] if owners is None else [_S.owner.in_(list(owners))]


async def sessions_in_states(
    session: AsyncSession,
    kind: SessionKind,
    states: Iterable[str],
    owners: Collection[str] | None = None,
) -> list[ChatSession]:
    """Every session of ``kind`` in one of ``states`` owned by one of ``owners`` (None:
    anyone's), for recovery after a restart."""
    rows = await session.scalars(
        sa.select(_S)
        .where(_S.kind == kind.value, _S.state.in_(list(states)), *_owned(owners))
        .order_by(_S.created_at, _S.id)
    )
    return [_to_session(r) for r in rows]


# --- messages -----------------------------------------------------------------------


async def insert_message(
    session: AsyncSession, msg: StoredMessage, *, expires_at: datetime, owner: str = ""
) -> StoredMessage:
    """Store a new message, stored by instance ``owner``; return it with its ``seq``."""
    row = ChatMessageRow(
        message_id=msg.id,
        user_uri=msg.user,
        peer_uri=msg.peer,
        direction=msg.direction.value,
        session_id=msg.session_id,
        rest_session=msg.rest_session,
        text=msg.text,
        content_type=msg.content_type,
        reports=_join(r.value for r in msg.reports),
        dispositions=_join(d.value for d in msg.dispositions),
        status=msg.status,
        client_correlator=msg.client_correlator,
        sender_name=msg.sender_name,
        report_route=list(msg.report_route),
        date_time=msg.date_time,
        created_at=msg.created_at,
        updated_at=msg.created_at,
        expires_at=expires_at,
        owner=owner,
    )
    session.add(row)
    await session.flush()
    return _to_message(row)


async def get_message(
    session: AsyncSession, user: UserUri, message_id: str, direction: Direction
) -> StoredMessage | None:
    """The message ``message_id`` of ``user`` in ``direction``, or None."""
    row = await session.scalar(
        sa.select(_M).where(
            _M.user_uri == user, _M.message_id == message_id, _M.direction == direction.value
        )
    )
    return None if row is None else _to_message(row)


async def find_messages(
    session: AsyncSession, user: UserUri, message_id: str
) -> list[StoredMessage]:
    """Every message of ``user`` with ``message_id`` (sent first, then received)."""
    rows = await session.scalars(
        sa.select(_M)
        .where(_M.user_uri == user, _M.message_id == message_id)
        .order_by(_M.direction.desc())
    )
    return [_to_message(r) for r in rows]


async def message_by_correlator(
    session: AsyncSession, user: UserUri, correlator: str
) -> StoredMessage | None:
    """The message ``user`` sent with ``clientCorrelator`` ``correlator``, or None."""
    row = await session.scalar(
        sa.select(_M).where(
            _M.user_uri == user,
            _M.direction == Direction.OUTGOING.value,
            _M.client_correlator == correlator,
        )
    )
    return None if row is None else _to_message(row)


async def set_message_status(
    session: AsyncSession,
    msg: StoredMessage,
    status: str,
    *,
    now: datetime,
    session_id: ChatSessionId | None = None,
    detach: bool = False,
) -> StoredMessage:
    """Write a new status; move the message to ``session_id``, or off any with ``detach``.

    Conditional (``STATUS_SOURCES``): when the stored status cannot move to
    ``status`` (another instance moved it on meanwhile), nothing is written and
    the message is returned as stored.
    """
    new_session = None if detach else (msg.session_id if session_id is None else session_id)
    result = await session.execute(
        sa.update(_M)
        .where(_M.seq == msg.seq, _M.status.in_(STATUS_SOURCES.get(status, ())))
        .values(status=status, updated_at=now, session_id=new_session)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 1) == 0:
        row = await session.get(_M, msg.seq, populate_existing=True)
        if row is not None:
            return _to_message(row)
    return replace(msg, status=status, session_id=new_session)


def _unsent_index(statuses: list[str]) -> list[sa.TextClause]:
    """The unsent-messages index predicate, when ``statuses`` lie within it (migration 25)."""
    return [sa.text(UNSENT_SQL)] if set(statuses) <= set(UNSENT_STATUSES) else []


async def session_messages(
    session: AsyncSession, session_id: str, direction: Direction, statuses: Iterable[str]
) -> list[StoredMessage]:
    """The messages of a session in ``direction`` with one of ``statuses``, in sending order."""
    wanted = list(statuses)
    rows = await session.scalars(
        sa.select(_M)
        .where(
            _M.session_id == session_id,
            _M.direction == direction.value,
            _M.status.in_(wanted),
            *_unsent_index(wanted),
        )
        .order_by(_M.seq)
    )
    return [_to_message(r) for r in rows]


async def detached_messages(
    session: AsyncSession, user: UserUri, peer: UserUri, rest_session: str, status: str
) -> list[StoredMessage]:
    """Sent messages of ``user`` to ``peer`` on no session with ``status``, in sending order."""
    rows = await session.scalars(
        sa.select(_M)
        .where(
            _M.user_uri == user,
            _M.peer_uri == peer,
            _M.direction == Direction.OUTGOING.value,
            _M.rest_session == rest_session,
            _M.session_id.is_(None),
            _M.status == status,
            *_unsent_index([status]),
        )
        .order_by(_M.seq)
    )
    return [_to_message(r) for r in rows]


def messages_owned(owners: Collection[str] | None) -> list[sa.ColumnElement[bool]]:
    """The condition "a message of one of ``owners``": the owner of its session, or its
    own when it is on none (None: no condition)."""
    if owners is None:
        return []
    mine = list(owners)
    return [
        sa.or_(
            sa.and_(_M.session_id.is_(None), _M.owner.in_(mine)),
            _M.session_id.in_(sa.select(_S.id).where(_S.owner.in_(mine))),
        )
    ]


async def messages_in_states(
    session: AsyncSession,
    direction: Direction,
    statuses: Iterable[str],
    owners: Collection[str] | None = None,
) -> list[StoredMessage]:
    """Every message in ``direction`` with one of ``statuses`` of one of ``owners`` (None:
    anyone's; :func:`messages_owned`), in store order (recovery)."""
    wanted = list(statuses)
    rows = await session.scalars(
        sa.select(_M)
        .where(
            _M.direction == direction.value,
            _M.status.in_(wanted),
            *_unsent_index(wanted),
            *messages_owned(owners),
        )
        .order_by(_M.seq)
    )
    return [_to_message(r) for r in rows]


async def purge_expired(session: AsyncSession, *, now: datetime, ended_before: datetime) -> int:
    """Delete messages past their retention and sessions ended before ``ended_before``.

    The participants of those sessions and the owed IMDNs of those messages go with them
    (not counted).
    """
    result = await session.execute(sa.delete(_M).where(_M.expires_at <= now))
    count = getattr(result, "rowcount", 0) or 0
    await session.execute(_ORPHAN_REPORTS)  # owed IMDNs go with their message
    ended = sa.select(_S.id).where(_S.ended_at.is_not(None), _S.ended_at <= ended_before)
    await session.execute(sa.delete(_P).where(_P.session_id.in_(ended)))
    result = await session.execute(
        sa.delete(_S).where(_S.ended_at.is_not(None), _S.ended_at <= ended_before)
    )
    return int(count) + int(getattr(result, "rowcount", 0) or 0)


# --- owed reports (migration 28) -------------------------------------------------------


def owed_rows(owed: Iterable[OwedReport], now: datetime) -> list[dict[str, object]]:
    """``chat_owed_reports`` rows of ``owed``, unclaimed."""
    return [
        {
            "user_uri": o.user,
            "message_id": o.message_id,
            "kind": o.kind.value,
            "created_at": now,
            "claimed_by": None,
            "claimed_until": None,
        }
        for o in owed
    ]


async def owe_reports(session: AsyncSession, owed: Iterable[OwedReport], now: datetime) -> None:
    """Record owed IMDNs (one already recorded stays as it is)."""
    rows = owed_rows(owed, now)
    if not rows:
        return
    insert = (
        sqlite_insert(_O) if session.get_bind().dialect.name == "sqlite" else postgresql_insert(_O)
    )
    await session.execute(insert.on_conflict_do_nothing(), rows)


_TAKEN = sa.delete(_O).where(
    _O.c.user_uri == sa.bindparam("u"),
    _O.c.message_id == sa.bindparam("m"),
    _O.c.kind == sa.bindparam("k"),
)


async def reports_taken(session: AsyncSession, taken: Iterable[OwedReport]) -> None:
    """Forget acknowledged IMDNs."""
    params = [{"u": o.user, "m": o.message_id, "k": o.kind.value} for o in taken]
    if params:
        conn = await session.connection()
        await conn.execute(_TAKEN, params)


_ORPHAN_REPORTS = sa.delete(_O).where(
    ~sa.exists().where(
        _M.user_uri == _O.c.user_uri,
        _M.message_id == _O.c.message_id,
        _M.direction == Direction.INCOMING.value,
    )
)
"""Owed IMDNs whose received message is gone (retention)."""


async def claim_owed_reports(
    session: AsyncSession,
    owner: str,
    now: datetime,
    until: datetime,
    created_before: datetime | None = None,
) -> list[OwedReport]:
    """Claim every owed IMDN whose claim is free or ran out (one ``UPDATE ... RETURNING``:
    two instances never both win a row), oldest first; with ``created_before``, only
    those owed since then."""
    free = sa.or_(_O.c.claimed_until.is_(None), _O.c.claimed_until <= now)
    if created_before is not None:
        free = sa.and_(free, _O.c.created_at <= created_before)
    result = await session.execute(
        sa.update(_O)
        .where(free)
        .values(claimed_by=owner, claimed_until=until)
        .returning(_O.c.user_uri, _O.c.message_id, _O.c.kind, _O.c.created_at)
    )
    rows = sorted(result.all(), key=lambda r: (aware(r.created_at), r.user_uri, r.message_id))
    return [
        OwedReport(UserUri(r.user_uri), MessageId(r.message_id), ReportKind(r.kind)) for r in rows
    ]


# --- group participants ---------------------------------------------------------------


def _to_participant(row: ChatParticipantRow) -> Participant:
    return Participant(
        address=UserUri(row.address),
        status=ParticipantStatus(row.status),
        name=row.name,
        is_originator=row.is_originator,
    )


async def participants(session: AsyncSession, session_id: str) -> list[Participant]:
    """The members of group session ``session_id``: the originator first, then by address."""
    rows = await session.scalars(
        sa.select(_P)
        .where(_P.session_id == session_id)
        .order_by(_P.is_originator.desc(), _P.address)
    )
    return [_to_participant(r) for r in rows]


async def save_participants(
    session: AsyncSession, session_id: str, people: Iterable[Participant], now: datetime
) -> None:
    """Insert or update (by address) members of group session ``session_id``."""
    wanted = {p.address: p for p in people}
    if not wanted:
        return
    known = set(
        await session.scalars(
            sa.select(_P.address).where(_P.session_id == session_id, _P.address.in_(list(wanted)))
        )
    )
    for address, p in wanted.items():
        values = {
            "name": p.name,
            "status": p.status.value,
            "is_originator": p.is_originator,
            "updated_at": now,
        }
        if address in known:
            await session.execute(
                sa.update(_P)
                .where(_P.session_id == session_id, _P.address == address)
                .values(**values)
            )
        else:
            await session.execute(
                sa.insert(_P).values(session_id=session_id, address=address, **values)
            )


# --- the direct ChatTransaction (one database transaction per unit) ----------------


class SQLChatTransaction:
    """``bridge.chat.store.ChatTransaction`` over one ``AsyncSession``."""

    def __init__(self, session: AsyncSession, owner: str = "") -> None:
        self.session = session
        self.owner = owner
        """The instance id recorded on the sessions and messages inserted."""
        self.notifications: list[Notification] = []

    async def insert_session(self, cs: ChatSession) -> ChatSession:
        return await insert_session(self.session, cs, self.owner)

    async def save_session(self, cs: ChatSession) -> ChatSession:
        return await save_session(self.session, cs)

    async def get_session(self, user: UserUri, session_id: str) -> ChatSession | None:
        return await get_session(self.session, user, session_id)

    async def session_by_id(self, session_id: str) -> ChatSession | None:
        return await session_by_id(self.session, session_id)

    async def session_by_leg(self, leg: str) -> ChatSession | None:
        return await session_by_leg(self.session, leg)

    async def session_by_correlator(self, user: UserUri, correlator: str) -> ChatSession | None:
        return await session_by_correlator(self.session, user, correlator)

    async def live_adhoc_session(
        self, user: UserUri, peer: UserUri, states: Iterable[str]
    ) -> ChatSession | None:
        return await live_adhoc_session(self.session, user, peer, states)

    async def sessions_in_states(
        self, kind: SessionKind, states: Iterable[str], owners: Collection[str] | None = None
    ) -> list[ChatSession]:
        return await sessions_in_states(self.session, kind, states, owners)

    async def insert_message(self, msg: StoredMessage, *, expires_at: datetime) -> StoredMessage:
        return await insert_message(self.session, msg, expires_at=expires_at, owner=self.owner)

    async def get_message(
        self, user: UserUri, message_id: str, direction: Direction
    ) -> StoredMessage | None:
        return await get_message(self.session, user, message_id, direction)

    async def find_messages(self, user: UserUri, message_id: str) -> list[StoredMessage]:
        return await find_messages(self.session, user, message_id)

    async def message_by_correlator(self, user: UserUri, correlator: str) -> StoredMessage | None:
        return await message_by_correlator(self.session, user, correlator)

    async def set_message_status(
        self,
        msg: StoredMessage,
        status: str,
        *,
        now: datetime,
        session_id: ChatSessionId | None = None,
        detach: bool = False,
    ) -> StoredMessage:
        return await set_message_status(
            self.session, msg, status, now=now, session_id=session_id, detach=detach
        )

    async def session_messages(
        self, session_id: str, direction: Direction, statuses: Iterable[str]
    ) -> list[StoredMessage]:
        return await session_messages(self.session, session_id, direction, statuses)

    async def detached_messages(
        self, user: UserUri, peer: UserUri, rest_session: str, status: str
    ) -> list[StoredMessage]:
        return await detached_messages(self.session, user, peer, rest_session, status)

    async def messages_in_states(
        self, direction: Direction, statuses: Iterable[str], owners: Collection[str] | None = None
    ) -> list[StoredMessage]:
        return await messages_in_states(self.session, direction, statuses, owners)

    async def purge_expired(self, *, now: datetime, ended_before: datetime) -> int:
        return await purge_expired(self.session, now=now, ended_before=ended_before)

    async def owe_reports(self, owed: Iterable[OwedReport], now: datetime) -> None:
        await owe_reports(self.session, owed, now)

    async def reports_taken(self, taken: Iterable[OwedReport]) -> None:
        await reports_taken(self.session, taken)

    async def claim_owed_reports(
        self, owner: str, now: datetime, until: datetime, created_before: datetime | None = None
    ) -> list[OwedReport]:
        return await claim_owed_reports(self.session, owner, now, until, created_before)

    async def participants(self, session_id: str) -> list[Participant]:
        return await participants(self.session, session_id)

    async def save_participants(
        self, session_id: str, people: Iterable[Participant], now: datetime
    ) -> None:
        await save_participants(self.session, session_id, people, now)

    async def active_subscriptions(self, user: UserUri, now: datetime) -> list[Subscription]:
        return await repository.active_subscriptions(self.session, user, now)

    async def enqueue(
        self,
        *,
        user: UserUri,
        subscription_id: SubscriptionId,
        notify_url: str,
        root: str,
        body: JSONObject,
        now: datetime,
    ) -> None:
        self.notifications.append(
            await outbox.enqueue(
                self.session,
                user=user,
                subscription_id=subscription_id,
                notify_url=notify_url,
                root=root,
                body=body,
                now=now,
            )
        )
