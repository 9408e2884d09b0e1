"""Chat notification subscriptions as the bridge sees them (OMA ChatNotificationSubscription).

A subscription tells the bridge where to POST the notifications of one user
(``notify_url``) and how incoming 1-1 invitations are handled
(``confirmed_chat_supported``: the app accepts or declines itself;
``adhoc_chat_supported``: the bridge auto-accepts and messages arrive with
sessionId ``adhoc``). The REST edge converts the pydantic models into these
frozen dataclasses; ``state.repository`` stores and returns them, so nothing
here knows about aiohttp, pydantic or SQLAlchemy.

Lifetime: ``duration`` is the granted number of seconds (0 = until deleted).
:func:`grant_duration` applies the configured default and maximum; a
subscription whose ``expires_at`` has passed is treated as gone everywhere
(404 on access, never notified) and is removed by the periodic sweeper.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bridge.ids import SubscriptionId, UserUri


class NotificationFormat(str, enum.Enum):
    """Body format of the notifications (OMA REST_NetAPI_Common CallbackReference)."""

    XML = "XML"
    JSON = "JSON"


SUPPORTED_FORMATS = (NotificationFormat.JSON, NotificationFormat.XML)
"""Formats the notifier produces (``rest.delivery``; XML per docs/rest-formats.md)."""


@dataclass(frozen=True)
class NewSubscription:
    """A validated create request, before the store assigns an id."""

    user: UserUri
    notify_url: str
    callback_data: str | None = None
    notification_format: NotificationFormat = NotificationFormat.JSON
    client_correlator: str | None = None
    duration: int = 0
    """Granted lifetime in seconds (already passed through :func:`grant_duration`)."""
    confirmed_chat_supported: bool = True
    adhoc_chat_supported: bool = False


@dataclass(frozen=True)
class Subscription:
    """A stored chat notification subscription."""

    id: SubscriptionId
    user: UserUri
    notify_url: str
    callback_data: str | None
    notification_format: NotificationFormat
    client_correlator: str | None
    duration: int
    created_at: datetime
    expires_at: datetime | None
    confirmed_chat_supported: bool
    adhoc_chat_supported: bool

    def is_active(self, now: datetime) -> bool:
        """True until ``expires_at`` (always for an unlimited subscription)."""
        return self.expires_at is None or now < self.expires_at

    def remaining(self, now: datetime) -> int:
        """Seconds left (rounded up), 0 for an unlimited subscription."""
        if self.expires_at is None:
            return 0
        return max(0, math.ceil((self.expires_at - now).total_seconds()))


def grant_duration(requested: int | None, default: int, maximum: int) -> int:
    """The lifetime granted for ``requested`` seconds (0 = until deleted).

    An absent or 0 request gets ``default``; any value is capped by ``maximum``
    when a maximum is configured (so "unlimited" becomes the maximum).
    """
    if requested is not None and requested < 0:
        raise ValueError("duration must not be negative")
    granted = default if not requested else requested
    if maximum and (granted == 0 or granted > maximum):
        granted = maximum
    return granted


def expiry(now: datetime, duration: int) -> datetime | None:
    """The instant a subscription granted ``duration`` seconds at ``now`` expires."""
    return None if duration == 0 else now + timedelta(seconds=duration)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (the only clock read of this module)."""
    return datetime.now(UTC)
