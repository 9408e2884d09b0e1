"""The queued chatMessageNotifications, read for chat restart recovery (``bridge.chat.recovery``).

Recovery sends the "delivered" IMDN of a received message whose notification
reached the app just before a crash. The outbox keeps a row until it is
delivered (or dropped), so a message whose notification row is still there
has not reached the app yet: its delivery listener will run later. This
module answers, read-only, which ``(user, messageId)`` pairs still have such
a row.
"""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa

from bridge.ids import MessageId, UserUri
from state.db import Database
from state.outbox import OutboxRow

CHAT_MESSAGE_ROOT = "chatMessageNotification"
_CHUNK = 500
"""Users per ``IN (...)`` list."""


class OutboxBacklog:
    """``bridge.chat.recovery.NotificationBacklog`` over the ``notification_outbox`` table."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def queued_message_notifications(
        self, users: Collection[UserUri]
    ) -> set[tuple[UserUri, MessageId]]:
        """``(user, messageId)`` of every queued chatMessageNotification of ``users``."""
        found: set[tuple[UserUri, MessageId]] = set()
        wanted = sorted(users)
        async with self.database.sessions() as session:
            for start in range(0, len(wanted), _CHUNK):
                rows = await session.execute(
                    sa.select(OutboxRow.user_uri, OutboxRow.body).where(
                        OutboxRow.root == CHAT_MESSAGE_ROOT,
                        OutboxRow.user_uri.in_(wanted[start : start + _CHUNK]),
                    )
                )
                for user, body in rows:
                    message_id = body.get("messageId") if isinstance(body, dict) else None
                    if isinstance(message_id, str):
                        found.add((UserUri(user), MessageId(message_id)))
        return found
