"""Notification Channel resources (OMA NotificationChannel v1.0) and the delivery worker's lifetime.

Routes under ``{serverRoot}/notificationchannel/v1/{userId}/channels``:

=========================================  ======  ==========================================
path                                       verb    answer
=========================================  ======  ==========================================
``/channels``                              POST    201 + Location + ``notificationChannel``
                                                   (200 + the existing one on a repeated
                                                   ``clientCorrelator``)
``/channels``                              GET     200 ``notificationChannelList``
``/channels/{channelId}``                  GET     200 ``notificationChannel``
``/channels/{channelId}``                  DELETE  204 (queue and the subscriptions whose
                                                   notifyURL is its callbackURL go too)
``/channels/{channelId}/poll``             POST    long poll: 200 ``notificationList``
                                                   (``channelURL``)
``/channels/{channelId}/callback``         any     403 (``callbackURL``: only a notifyURL;
                                                   notifications are queued internally)
=========================================  ======  ==========================================

Other verbs on these paths answer 405 with ``Allow``; an unknown, deleted or
expired channel answers 404. ``channelLifetime`` is granted as asked within
``channel_min_lifetime`` and ``channel_max_lifetime`` (``channel_default_lifetime``
when absent; :func:`grant_lifetime`): the create answer carries the granted
seconds, later reads the seconds left. A long poll never outlives its channel:
it answers (``[]`` if nothing is queued) at the latest
``rest.delivery.POLL_EXPIRY_MARGIN`` seconds before the channel expires, and
the next poll gets 404; ``maxNotifications`` likewise, capped at
``channel_max_notifications``. A user holds at most
:data:`MAX_CHANNELS_PER_USER` live channels (403 POL0001 beyond).

``setup`` also creates the :class:`rest.delivery.DeliveryService`, stores it in
:data:`NOTIFIER` (the ``Notifier`` port, for the chat side) and
:data:`DELIVERY`, and starts and stops it through ``cleanup_ctx``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from bridge.config import Settings
from bridge.ports import Notifier
from rest import xmlbody
from rest.app import DATABASE, NOTIFY_POLICY, SERVER_ROOT, SETTINGS
from rest.auth import acting_user
from rest.body import JSON, parse_body, respond
from rest.channel_models import (
    CHANNEL_LIST_ROOT,
    CHANNEL_ROOT,
    LONG_POLLING_DATA_TYPE,
    NOTIFICATION_LIST_ROOT,
    LongPollingData,
    NotificationChannel,
    NotificationChannelList,
)
from rest.delivery import DeliveryService
from rest.errors import FORMAT_KEY, forbidden, invalid_input, not_found
from rest.observability import METRICS
from rest.uris import ServerRoot
from rest.xmlbody import XML
from state import channels, outbox

NOTIFIER: web.AppKey[Notifier] = web.AppKey("notifier")
"""The ``Notifier`` port: publish notifications, wake delivery, listen for delivered ones."""
DELIVERY = web.AppKey("delivery", DeliveryService)
"""The concrete delivery worker (channels, tests and the bench use its extra methods)."""

POLL = "poll"
CALLBACK = "callback"
log = logging.getLogger(__name__)

MAX_CHANNELS_PER_USER = 50
"""Live channels one user may hold; one more is refused with 403 POL0001."""


def grant_lifetime(asked: int | None, settings: Settings) -> int:
    """The ``channelLifetime`` granted: ``asked`` (or the default) within the configured bounds."""
    wanted = asked or settings.channel_default_lifetime
    return max(settings.channel_min_lifetime, min(wanted, settings.channel_max_lifetime))


def _render(root: ServerRoot, channel: channels.Channel, seconds_left: int) -> NotificationChannel:
    return NotificationChannel(
        client_correlator=channel.client_correlator,
        application_tag=channel.application_tag,
        channel_type="LongPolling",
        channel_data=LongPollingData(
            channel_url=root.channels(channel.user, channel.id, POLL),
            max_notifications=channel.max_notifications,
            type=LONG_POLLING_DATA_TYPE,
        ),
        channel_lifetime=seconds_left,
        callback_url=channel.callback_url,
        resource_url=root.channels(channel.user, channel.id),
    )


async def create_channel(request: web.Request) -> web.Response:
    """``POST .../channels``: create a LongPolling channel."""
    user = acting_user(request)
    settings = request.app[SETTINGS]
    root = request.app[SERVER_ROOT]
    body = await parse_body(request, NotificationChannel, CHANNEL_ROOT, form=True)
    assert body is not None
    lifetime = grant_lifetime(body.channel_lifetime, settings)
    asked = body.channel_data.max_notifications if body.channel_data else None
    max_notifications = min(
        asked or settings.channel_max_notifications, settings.channel_max_notifications
    )
    channel_id = channels.new_channel_id()
    new = channels.NewChannel(
        id=channel_id,
        user=user,
        channel_type=body.channel_type,
        client_correlator=body.client_correlator,
        application_tag=body.application_tag,
        max_notifications=max_notifications,
        lifetime=lifetime,
        callback_url=root.channels(user, channel_id, CALLBACK),
    )
    now = outbox.utcnow()
    async with outbox.write_session(request.app[DATABASE]) as session:
        live = await channels.list_channels(session, user, now=now)
        replay = body.client_correlator is not None and any(
            c.client_correlator == body.client_correlator for c in live
        )
        if not replay and len(live) >= MAX_CHANNELS_PER_USER:
            raise forbidden(f"too many notification channels (limit {MAX_CHANNELS_PER_USER})")
        channel, created = await channels.create_channel(session, new, now=now)
    answer = _render(root, channel, channel.remaining(now))
    location = answer.resource_url or ""
    return respond(
        request,
        CHANNEL_ROOT,
        answer,
        status=201 if created else 200,
        headers={"Location": location},
    )


async def list_channels(request: web.Request) -> web.Response:
    """``GET .../channels``: every live channel of the user."""
    user = acting_user(request)
    root = request.app[SERVER_ROOT]
    now = outbox.utcnow()
    async with request.app[DATABASE].sessions() as session:
        found = await channels.list_channels(session, user, now=now)
    answer = NotificationChannelList(
        notification_channel=[_render(root, c, c.remaining(now)) for c in found],
        resource_url=root.channels(user),
    )
    return respond(request, CHANNEL_LIST_ROOT, answer)


async def _live_channel(request: web.Request) -> channels.Channel:
    user = acting_user(request)
    async with request.app[DATABASE].sessions() as session:
        channel = await channels.get_channel(
            session, user, request.match_info["channelId"], now=outbox.utcnow()
        )
    if channel is None:
        raise not_found(request.path)
    return channel


async def read_channel(request: web.Request) -> web.Response:
    """``GET .../channels/{channelId}``: one channel."""
    channel = await _live_channel(request)
    answer = _render(request.app[SERVER_ROOT], channel, channel.remaining(outbox.utcnow()))
    return respond(request, CHANNEL_ROOT, answer)


async def delete_channel(request: web.Request) -> web.Response:
    """``DELETE .../channels/{channelId}``: remove it, its queue and its subscriptions."""
    user = acting_user(request)
    channel_id = request.match_info["channelId"]
    now = outbox.utcnow()
    async with outbox.write_session(request.app[DATABASE]) as session:
        live = await channels.get_channel(session, user, channel_id, now=now)
        if live is None:
            raise not_found(request.path)
        await channels.delete_channel(session, user, channel_id)
    request.app[DELIVERY].channel_gone(channel_id)
    return web.Response(status=204)


def client_gone(request: web.Request) -> Callable[[], bool]:
    """A check that is true once the poller's connection is closing."""
    transport = request.transport
    return lambda: transport is None or transport.is_closing()


