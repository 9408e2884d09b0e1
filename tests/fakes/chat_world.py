"""A chat test world: the assembled chat over SQLite, a recording notifier, fake SIP."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.chat.assembly import ChatBridge, build_chat
from bridge.chat.core import utcnow
from bridge.config import Settings
from bridge.ids import UserUri
from bridge.ports import Notification
from bridge.subscriptions import NewSubscription, Subscription
from rest.models import NOTIFICATION_MODELS, parse_document
from rest.uris import ServerRoot
from state import repository
from state.chat_store import SQLChatStore
from state.db import Database
from tests.fakes.notifier import RecordingNotifier
from tests.fakes.signalling import FakeSignalling

ROOT = "http://api.test"
A = UserUri("tel:+15551230001")
B = UserUri("tel:+15551230002")
C = UserUri("sip:carol@ims.test")


def chat_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "server_root": ROOT,
        "chat_ringing_timeout": 30.0,
        "chat_invite_timeout": 30.0,
        "chat_idle_timeout": 30.0,
        "notify_allow_loopback": True,  # receivers on 127.0.0.1 (docs/notify-policy.md)
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class World:
    """The chat service (``build_chat``) with its store, a recording notifier and a fake."""

    db: Database
    settings: Settings
    chat: ChatBridge
    notifier: RecordingNotifier
    sip: FakeSignalling

    async def subscribe(
        self, user: UserUri, *, confirmed: bool = True, adhoc: bool = False, path: str = ""
    ) -> Subscription:
        new = NewSubscription(
            user=user,
            notify_url=f"http://app.test/{path or user}",
            callback_data=f"cb-{user}",
            confirmed_chat_supported=confirmed,
            adhoc_chat_supported=adhoc,
        )
        async with self.db.sessions.begin() as session:
            sub, _ = await repository.create_subscription(session, new, datetime.now(UTC))
        return sub

    async def settle(self) -> None:
        await self.sip.settle(self.chat.core)

    def notes(self, user: UserUri, root: str | None = None) -> list[dict[str, Any]]:
        """The bodies woken for ``user`` (validated against the REST models)."""
        return [validate(n) for n in self.notifier.of(user, root)]


def validate(n: Notification) -> dict[str, Any]:
    """Check a notification against its pydantic model; return its body."""
    parse_document(n.document(), NOTIFICATION_MODELS[n.root])
    return dict(n.body)


async def make_world(db: Database, sip: FakeSignalling | None = None, **overrides: Any) -> World:
    settings = chat_settings(**overrides)
    notifier = RecordingNotifier(db)
    fake = sip or FakeSignalling()
    chat = build_chat(
        settings=settings,
        store=SQLChatStore(db),
        notifier=notifier,
        signalling=fake,
        urls=ServerRoot(ROOT),
        clock=utcnow,
    )
    await chat.start()
    return World(db, settings, chat, notifier, fake)
