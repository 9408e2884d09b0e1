"""Issue 13 defect 7: the notifyURL policy (docs/notify-policy.md).

At subscription time (400 SVC0002 with the reason), in the delivery client
(resolved addresses checked, connection to the checked address), and in the
delivery worker (a refused destination is dropped, never retried).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bridge.config import Settings
from bridge.ids import SubscriptionId, UserUri
from rest.app import NOTIFY_POLICY, make_app
from rest.delivery import DeliveryService
from rest.http_client import NotifyClient, NotifyRefused
from rest.notify_policy import NotifyPolicy, PolicyError, address_problem
from state.db import Database
from tests.unit.test_delivery_support import Receiver, fast_settings

SUBS = "/chat/v1/tel%3A%2B15555550032/subscriptions"
USER = UserUri("tel:+15555550032")
PART = "chatNotificationSubscription.callbackReference.notifyURL"

Client = TestClient[web.Request, web.Application]


# --- the rule ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/", "http or https"),
        ("javascript:alert(1)", "http or https"),
        ("http:///path", "no host"),
        ("http://user:pw@example.com/", "user-info"),
        ("https://token@example.com/", "user-info"),
        ("http://example.com:0/", "port 0"),
        ("http://example.com:99999/", "not a valid URL"),
        ("http://127.0.0.1:22/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://0.0.0.0:8080/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://2130706433/", "non-canonical"),
        ("http://0x7f000001/", "non-canonical"),
        ("http://127.1/", "non-canonical"),
        ("http://0177.0.0.1/", "non-canonical"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://10.0.0.1/", "private-use"),
        ("http://172.16.5.4/", "private-use"),
        ("http://192.168.1.1/", "private-use"),
        ("http://[fd00::1]/", "private-use"),
        ("http://100.64.0.1/", "shared"),
        ("http://224.0.0.1/", "multicast"),
        ("http://[ff02::1]/", "multicast"),
        ("http://240.0.0.1/", "not allowed"),
        ("http://255.255.255.255/", "not allowed"),
        ("http://[64:ff9b::a9fe:a9fe]/", "link-local"),  # NAT64 of 169.254.169.254
        ("http://[2002:7f00:1::]/", "loopback"),  # 6to4 of 127.0.0.1
    ],
)
def test_refused_urls(url: str, why: str) -> None:
    with pytest.raises(PolicyError, match=why):
        NotifyPolicy().check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.215.14/cb",
        "https://example.com/cb?x=1",
        "HTTPS://Example.COM:8443/cb",
        "http://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/",
        "http://1e100.net/",
        "http://deadbeef/",  # a name, not a number
    ],
)
def test_accepted_urls(url: str) -> None:
    NotifyPolicy().check_url(url)


def test_operator_allowances() -> None:
    policy = NotifyPolicy(
        allowed_networks=["10.1.0.0/16", "169.254.10.10"], allowed_hosts=["Hooks.Internal"]
    )
    policy.check_url("http://10.1.2.3/")
    policy.check_url("http://169.254.10.10/")
    with pytest.raises(PolicyError, match="private-use"):
        policy.check_url("http://10.2.0.1/")
    with pytest.raises(PolicyError, match="link-local"):
        policy.check_url("http://169.254.169.254/")
    policy.check_address("hooks.internal.", ipaddress.ip_address("192.168.0.9"), 80)
    # never: unspecified and multicast, even if listed
    broad = NotifyPolicy(allowed_networks=["0.0.0.0/0"])
    broad.check_url("http://192.168.0.1/")
    with pytest.raises(PolicyError, match="unspecified"):
        broad.check_url("http://0.0.0.0/")
    with pytest.raises(PolicyError, match="multicast"):
        broad.check_url("http://239.1.1.1/")


def test_own_listeners_are_refused_even_where_loopback_is_allowed() -> None:
    policy = NotifyPolicy(allow_loopback=True)
    policy.add_listener("127.0.0.1", 8080)
    policy.add_listener("203.0.113.7", 5070)
    policy.check_url("http://127.0.0.1:9000/")
    for url in (
        "http://127.0.0.1:8080/chat/v1/x",
        "http://127.9.9.9:5070/",
        "http://[::1]:8080/",
        "http://0.0.0.0:8080/",
        "http://203.0.113.7:5070/",
    ):
        with pytest.raises(PolicyError, match="listener of this bridge"):
            policy.check_url(url)


def test_settings_default_allows_loopback_only_on_the_local_development_set_up() -> None:
    assert Settings().notify_loopback_allowed  # loopback listener, no credentials
    public = Settings(
        http_host="0.0.0.0",
        credentials=[{"kind": "bearer", "token": "t", "users": ["*"]}],  # type: ignore[list-item]
    )
    assert not public.notify_loopback_allowed
    assert not Settings(credentials=public.credentials).notify_loopback_allowed
    assert not Settings(notify_allow_loopback=False).notify_loopback_allowed
    assert Settings(http_host="0.0.0.0", notify_allow_loopback=True).notify_loopback_allowed
    with pytest.raises(ValueError, match="notify_allowed_networks"):
        Settings(notify_allowed_networks=["10.0.0.0/33"])


def test_address_problem_of_public_addresses() -> None:
    assert address_problem(ipaddress.ip_address("8.8.8.8")) is None
    assert address_problem(ipaddress.ip_address("::ffff:8.8.8.8")) is None
    assert address_problem(ipaddress.ip_address("2001:4860:4860::8888")) is None


# --- at subscription time -----------------------------------------------------------


@pytest.fixture
async def db(tmp_path) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'store.db'}")
    await database.migrate()
    yield database
    await database.close()


async def subscribe(client: Client, notify_url: str) -> tuple[int, Any]:
    resp = await client.post(
        SUBS,
        json={"chatNotificationSubscription": {"callbackReference": {"notifyURL": notify_url}}},
    )
    return resp.status, await resp.json()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:22/", "loopback"),
        ("http://localhost:9/", "loopback"),  # a name: judged by what it resolves to
        ("http://2130706433/", "non-canonical"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://user:secret@example.com/cb", "user-info"),
        ("http://0.0.0.0:8081/", "unspecified"),
        ("gopher://example.com/", "http or https"),
    ],
)
async def test_subscription_refused_with_the_reason(
    db: Database, aiohttp_client: Any, url: str, why: str
) -> None:
    settings = Settings(database_url=str(db.url), notify_allow_loopback=False)
    client: Client = await aiohttp_client(make_app(settings, db))
    status, doc = await subscribe(client, url)
    assert status == 400, doc
    fault = doc["requestError"]["serviceException"]
    assert fault["messageId"] == "SVC0002"
    assert fault["variables"][0] == PART
    assert why in fault["variables"][1]


async def test_subscription_to_the_bridge_itself_refused_on_the_development_set_up(
    db: Database, aiohttp_client: Any
) -> None:
    settings = Settings(database_url=str(db.url))  # loopback, no credentials: loopback allowed
    app = make_app(settings, db)
    client: Client = await aiohttp_client(app)
    assert (await subscribe(client, "http://127.0.0.1:45678/cb"))[0] == 201
    status, doc = await subscribe(client, f"http://127.0.0.1:{settings.http_port}/chat/v1/x")
    assert status == 400
    assert "listener of this bridge" in doc["requestError"]["serviceException"]["variables"][1]
    app[NOTIFY_POLICY].add_listener("127.0.0.1", 45999)  # a port bound later (bridge.app)
    assert (await subscribe(client, "http://localhost:45999/cb"))[0] == 400


# --- when connecting ----------------------------------------------------------------


async def test_client_checks_resolved_addresses(receiver: Receiver) -> None:
    """A name resolving to a refused address (DNS rebinding) is refused at connect time."""
    url = f"http://localhost:{receiver.port}/cb"
    async with NotifyClient(policy=NotifyPolicy()) as client:
        with pytest.raises(NotifyRefused, match="loopback"):
            await client.post(url, b"{}", {"Content-Type": "application/json"})
    assert receiver.requests == 0
    async with NotifyClient(policy=NotifyPolicy(allow_loopback=True)) as client:
        assert await client.post(url, b"{}", {"Content-Type": "application/json"}) == 204
        assert client.stats.opened == 1


async def test_client_connects_to_the_address_it_checked(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second look-up a rebinding attack relies on never happens: one resolve per connect."""
    answers = iter(["127.0.0.1", "10.9.9.9"])
    calls = 0

    async def resolve(host: str, port: int) -> list[Any]:
        nonlocal calls
        calls += 1
        return [ipaddress.ip_address(next(answers))]

    policy = NotifyPolicy(allow_loopback=True)
    monkeypatch.setattr(policy, "resolve", resolve)
    async with NotifyClient(policy=policy, keepalive_timeout=0) as client:
        url = f"http://rebind.test:{receiver.port}/cb"
        assert await client.post(url, b"{}", {"Content-Type": "application/json"}) == 204
        with pytest.raises(NotifyRefused, match="private-use"):
            await client.post(url, b"{}", {"Content-Type": "application/json"})
    assert calls == 2 and receiver.requests == 1


