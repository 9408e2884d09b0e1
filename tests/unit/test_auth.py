"""REST authentication: Basic and Bearer credentials, user patterns, acr:auth, auth-off mode."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest
from aiohttp import web

from bridge.config import Credential, Settings
from bridge.errors import ConfigError
from rest import app as rest_app
from rest.auth import Authenticator, Principal, acting_user
from state.db import Database

ALICE = "tel%3A%2B15551230001"
BOB = "tel%3A%2B15551230002"
CAROL = "sip%3Acarol%40ims.test"


def subs(user: str) -> str:
    return f"/chat/v1/{user}/subscriptions"


BODY = {"chatNotificationSubscription": {"callbackReference": {"notifyURL": "http://app/cb"}}}


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


CREDENTIALS = [
    Credential(kind="bearer", token="tok-alice", users=["+15551230001"]),
    Credential(
        kind="basic",
        username="app",
        password="s3cret",
        users=["sip:*@ims.test", "tel:+1555123000?"],
    ),
    Credential(kind="bearer", token="tok-carol", users=["sip:carol@IMS.test", "tel:+15551230002"]),
]


@pytest.fixture
async def database(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'auth.db'}")
    await db.migrate()
    yield db
    await db.close()


@pytest.fixture
async def client(database, aiohttp_client):
    # `database` is requested first so that it is closed after the app (whose
    # background tasks still use the store while they stop)
    settings = Settings(server_root="http://api.test", credentials=CREDENTIALS)
    return await aiohttp_client(rest_app.make_app(settings, database))


def fault(body: dict[str, Any]) -> tuple[str, list[str]]:
    ((_, detail),) = body["requestError"].items()
    return detail["messageId"], detail["variables"]


async def test_missing_and_wrong_credentials(client) -> None:
    for headers in (
        {},
        bearer("nope"),
        basic("app", "wrong"),
        basic("nobody", "s3cret"),
        {"Authorization": "Basic !!!notbase64"},
        {"Authorization": "Digest username=app"},
        {"Authorization": "Basic " + base64.b64encode(b"tok-alice").decode()},  # bearer as basic
        {"Authorization": "Bearer"},
    ):
        resp = await client.get(subs(ALICE), headers=headers)
        assert resp.status == 401, headers
        assert "Bearer" in resp.headers["WWW-Authenticate"]
        assert "Basic" in resp.headers["WWW-Authenticate"]
        assert fault(await resp.json())[0] == "SVC0001"


async def test_bearer_and_basic_act_for_their_users(client) -> None:
    assert (await client.get(subs(ALICE), headers=bearer("tok-alice"))).status == 200
    assert (await client.get(subs("+15551230001"), headers=bearer("tok-alice"))).status == 200
    assert (await client.get(subs(ALICE), headers=basic("app", "s3cret"))).status == 200
    assert (await client.get(subs(CAROL), headers=basic("app", "s3cret"))).status == 200
    assert (await client.get(subs(CAROL), headers=bearer("tok-carol"))).status == 200
    assert (await client.get(subs(BOB), headers=bearer("tok-carol"))).status == 200
    # scheme names are case-insensitive (RFC 7235)
    resp = await client.get(subs(ALICE), headers={"Authorization": "bearer tok-alice"})
    assert resp.status == 200


async def test_another_user_is_forbidden(client) -> None:
    for path, headers in (
        (subs(BOB), bearer("tok-alice")),
        (subs(CAROL), bearer("tok-alice")),
        (subs("tel:+15551239999"), basic("app", "s3cret")),
        (subs(ALICE), bearer("tok-carol")),
    ):
        resp = await client.post(path, json=BODY, headers=headers)
        assert resp.status == 403, path
        assert fault(await resp.json())[0] == "POL0001"


async def test_another_users_subscription(client) -> None:
    resp = await client.post(subs(ALICE), json=BODY, headers=bearer("tok-alice"))
    url = (await resp.json())["chatNotificationSubscription"]["resourceURL"]
    path = url.removeprefix("http://api.test")
    assert (await client.get(path, headers=bearer("tok-carol"))).status == 403
    assert (await client.delete(path, headers=bearer("tok-carol"))).status == 403
    # a caller allowed for both users still cannot reach it through the other user's URL
    sub_id = path.rsplit("/", 1)[1]
    resp = await client.get(f"{subs(BOB)}/{sub_id}", headers=basic("app", "s3cret"))
    assert resp.status == 404
    assert (await client.get(path, headers=bearer("tok-alice"))).status == 200


@pytest.mark.parametrize("pseudo", ["acr:auth", "acr%3Aauth", "acr:Authorization"])
async def test_acr_auth_resolves_to_bound_user(client, pseudo) -> None:
    resp = await client.post(subs(pseudo), json=BODY, headers=bearer("tok-carol"))
    assert resp.status == 201
    url = (await resp.json())["chatNotificationSubscription"]["resourceURL"]
    assert url.startswith(f"http://api.test/chat/v1/{CAROL}/subscriptions/")
    listed = await (await client.get(subs(CAROL), headers=bearer("tok-carol"))).json()
    assert len(listed["chatSubscriptionList"]["chatNotificationSubscription"]) == 1


async def test_acr_auth_with_pattern_credential(client) -> None:
    resp = await client.get(subs("acr:auth"), headers=basic("app", "s3cret"))
    assert resp.status == 403
    assert fault(await resp.json())[0] == "POL0001"
    assert (await client.get(subs("acr:auth"))).status == 401


async def test_health_and_other_routes(database, aiohttp_client) -> None:
    settings = Settings(server_root="http://api.test", credentials=CREDENTIALS)
    app = rest_app.make_app(settings, database)

    async def probe(request: web.Request) -> web.Response:
        return web.json_response({"user": acting_user(request)})

    # any route with {userId} is covered, notification channels included
    app.router.add_get("/notificationchannel/v1/{userId}/probe", probe)
    client = await aiohttp_client(app)
    assert (await client.get("/health")).status == 200
    path = "/notificationchannel/v1/{}/probe"
    assert (await client.get(path.format(ALICE))).status == 401
    assert (await client.get(path.format(BOB), headers=bearer("tok-alice"))).status == 403
    resp = await client.get(path.format("acr:auth"), headers=bearer("tok-alice"))
    assert await resp.json() == {"user": "tel:+15551230001"}
    assert (await client.get("/chat/v1/unknown/path/x")).status == 401


async def test_auth_off_on_loopback(database, aiohttp_client, caplog) -> None:
    caplog.set_level(logging.INFO, logger="rest.auth")
    app = rest_app.make_app(Settings(http_host="127.0.0.1"), database)
    assert any("authentication is OFF" in r.getMessage() for r in caplog.records)
    client = await aiohttp_client(app)
    assert (await client.get(subs(ALICE))).status == 200
    resp = await client.get(subs("acr:auth"))
    assert resp.status == 403  # no token binds a user


async def test_no_credentials_on_public_listener_refused(database) -> None:
    with pytest.raises(ConfigError, match="CHAT_BRIDGE_CREDENTIALS"):
        rest_app.make_app(Settings(http_host="0.0.0.0"), database)


def test_bad_credential_config() -> None:
    with pytest.raises(ConfigError):
        Authenticator([Credential(kind="bearer", token="t", users=["not a uri"])])
    with pytest.raises(ConfigError):
        Authenticator([Credential(kind="basic", username="a", users=["*"])])
    with pytest.raises(ConfigError):
        Authenticator([Credential(kind="bearer", users=["*"])])


def test_principal_patterns() -> None:
    p = Principal("x", ("tel:+1555*", "sip:bob@ims.test"))
    assert p.auth_user is None
    assert p.may_act_for("tel:+15551230001") and p.may_act_for("sip:bob@ims.test")  # type: ignore[arg-type]
    assert not p.may_act_for("sip:eve@ims.test")  # type: ignore[arg-type]
    assert Principal("y", ("sip:bob@ims.test",)).auth_user == "sip:bob@ims.test"