async def long_poll(request: web.Request) -> web.StreamResponse:
    """``POST {channelURL}``: queued notifications, or ``[]`` after the poll timeout.

    The items leave the queue only once the response is written; a poller that
    hung up before gets them again on its next poll (at least once).
    """
    data = await request.read()
    if data.strip():  # ignored, but it must be well-formed
        try:
            if xmlbody.is_xml(request.content_type):
                xmlbody.parse_xml(data)
            else:
                json.loads(data)
        except xmlbody.XMLBodyError as exc:
            raise invalid_input("body", str(exc)) from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise invalid_input("body", f"malformed JSON: {exc}") from exc
    channel = await _live_channel(request)
    delivery = request.app[DELIVERY]
    xml = request.get(FORMAT_KEY) == XML
    response = web.Response(
        content_type=XML if xml else JSON, headers={"Cache-Control": "no-store"}
    )
    try:
        async with delivery.hand_out(
            channel,
            request.app[SETTINGS].channel_poll_timeout,
            client_gone=client_gone(request),
        ) as items:
            if items is None:
                raise not_found(request.path)
            documents = [n.document() for n in items]
            if xml:
                response.body = xmlbody.render(NOTIFICATION_LIST_ROOT, documents)
            else:
                response.body = json.dumps({NOTIFICATION_LIST_ROOT: documents}).encode()
            await response.prepare(request)
            await response.write_eof()
    except ConnectionResetError:
        # the items went back to the queue; aiohttp finishes the dead connection quietly
        log.debug("x poller of channel %s hung up before its answer was written", channel.id)
    return response


async def refuse_callback(request: web.Request) -> web.Response:
    """Any verb on a ``callbackURL``: 403, notifications are only queued internally."""
    await _live_channel(request)
    raise forbidden("a callbackURL only serves as a subscription's notifyURL")


def setup(app: web.Application, prefix: str) -> None:
    """Add the channel routes under ``prefix`` and the delivery worker to ``app``."""
    root = app[SERVER_ROOT]
    delivery = DeliveryService(
        app[SETTINGS],
        app[DATABASE],
        own_channel_prefix=f"{root.root}/notificationchannel/",
        policy=app[NOTIFY_POLICY],
        counters=app[METRICS].delivery if METRICS in app else None,
    )
    app[DELIVERY] = delivery
    app[NOTIFIER] = delivery
    base = f"{prefix}/notificationchannel/{ServerRoot.CHANNEL_VERSION}/{{userId}}/channels"
    app.router.add_post(base, create_channel)
    app.router.add_get(base, list_channels)
    app.router.add_get(base + "/{channelId}", read_channel)
    app.router.add_delete(base + "/{channelId}", delete_channel)
    app.router.add_post(base + "/{channelId}/" + POLL, long_poll)
    app.router.add_route("*", base + "/{channelId}/" + CALLBACK, refuse_callback)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        await delivery.start()
        yield
        await delivery.stop()

    app.cleanup_ctx.append(lifetime)