def _own_address() -> str | None:
    """A non-loopback address of this host, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


async def test_client_refuses_a_connection_back_to_this_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An address of this host (say, its public one) counts as loopback once connected."""
    address = _own_address()
    if address is None:
        pytest.skip("no non-loopback address")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "0.0.0.0", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for policy, why in (
            (NotifyPolicy(), "an address of this host"),
            (NotifyPolicy(allow_loopback=True), "listener of this bridge"),
        ):
            # as if ``address`` were public: only the connect-time check can tell
            monkeypatch.setattr(policy, "check_address", lambda *args: None)
            policy.own_ports.add(port)  # a wildcard listener of the bridge
            if why != "listener of this bridge":
                policy.own_ports.discard(port)
            async with NotifyClient(policy=policy) as client:
                with pytest.raises(NotifyRefused, match=why):
                    await client.post(f"http://{address}:{port}/", b"{}")
    finally:
        server.close()
        await server.wait_closed()


async def test_delivery_drops_a_refused_destination_at_once(tmp_path, receiver: Receiver) -> None:
    db = Database(f"sqlite:///{tmp_path / 'd.db'}")
    await db.migrate()
    settings = fast_settings(str(db.url), notify_allow_loopback=False)
    service = DeliveryService(settings, db)
    await service.start()
    try:
        await service.publish(
            user=USER,
            subscription_id=SubscriptionId("s1"),
            notify_url=receiver.url(),
            root="m",
            body={"x": 1},
        )
        for _ in range(200):
            if service.stats.refused:
                break
            await asyncio.sleep(0.01)
        assert service.stats.refused == 1 and service.stats.dropped == 1
        assert service.stats.failed_attempts == 0 and receiver.requests == 0
    finally:
        await service.stop()
        await db.close()
