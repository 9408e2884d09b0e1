"""Chat notification subscriptions: R1 and R2 of docs/protocol-mapping.md "Resources".

``POST …/subscriptions`` answers 201 + ``Location`` + the full resource with its
``resourceURL``; replaying the same ``clientCorrelator`` for the same user
answers 200 with the existing resource and creates nothing. ``duration`` is
granted by ``bridge.subscriptions.grant_duration`` (settings default and
maximum): the create answer carries the granted seconds, later reads the
seconds remaining; an unlimited subscription carries no ``duration``. An
expired subscription 404s at once and is removed by the sweeper task
(``cleanup_ctx``). ``notificationFormat`` ``XML`` has notifications POSTed in
XML (``rest.delivery``); absent, it is ``JSON``.

A ``notifyURL`` inside the bridge's own Notification Channel space
(``{serverRoot}/notificationchannel/``) must be the ``callbackURL`` of a live
channel of the same user, in any equivalent spelling
(``rest.uris.ServerRoot.channel_path``); it is stored, and echoed, as that
channel's ``callbackURL`` exactly, so notifications queue into the channel and
deleting the channel removes the subscription. Any other URL in that space is
refused with 400 SVC0002 saying why (no live channel of that id; another
user's channel; not a callbackURL).
Any other ``notifyURL`` must pass the notify policy (docs/notify-policy.md,
``rest.notify_policy``): http(s), no user-info, and a host whose every address
(as resolved now) is a public one, or one the operator allowed, and none of
the bridge's own listeners; else 400 SVC0002 with the reason. Delivery checks
the resolved addresses again when it connects.
``confirmedChatSupported`` defaults to true, ``adhocChatSupported`` to false.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from datetime import datetime

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.config import Settings
from bridge.ids import UserUri
from bridge.subscriptions import (
    SUPPORTED_FORMATS,
    NewSubscription,
    NotificationFormat,
    Subscription,
    grant_duration,
    utcnow,
)
from rest import auth
from rest.app import DATABASE, NOTIFY_POLICY, SERVER_ROOT, SETTINGS
from rest.body import parse_body, respond
from rest.errors import OMAFault, invalid_enum, invalid_input, not_found
from rest.handlers.channels import DELIVERY
from rest.models import (
    CHAT_NOTIFICATION_SUBSCRIPTION,
    CHAT_SUBSCRIPTION_LIST,
    CallbackReference,
    ChatNotificationSubscription,
    ChatSubscriptionList,
)
from rest.notify_policy import PolicyError
from rest.uris import ServerRoot
from state import channels, outbox
from state import repository as repo
from state.db import Database

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 30.0
"""Seconds between two sweeps of expired subscriptions."""
SWEEP_STOP_TIMEOUT = 10.0
"""Seconds an application shutdown waits for a sweep in progress."""
MAX_SUBSCRIPTIONS_PER_USER = 64
"""Beyond this a create answers 403 POL0005 (too many notification requests)."""


def subscription_view(
    sub: Subscription, root: ServerRoot, now: datetime, *, created: bool = False
) -> ChatNotificationSubscription:
    """The REST representation of ``sub`` (granted duration if just created, else remaining)."""
    duration: int | None = None
    if sub.expires_at is not None:
        duration = sub.duration if created else sub.remaining(now)
    return ChatNotificationSubscription(
        callback_reference=CallbackReference(
            notify_url=sub.notify_url,
            callback_data=sub.callback_data,
            notification_format=sub.notification_format,
        ),
        duration=duration,
        client_correlator=sub.client_correlator,
        confirmed_chat_supported=sub.confirmed_chat_supported,
        adhoc_chat_supported=sub.adhoc_chat_supported,
        resource_url=root.chat(sub.user, "subscriptions", sub.id),
    )


NOTIFY_URL_PART = f"{CHAT_NOTIFICATION_SUBSCRIPTION}.callbackReference.notifyURL"


async def _channel_notify_url(
    request: web.Request, session: AsyncSession, user: UserUri, url: str, now: datetime
) -> str:
    """``url``, or the exact ``callbackURL`` of the live channel of ``user`` it designates.

    400 SVC0002 for a URL in the bridge's channel space that is no live
    channel's callbackURL of ``user`` (it would silently drop every notification).
    """
    target = request.app[SERVER_ROOT].channel_path(url)
    if target is None:
        return url
    if not target.callback or target.user is None or target.channel_id is None:
        raise invalid_input(
            NOTIFY_URL_PART,
            "a URL in this bridge's notification channel space must be a channel's callbackURL",
        )
    if target.user != user:
        raise invalid_input(
            NOTIFY_URL_PART,
            f"is the callbackURL of a notification channel of another user ({target.user})",
        )
    channel = await channels.get_channel(session, user, target.channel_id, now=now)
    if channel is None:
        raise invalid_input(
            NOTIFY_URL_PART,
            f"names no live notification channel of {user} ({target.channel_id}):"
            " create the channel first and use its callbackURL",
        )
    return channel.callback_url


async def create_subscription(request: web.Request) -> web.Response:
    """``POST {userId}/subscriptions``: 201 + Location, or 200 on a correlator replay."""
    user = auth.acting_user(request)
    body = await parse_body(
        request, ChatNotificationSubscription, CHAT_NOTIFICATION_SUBSCRIPTION, form=True
    )
    assert body is not None
    settings: Settings = request.app[SETTINGS]
    fmt = body.callback_reference.notification_format or NotificationFormat.JSON
    if fmt not in SUPPORTED_FORMATS:
        raise invalid_enum(
            f"{CHAT_NOTIFICATION_SUBSCRIPTION}.callbackReference.notificationFormat",
            [f.value for f in SUPPORTED_FORMATS],
        )
    new = NewSubscription(
        user=user,
        notify_url=body.callback_reference.notify_url,
        callback_data=body.callback_reference.callback_data,
        notification_format=fmt,
        client_correlator=body.client_correlator,
        duration=grant_duration(
            body.duration,
            settings.subscription_default_duration,
            settings.subscription_max_duration,
        ),
        confirmed_chat_supported=(
            True if body.confirmed_chat_supported is None else body.confirmed_chat_supported
        ),
        adhoc_chat_supported=bool(body.adhoc_chat_supported),
    )
    if request.app[SERVER_ROOT].channel_path(new.notify_url) is None:
        try:  # outside the write transaction: it may resolve a host name
            await request.app[NOTIFY_POLICY].check_resolved(new.notify_url)
        except PolicyError as exc:
            raise invalid_input(NOTIFY_URL_PART, str(exc)) from None
    now = utcnow()
    db: Database = request.app[DATABASE]
    async with outbox.write_session(db) as session:
        notify_url = await _channel_notify_url(request, session, user, new.notify_url, now)
        if notify_url != new.notify_url:
            new = dataclasses.replace(new, notify_url=notify_url)
        if body.client_correlator is None or not await repo.find_subscription_by_correlator(
            session, user, body.client_correlator, now
        ):
            if len(await repo.list_subscriptions(session, user, now)) >= MAX_SUBSCRIPTIONS_PER_USER:
                raise OMAFault(403, "POL0005")
        sub, created = await repo.create_subscription(session, new, now)
    root: ServerRoot = request.app[SERVER_ROOT]
    view = subscription_view(sub, root, now, created=created)
    if not created:
        log.debug("- subscription %s replayed for correlator %r", sub.id, sub.client_correlator)
        return respond(request, CHAT_NOTIFICATION_SUBSCRIPTION, view)
    log.info("- subscription %s created for %s", sub.id, user)
    assert view.resource_url is not None
    return respond(
        request,
        CHAT_NOTIFICATION_SUBSCRIPTION,
        view,
        status=201,
        headers={"Location": view.resource_url},
    )


async def list_subscriptions(request: web.Request) -> web.Response:
    """``GET {userId}/subscriptions``: 200 ``chatSubscriptionList`` (empty list allowed)."""
    user = auth.acting_user(request)
    now = utcnow()
    async with request.app[DATABASE].sessions.begin() as session:
        subs = await repo.list_subscriptions(session, user, now)
    root: ServerRoot = request.app[SERVER_ROOT]
    body = ChatSubscriptionList(
        chat_notification_subscription=[subscription_view(s, root, now) for s in subs],
        resource_url=root.chat(user, "subscriptions"),
    )
    return respond(request, CHAT_SUBSCRIPTION_LIST, body)


async def read_subscription(request: web.Request) -> web.Response:
    """``GET {userId}/subscriptions/{subscriptionId}``: 200, or 404 if gone or expired."""
    user = auth.acting_user(request)
    now = utcnow()
    async with request.app[DATABASE].sessions.begin() as session:
        sub = await repo.get_subscription(session, user, request.match_info["subscriptionId"], now)
    if sub is None:
        raise not_found(request.path)
    view = subscription_view(sub, request.app[SERVER_ROOT], now)
    return respond(request, CHAT_NOTIFICATION_SUBSCRIPTION, view)


async def delete_subscription(request: web.Request) -> web.Response:
    """``DELETE {userId}/subscriptions/{subscriptionId}``: 204, or 404."""
    user = auth.acting_user(request)
    sub_id = request.match_info["subscriptionId"]
    async with outbox.write_session(request.app[DATABASE]) as session:
        deleted = await repo.delete_subscription(session, user, sub_id, utcnow())
        if deleted:  # its undelivered notifications go with it (H9)
            await outbox.drop_for_subscription(session, sub_id)
    if not deleted:
        raise not_found(request.path)
    if (delivery := request.app.get(DELIVERY)) is not None:
        delivery.subscription_gone(sub_id)  # H9: no more POSTs from a batch in flight
    log.info("- subscription %s deleted by %s", sub_id, user)
    return web.Response(status=204)


async def sweep_expired(db: Database, now: datetime) -> int:
    """Delete every expired subscription and its queued notifications; return how many."""
    async with outbox.write_session(db) as session:
        await outbox.drop_for_expired_subscriptions(session, now)  # H9: queued ones go too
        count = await repo.delete_expired_subscriptions(session, now)
    if count:
        log.info("- %d expired subscription(s) removed", count)
    return count


async def _sweeper(app: web.Application) -> AsyncIterator[None]:
    db = app[DATABASE]
    stop = asyncio.Event()

    async def loop() -> None:
        # waits on ``stop`` rather than being cancelled, so no sweep is cut mid-query
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SWEEP_INTERVAL)
                return
            try:
                await sweep_expired(db, utcnow())
            except Exception:  # keep sweeping: the next round may succeed
                log.exception("x subscription sweep failed")

    task = asyncio.create_task(loop(), name="subscription-sweeper")
    try:
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, SWEEP_STOP_TIMEOUT)
        except TimeoutError:
            log.warning("x subscription sweeper did not stop in %.0f s", SWEEP_STOP_TIMEOUT)


def setup(app: web.Application, prefix: str) -> None:
    """Add the subscription routes under ``prefix``."""
    base = f"{prefix}/chat/v1/{{userId}}/subscriptions"
    app.router.add_get(base, list_subscriptions)
    app.router.add_post(base, create_subscription)
    app.router.add_get(base + "/{subscriptionId}", read_subscription)
    app.router.add_delete(base + "/{subscriptionId}", delete_subscription)
    app.cleanup_ctx.append(_sweeper)
