"""Ports: the protocols through which ``bridge/`` reaches the outside world.

The chat state machines depend on these protocols and frozen dataclasses only,
never on aiohttp, SQLAlchemy or the SIP transports (docs/architecture.md "Packages"). Adapters in
``rest/``, ``state/`` and ``sip/`` implement them.

Notifications (docs/decisions.md "Notification delivery")
--------------------------------------------------------
A :class:`Notification` is one single-root object (``{root: body}``) addressed
to one subscription's ``notifyURL``. It becomes durable before anyone is told
about it, in one of two ways:

* inside the caller's own transaction with ``state.outbox.enqueue(session, ...)``,
  so that chat state and the notification commit together; the caller then
  calls :meth:`Notifier.wake` with what it enqueued, after the commit;
* or with :meth:`Notifier.publish`, which commits on its own.

Delivery is at least once and in order per subscription: one HTTP POST per
notification to ``notify_url``, or, when ``notify_url`` is the ``callbackURL``
of a live Notification Channel, a place in that channel's queue (handed out by
a long poll). Listeners registered with :meth:`Notifier.add_listener` are
awaited once a notification has reached the application (callback answered
2xx, or a long poll handed it out); the chat side sends IMDN "delivered" from
there (docs/decisions.md "Delivery reports").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from bridge.ids import ChannelId, NotificationId, SubscriptionId, UserUri

JSONObject = Mapping[str, object]
"""The object under a notification's root element (JSON-serializable)."""


@dataclass(frozen=True)
class Notification:
    """One durable notification to one subscription (OMA REST Chat v1.0 notifications).

    ``body`` is the object under ``root`` (the chat side includes
    ``callbackData``); ``channel_id`` is set when the notification queues into a
    Notification Channel instead of being POSTed.
    """

    id: NotificationId
    user: UserUri
    subscription_id: SubscriptionId
    notify_url: str
    root: str
    body: JSONObject
    created_at: datetime
    channel_id: ChannelId | None = None
    encoded: bytes | None = field(default=None, compare=False, repr=False)
    """The document as JSON bytes, when the store serialised it already (else None)."""

    def document(self) -> dict[str, object]:
        """The single-root JSON document ``{root: body}``."""
        return {self.root: dict(self.body)}


DeliveryListener = Callable[[Notification], Awaitable[None]]
"""Awaited with each notification once it reached the application."""


class Notifier(Protocol):
    """Publishes notifications and reports their delivery.

    docs/decisions.md "Notification delivery".
    """

    async def publish(
        self,
        *,
        user: UserUri,
        subscription_id: SubscriptionId,
        notify_url: str,
        root: str,
        body: JSONObject,
    ) -> Notification:
        """Store one notification durably (own transaction) and schedule its delivery."""
        ...

    def wake(self, *queued: Notification) -> None:
        """Tell the delivery side that notifications were committed (all, if none given)."""
        ...

    def add_listener(self, listener: DeliveryListener) -> None:
        """Register a coroutine awaited with every delivered notification."""
        ...

    def remove_listener(self, listener: DeliveryListener) -> None:
        """Unregister a listener added with :meth:`add_listener` (no error if absent)."""
        ...
