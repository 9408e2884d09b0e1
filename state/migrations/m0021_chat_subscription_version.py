"""Schema 21: ``chat_subscription_version``, bumped by every change to ``chat_subscriptions``.

The chat store on SQLite keeps the subscriptions it has read in memory and
compares this one number, once per group-commit batch, to know whether any
subscription was created, changed or deleted since (by any connection). The
triggers keep it exact without the REST side knowing. SQLite only: on
PostgreSQL the chat store reads subscriptions in every transaction.
"""

from __future__ import annotations

import sqlalchemy as sa

VERSION = 21

_BUMP = "UPDATE chat_subscription_version SET version = version + 1 WHERE id = 1"


def upgrade(conn: sa.Connection) -> None:
    """Create the version row and the INSERT/UPDATE/DELETE triggers (SQLite)."""
    if conn.dialect.name != "sqlite":
        return
    conn.execute(
        sa.text(
            "CREATE TABLE chat_subscription_version ("
            " id INTEGER PRIMARY KEY CHECK (id = 1),"
            " version BIGINT NOT NULL)"
        )
    )
    conn.execute(sa.text("INSERT INTO chat_subscription_version (id, version) VALUES (1, 0)"))
    for what in ("INSERT", "UPDATE", "DELETE"):
        conn.execute(
            sa.text(
                f"CREATE TRIGGER trg_chat_subscriptions_{what.lower()}_version"
                f" AFTER {what} ON chat_subscriptions"
                f" BEGIN {_BUMP}; END"
            )
        )
