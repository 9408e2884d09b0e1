"""The chat store's four hot writes, as SQL text run with the DBAPI ``executemany``.

Session insert and update, message insert and status: the group-commit store
(``state.chat_store``) sends a batch's buffered writes through :class:`_Writes`
in one ``executemany`` per statement; everything else goes through SQLAlchemy
(the repository functions of ``state.chat_repository``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa

from bridge.chat.model import ChatSession, Participant, StoredMessage
from bridge.chat.store import OwedReport
from bridge.ports import Notification
from state import outbox
from state.chat_models import (
    STATUS_FORWARD_SQL,
    ChatMessageRow,
    ChatOwedReportRow,
    ChatParticipantRow,
    ChatSessionRow,
)
from state.chat_repository import _join, _session_values, owed_rows
from state.writer import InThreadSession

_ParticipantWrites = dict[str, dict[str, tuple[Participant, datetime]]]
"""Buffered participant upserts: session id → address → (participant, updated_at)."""
_OwedWrites = dict[OwedReport, datetime | None]
"""Buffered owed IMDNs: report → when it became owed, or None once it was taken."""

_ST = cast(sa.Table, ChatSessionRow.__table__)
_MT = cast(sa.Table, ChatMessageRow.__table__)
_PT = cast(sa.Table, ChatParticipantRow.__table__)
_OT = cast(sa.Table, ChatOwedReportRow.__table__)


def _message_row(
    msg: StoredMessage, updated_at: datetime, expires_at: datetime, owner: str
) -> dict[str, object]:
    return {
        "seq": msg.seq,
        "message_id": msg.id,
        "user_uri": msg.user,
        "peer_uri": msg.peer,
        "direction": msg.direction.value,
        "session_id": msg.session_id,
        "rest_session": msg.rest_session,
        "text": msg.text,
        "content_type": msg.content_type,
        "reports": _join(r.value for r in msg.reports),
        "dispositions": _join(d.value for d in msg.dispositions),
        "status": msg.status,
        "client_correlator": msg.client_correlator,
        "sender_name": msg.sender_name,
        "report_route": list(msg.report_route),
        "date_time": msg.date_time,
        "created_at": msg.created_at,
        "updated_at": updated_at,
        "expires_at": expires_at,
        "owner": owner,
    }


@dataclass
class _MessageWrite:
    """A buffered message write: an insert when ``expires_at`` is set, else an update."""

    msg: StoredMessage
    updated_at: datetime
    expires_at: datetime | None = None


class _RawWrite:
    """One of the store's own hot writes, as SQL text run with the DBAPI ``executemany``.

    SQLAlchemy builds nothing per call: the columns come from the table, the
    values are converted with the column types' own bind processors (so
    datetimes and JSON are stored exactly as the ORM stores them), and the
    sqlite3 cursor runs them in the open transaction.
    """

    def __init__(
        self, sql: str, columns: list[sa.Column[Any]], keys: list[str], dialect: sa.Dialect
    ) -> None:
        self.sql = sql
        self.keys = keys
        self.processors = [c.type.bind_processor(dialect) for c in columns]

    @classmethod
    def insert(cls, table: sa.Table, dialect: sa.Dialect) -> _RawWrite:
        columns = list(table.columns)
        names = ", ".join(c.name for c in columns)
        marks = ", ".join("?" for _ in columns)
        sql = f"INSERT INTO {table.name} ({names}) VALUES ({marks})"
        return cls(sql, columns, [c.name for c in columns], dialect)

    @classmethod
    def upsert(cls, table: sa.Table, keys: list[str], dialect: sa.Dialect) -> _RawWrite:
        """``INSERT … ON CONFLICT (keys) DO UPDATE`` of every other column (SQLite ≥ 3.24)."""
        columns = list(table.columns)
        names = ", ".join(c.name for c in columns)
        marks = ", ".join("?" for _ in columns)
        sets = ", ".join(f"{c.name} = excluded.{c.name}" for c in columns if c.name not in keys)
        sql = (
            f"INSERT INTO {table.name} ({names}) VALUES ({marks})"
            f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets}"
        )
        return cls(sql, columns, [c.name for c in columns], dialect)

    @classmethod
    def update(
        cls, table: sa.Table, key: str, dialect: sa.Dialect, only: list[str] | None = None
    ) -> _RawWrite:
        columns = [c for c in table.columns if c.name != key and (only is None or c.name in only)]
        sets = ", ".join(f"{c.name} = ?" for c in columns)
        sql = f"UPDATE {table.name} SET {sets} WHERE {key} = ?"
        return cls(sql, [*columns, table.c[key]], [c.name for c in columns] + [key], dialect)

    def run(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
        """``executemany`` of ``rows`` (dicts keyed by column name)."""
        pairs = list(zip(self.keys, self.processors, strict=True))
        params = [
            tuple(row[k] if p is None or row[k] is None else p(row[k]) for k, p in pairs)
            for row in rows
        ]
        raw = conn.connection.dbapi_connection
        assert raw is not None
        raw.executemany(self.sql, params)


class _Writes:
    """The store's four hot writes, compiled once for the writer's dialect."""

    def __init__(self, dialect: sa.Dialect, owner: str = "") -> None:
        self.owner = owner
        """The instance id recorded on inserted sessions and messages (never updated)."""
        self.new_session = _RawWrite.insert(_ST, dialect)
        kept = [c.name for c in _ST.columns if c.name != "owner"]
        self.save_session = _RawWrite.update(_ST, "id", dialect, only=kept)
        self.new_message = _RawWrite.insert(_MT, dialect)
        self.message_status = _RawWrite.update(
            _MT, "seq", dialect, only=["status", "updated_at", "session_id"]
        )
        # never backwards (state.chat_models.STATUS_SOURCES): the new status once more
        self.message_status.sql += f" AND {STATUS_FORWARD_SQL}"
        self.message_status.keys.append("status")
        self.message_status.processors.append(_MT.c.status.type.bind_processor(dialect))
        self.participant = _RawWrite.upsert(_PT, ["session_id", "address"], dialect)
        self.owe = _RawWrite.insert(_OT, dialect)
        self.owe.sql = self.owe.sql.replace("INSERT INTO", "INSERT OR IGNORE INTO", 1)
        self.taken = _RawWrite(
            f"DELETE FROM {_OT.name} WHERE user_uri = ? AND message_id = ? AND kind = ?",
            [_OT.c.user_uri, _OT.c.message_id, _OT.c.kind],
            ["user_uri", "message_id", "kind"],
            dialect,
        )
        self.enqueue = outbox.SyncEnqueue(dialect)
        self.statements = 0
        """Statements run (the benchmark counts them; SQLAlchemy events do not see them)."""

    def write(
        self,
        conn: sa.Connection,
        db: InThreadSession,
        sessions: dict[str, tuple[ChatSession, bool]],
        messages: dict[int, _MessageWrite],
        notes: list[dict[str, Any]],
        people: _ParticipantWrites | None = None,
        owed: _OwedWrites | None = None,
    ) -> list[Notification]:
        """Send buffered writes into the open transaction; the notifications stored.

        Group participants are upserted after the sessions they belong to (their
        foreign key), one ``executemany`` for the batch: a group of 100 joining sends
        every member's view of every join, about n² rows.
        """
        owner = self.owner
        new_s = [
            {"id": cs.id, "owner": owner, **_session_values(cs)}
            for cs, new in sessions.values()
            if new
        ]
        old_s = [{"id": cs.id, **_session_values(cs)} for cs, new in sessions.values() if not new]
        new_m = [
            _message_row(w.msg, w.updated_at, w.expires_at, owner)
            for w in messages.values()
            if w.expires_at is not None
        ]
        old_m = [
            {
                "seq": w.msg.seq,
                "status": w.msg.status,
                "updated_at": w.updated_at,
                "session_id": w.msg.session_id,
            }
            for w in messages.values()
            if w.expires_at is None
        ]
        owe: list[dict[str, Any]] = []
        taken: list[dict[str, Any]] = []
        for report, when in (owed or {}).items():
            if when is None:
                taken.append(
                    {
                        "user_uri": report.user,
                        "message_id": report.message_id,
                        "kind": report.kind.value,
                    }
                )
            else:
                owe.extend(owed_rows([report], when))
        for statement, rows in (
            (self.new_session, new_s),
            (self.save_session, old_s),
            (self.new_message, new_m),
            (self.message_status, old_m),
            (self.owe, owe),
            (self.taken, taken),
        ):
            if rows:
                statement.run(conn, rows)
                self.statements += 1
        members = [
            {
                "session_id": sid,
                "address": p.address,
                "name": p.name,
                "status": p.status.value,
                "is_originator": p.is_originator,
                "updated_at": now,
            }
            for sid, entries in (people or {}).items()
            for p, now in entries.values()
        ]
        if members:
            self.participant.run(conn, members)
            self.statements += 1
        raw = conn.connection.dbapi_connection
        assert raw is not None
        self.statements += len(notes)
        return [self.enqueue.run(raw, **note) for note in notes]
