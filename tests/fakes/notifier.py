"""A recording ``bridge.ports.Notifier``: keeps what was woken, delivers on demand.

The chat side enqueues notifications in its own transaction (the real outbox
table) and calls :meth:`RecordingNotifier.wake`; this fake records them in
order, and :meth:`RecordingNotifier.deliver` plays "the app got it" by
awaiting the delivery listeners, as ``rest.delivery`` does after a 2xx.
"""

from __future__ import annotations

from bridge.ids import SubscriptionId, UserUri
from bridge.ports import DeliveryListener, JSONObject, Notification
from state import outbox
from state.db import Database


class RecordingNotifier:
    """``Notifier`` that records every woken notification."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.woken: list[Notification] = []
        self.listeners: list[DeliveryListener] = []

    async def publish(
        self,
        *,
        user: UserUri,
        subscription_id: SubscriptionId,
        notify_url: str,
        root: str,
        body: JSONObject,
    ) -> Notification:
        async with self.database.sessions.begin() as session:
            item = await outbox.enqueue(
                session,
                user=user,
                subscription_id=subscription_id,
                notify_url=notify_url,
                root=root,
                body=body,
            )
        self.wake(item)
        return item

    def wake(self, *queued: Notification) -> None:
        self.woken.extend(queued)

    def add_listener(self, listener: DeliveryListener) -> None:
        self.listeners.append(listener)

    def remove_listener(self, listener: DeliveryListener) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)

    async def deliver(self, n: Notification) -> None:
        """Tell the listeners that ``n`` reached the app."""
        for listener in list(self.listeners):
            await listener(n)

    def of(self, user: str, root: str | None = None) -> list[Notification]:
        """The woken notifications of ``user`` (with ``root``), in order."""
        return [n for n in self.woken if n.user == user and (root is None or n.root == root)]

    def take(self) -> list[Notification]:
        """Everything woken so far; forget it."""
        items, self.woken = self.woken, []
        return items
