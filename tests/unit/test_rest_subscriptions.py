"""REST: chat notification subscriptions (R1, R2), JSON conventions and fault paths."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest

from bridge.config import Settings
from bridge.subscriptions import utcnow
from rest import app as rest_app
from rest.handlers import subscriptions as handlers
from state.db import Database

ROOT = "http://api.test/exampleAPI"
ALICE_ENC = "tel%3A%2B15551230001"
BASE = f"/exampleAPI/chat/v1/{ALICE_ENC}/subscriptions"


def sub_body(**kw: Any) -> dict[str, Any]:
    body = {"callbackReference": {"notifyURL": "https://app.example/cb", "callbackData": "abc"}}
    body.update(kw)
    return {"chatNotificationSubscription": body}


@pytest.fixture
async def database(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'rest.db'}")
    await db.migrate()
    yield db
    await db.close()


@pytest.fixture
def settings() -> Settings:
    return Settings(server_root=ROOT, max_body_bytes=4096)


@pytest.fixture
async def client(database, settings, aiohttp_client):
    # `database` is requested first so that it is closed after the app (whose
    # background tasks still use the store while they stop)
    return await aiohttp_client(rest_app.make_app(settings, database))


def fault(body: dict[str, Any]) -> tuple[str, list[str]]:
    ((kind, detail),) = body["requestError"].items()
    assert kind in {"serviceException", "policyException"}
    assert set(detail) == {"messageId", "text", "variables"}
    return detail["messageId"], detail["variables"]


async def test_create_read_list_delete(client) -> None:
    resp = await client.post(BASE, json=sub_body(clientCorrelator="c1"))
    assert resp.status == 201
    doc = await resp.json()
    sub = doc["chatNotificationSubscription"]
    url = sub["resourceURL"]
    assert resp.headers["Location"] == url
    assert url.startswith(f"{ROOT}/chat/v1/{ALICE_ENC}/subscriptions/sub-")
    assert sub == {
        "callbackReference": {
            "notifyURL": "https://app.example/cb",
            "callbackData": "abc",
            "notificationFormat": "JSON",
        },
        "clientCorrelator": "c1",
        "confirmedChatSupported": True,
        "adhocChatSupported": False,
        "resourceURL": url,
    }
    path = url.removeprefix("http://api.test")
    resp = await client.get(path)
    assert resp.status == 200
    assert (await resp.json()) == doc
    resp = await client.get(BASE)
    assert resp.status == 200
    assert await resp.json() == {
        "chatSubscriptionList": {
            "chatNotificationSubscription": [sub],
            "resourceURL": f"{ROOT}/chat/v1/{ALICE_ENC}/subscriptions",
        }
    }
    resp = await client.delete(path)
    assert resp.status == 204
    for verb in (client.get, client.delete):
        resp = await verb(path)
        assert resp.status == 404
        assert fault(await resp.json())[0] == "SVC0001"


async def test_empty_list(client) -> None:
    resp = await client.get(BASE)
    assert resp.status == 200
    body = await resp.json()
    assert body["chatSubscriptionList"]["chatNotificationSubscription"] == []


@pytest.mark.parametrize("user", ["tel:+15551230001", "+15551230001", "tel%3a%2b15551230001"])
async def test_user_forms_are_one_user(client, user) -> None:
    resp = await client.post(f"/exampleAPI/chat/v1/{user}/subscriptions", json=sub_body())
    assert resp.status == 201
    url = (await resp.json())["chatNotificationSubscription"]["resourceURL"]
    assert f"/chat/v1/{ALICE_ENC}/subscriptions/" in url
    listed = await (await client.get(BASE)).json()
    assert [
        s["resourceURL"] for s in listed["chatSubscriptionList"]["chatNotificationSubscription"]
    ] == [url]


async def test_quoted_scalars_and_flags(client) -> None:
    body = sub_body(duration="900", confirmedChatSupported="false", adhocChatSupported="true")
    resp = await client.post(BASE, json=body)
    assert resp.status == 201
    sub = (await resp.json())["chatNotificationSubscription"]
    assert sub["duration"] == 900
    assert sub["confirmedChatSupported"] is False and sub["adhocChatSupported"] is True


async def test_client_correlator_replay(client) -> None:
    first = await client.post(BASE, json=sub_body(clientCorrelator="12345"))
    again = await client.post(BASE, json=sub_body(clientCorrelator=12345))
    assert (first.status, again.status) == (201, 200)
    a, b = await first.json(), await again.json()
    assert a == b
    other = await client.post(
        "/exampleAPI/chat/v1/tel:+15551230002/subscriptions",
        json=sub_body(clientCorrelator="12345"),
    )
    assert other.status == 201
    listed = await (await client.get(BASE)).json()
    assert len(listed["chatSubscriptionList"]["chatNotificationSubscription"]) == 1


async def test_duration_granted_and_expiry(database, aiohttp_client, monkeypatch) -> None:
    settings = Settings(
        server_root=ROOT, subscription_default_duration=60, subscription_max_duration=600
    )
    client = await aiohttp_client(rest_app.make_app(settings, database))
    resp = await client.post(BASE, json=sub_body(duration=3600))
    assert (await resp.json())["chatNotificationSubscription"]["duration"] == 600
    resp = await client.post(BASE, json=sub_body())
    sub = (await resp.json())["chatNotificationSubscription"]
    assert sub["duration"] == 60
    path = sub["resourceURL"].removeprefix("http://api.test")
    read = (await (await client.get(path)).json())["chatNotificationSubscription"]
    assert 0 < read["duration"] <= 60  # the remaining lifetime

    later = utcnow() + timedelta(seconds=61)
    monkeypatch.setattr(handlers, "utcnow", lambda: later)
    assert (await client.get(path)).status == 404
    assert (await client.delete(path)).status == 404
    listed = await (await client.get(BASE)).json()
    assert len(listed["chatSubscriptionList"]["chatNotificationSubscription"]) == 1  # the 600 s one
    assert await handlers.sweep_expired(database, later) == 1
    assert await handlers.sweep_expired(database, later) == 0


async def test_unlimited_has_no_duration(client) -> None:
    resp = await client.post(BASE, json=sub_body(duration=0))
    assert "duration" not in (await resp.json())["chatNotificationSubscription"]


async def test_subscription_limit(client, monkeypatch) -> None:
    monkeypatch.setattr(handlers, "MAX_SUBSCRIPTIONS_PER_USER", 2)
    for _ in range(2):
        assert (await client.post(BASE, json=sub_body())).status == 201
    resp = await client.post(BASE, json=sub_body())
    assert resp.status == 403
    assert fault(await resp.json())[0] == "POL0005"


async def test_survives_restart(aiohttp_client, settings, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'restart.db'}"
    db = Database(url)
    await db.migrate()
    client = await aiohttp_client(rest_app.make_app(settings, db))
    resp = await client.post(BASE, json=sub_body(duration=300))
    created = (await resp.json())["chatNotificationSubscription"]
    await client.close()
    await db.close()

    db2 = Database(url)
    await db2.migrate()
    try:
        client2 = await aiohttp_client(rest_app.make_app(settings, db2))
        resp = await client2.get(created["resourceURL"].removeprefix("http://api.test"))
        assert resp.status == 200
        again = (await resp.json())["chatNotificationSubscription"]
        assert again["callbackReference"] == created["callbackReference"]
        await client2.close()
    finally:
        await db2.close()


@pytest.mark.parametrize(
    ("payload", "message_id", "part"),
    [
        (b"{not json", "SVC0002", "body"),
        (b"[]", "SVC0002", "body"),
        (b'{"chatMessage": {}}', "SVC0002", "body"),
        (b'{"chatNotificationSubscription": 3}', "SVC0002", "chatNotificationSubscription"),
        (json.dumps(sub_body(a=1, b=2) | {"x": {}}).encode(), "SVC0002", "body"),
        (
            json.dumps({"chatNotificationSubscription": {}}).encode(),
            "SVC0002",
            "chatNotificationSubscription.callbackReference",
        ),
        (
            json.dumps(sub_body(duration="abc")).encode(),
            "SVC0002",
            "chatNotificationSubscription.duration",
        ),
        (
            json.dumps(sub_body(duration=-5)).encode(),
            "SVC0002",
            "chatNotificationSubscription.duration",
        ),
        (
            json.dumps(sub_body(confirmedChatSupported="maybe")).encode(),
            "SVC0002",
            "chatNotificationSubscription.confirmedChatSupported",
        ),
        (
            json.dumps(sub_body(unknownElement=1)).encode(),
            "SVC0002",
            "chatNotificationSubscription.unknownElement",
        ),
        (
            json.dumps(
                {"chatNotificationSubscription": {"callbackReference": {"notifyURL": "/relative"}}}
            ).encode(),
            "SVC0002",
            "chatNotificationSubscription.callbackReference.notifyURL",
        ),
        (
            json.dumps(
                {"chatNotificationSubscription": {"callbackReference": {"notifyURL": "ftp://x/y"}}}
            ).encode(),
            "SVC0002",
            "chatNotificationSubscription.callbackReference.notifyURL",
        ),
        (
            json.dumps(
                {
                    "chatNotificationSubscription": {
                        "callbackReference": {
                            "notifyURL": "http://a/b",
                            "notificationFormat": "YAML",
                        }
                    }
                }
            ).encode(),
            "SVC0003",
            "chatNotificationSubscription.callbackReference.notificationFormat",
        ),
        (b"", "SVC0002", "chatNotificationSubscription"),
    ],
)
async def test_bad_bodies(client, payload, message_id, part) -> None:
    resp = await client.post(BASE, data=payload, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    got_id, variables = fault(await resp.json())
    assert got_id == message_id
    assert variables[0] == part
    if payload.endswith(b'"XML"}}}'):
        assert variables[1] == "JSON"
    assert (await (await client.get(BASE)).json())["chatSubscriptionList"][
        "chatNotificationSubscription"
    ] == []


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", BASE, "GET, HEAD, POST"),
        ("DELETE", BASE, "GET, HEAD, POST"),
        ("POST", BASE + "/sub-1", "DELETE, GET, HEAD"),
        ("PUT", BASE + "/sub-1", "DELETE, GET, HEAD"),
    ],
)
async def test_wrong_verb(client, method, path, allow) -> None:
    resp = await client.request(method, path, json=sub_body())
    assert resp.status == 405
    assert resp.headers["Allow"] == allow
    assert fault(await resp.json())[0] == "SVC0001"


async def test_unknown_resources(client) -> None:
    for path in (
        BASE + "/nope",
        f"/exampleAPI/chat/v1/{ALICE_ENC}/nothing",
        "/chat/v1/x/subscriptions",
    ):
        resp = await client.get(path)
        assert resp.status == 404, path
        assert fault(await resp.json())[0] == "SVC0001"


async def test_invalid_user_id(client) -> None:
    resp = await client.get("/exampleAPI/chat/v1/mailto:bob@x/subscriptions")
    assert resp.status == 400
    assert fault(await resp.json())[1][0] == "userId"


async def test_media_types_and_size(client) -> None:
    resp = await client.post(BASE, data=b"x", headers={"Content-Type": "text/plain"})
    assert resp.status == 415
    resp = await client.get(BASE, headers={"Accept": "text/plain"})
    assert resp.status == 406
    resp = await client.get(BASE, headers={"Accept": "application/xml"})
    assert resp.status == 200 and resp.content_type == "application/xml"
    big = sub_body(callbackReference={"notifyURL": "http://a/b", "callbackData": "x" * 8000})
    resp = await client.post(BASE, json=big)
    assert resp.status == 413
    assert fault(await resp.json())[0] == "SVC0001"


async def test_sweeper_task_runs_and_stops(database, settings, aiohttp_client, monkeypatch) -> None:
    calls: list[object] = []

    async def fake_sweep(db, now) -> int:
        calls.append(now)
        return 0

    monkeypatch.setattr(handlers, "SWEEP_INTERVAL", 0.01)
    monkeypatch.setattr(handlers, "sweep_expired", fake_sweep)
    client = await aiohttp_client(rest_app.make_app(settings, database))
    for _ in range(200):
        if len(calls) >= 2:
            break
        await asyncio.sleep(0.01)
    assert len(calls) >= 2
    await client.close()
    count = len(calls)
    await asyncio.sleep(0.05)
    assert len(calls) == count  # stopped with the application
