"""Notification Channel data structures (OMA-TS-REST_NetAPI_NotificationChannel-V1_0).

Element names are the spec's: ``notificationChannel`` with ``clientCorrelator``,
``applicationTag``, ``channelType``, ``channelData`` (a ``LongPollingData``
tagged ``"type": "nc:LongPollingData"``), ``channelLifetime``, ``callbackURL``,
``resourceURL`` and ``link``; the list root is ``notificationChannelList``.
Numbers arrive native or quoted (``"maxNotifications": "40"``). Only the
``LongPolling`` channel type exists here; any other value is a 400 SVC0003.
On input the server-set elements (``channelURL``, ``callbackURL``,
``resourceURL``) are tolerated, as clients echo them, and ignored.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from rest.body import OMAModel

LONG_POLLING = "LongPolling"
LONG_POLLING_DATA_TYPE = "nc:LongPollingData"
CHANNEL_ROOT = "notificationChannel"
CHANNEL_LIST_ROOT = "notificationChannelList"
NOTIFICATION_LIST_ROOT = "notificationList"


class Link(OMAModel):
    """A typed link to a related resource (REST_NetAPI_Common ``Link``)."""

    rel: str
    href: str


class LongPollingData(OMAModel):
    """``channelData`` of a LongPolling channel."""

    channel_url: str | None = Field(default=None, alias="channelURL")
    max_notifications: int | None = Field(default=None, ge=1)
    type: Literal["nc:LongPollingData", "LongPollingData"] | None = None


class NotificationChannel(OMAModel):
    """Root ``notificationChannel``: a create request, or the resource as answered."""

    ROOT: ClassVar[str] = CHANNEL_ROOT
    client_correlator: str | None = Field(default=None, max_length=256)
    application_tag: str | None = Field(default=None, max_length=256)
    channel_type: Literal["LongPolling"]
    channel_data: LongPollingData | None = None
    channel_lifetime: int | None = Field(default=None, ge=1)
    callback_url: str | None = Field(default=None, alias="callbackURL")
    resource_url: str | None = Field(default=None, alias="resourceURL")
    link: list[Link] | None = None


class NotificationChannelList(OMAModel):
    """Root ``notificationChannelList``: every live channel of a user."""

    ROOT: ClassVar[str] = CHANNEL_LIST_ROOT
    notification_channel: list[NotificationChannel]
    resource_url: str = Field(alias="resourceURL")
