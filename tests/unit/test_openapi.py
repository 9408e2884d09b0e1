"""The OpenAPI document (rest/openapi.py): valid OpenAPI 3.1, in step with the router."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from openapi_spec_validator import validate

from bridge.config import Credential, Settings
from rest import app as rest_app
from rest import openapi
from state.db import Database

SERVER = "http://api.test/exampleAPI"
HTTP_VERBS = ("GET", "PUT", "POST", "DELETE", "PATCH")
FILL = {
    "userId": "tel%3A%2B15551230001",
    "otherUserId": "tel%3A%2B15551230002",
    "participantId": "tel%3A%2B15551230003",
}


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'store.db'}")
    await db.migrate()
    yield db
    await db.close()


def _app(database: Database, **settings: Any) -> web.Application:
    return rest_app.make_app(Settings(server_root=SERVER, **settings), database)


def _router(app: web.Application) -> dict[str, set[str]]:
    """Path template → verbs, read from the router independently of rest.openapi."""
    served: dict[str, set[str]] = {}
    for resource in app.router.resources():
        path = resource.canonical
        for route in resource:
            verbs = {*HTTP_VERBS, "HEAD"} if route.method == "*" else {route.method}
            served.setdefault(path, set()).update(verbs)
    return served


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: FILL.get(m[1], "x1"), path)


async def test_the_document_is_valid_openapi_3_1(database: Database) -> None:
    document = _app(database)[openapi.PUBLISHED].document
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    assert set(document["webhooks"]) == {
        "chatEventNotification",
        "chatSessionInvitationNotification",
        "chatMessageNotification",
        "chatMessageStatusNotification",
        "groupChatSessionInvitationNotification",
        "chatParticipantStatusNotification",
    }
    assert set(document["components"]["securitySchemes"]) == {"basic", "bearer"}


async def test_every_route_is_documented_and_nothing_else(database: Database) -> None:
    app = _app(database)
    document = app[openapi.PUBLISHED].document
    documented = {path: {v.upper() for v in item} for path, item in document["paths"].items()}
    served = _router(app)
    # HEAD is served wherever GET is, and only there; the document leaves it implicit
    for path, verbs in served.items():
        assert ("HEAD" in verbs) == ("GET" in verbs), path
        verbs.discard("HEAD")
    assert documented == served
    assert len(documented) == 26  # with /ready and /metrics (docs/operations.md)
    assert sum(len(v) for v in documented.values()) == 42
    assert all(p.startswith("/exampleAPI/") for p in documented if p not in openapi.PUBLIC_PATHS)
    groups = [p for p in documented if "/group" in p]
    assert len(groups) == 8


async def test_every_operation_has_its_faults_and_answers(database: Database) -> None:
    document = _app(database)[openapi.PUBLISHED].document
    for path, item in document["paths"].items():
        for verb, op in item.items():
            codes = set(op["responses"])
            if path in openapi.PUBLIC_PATHS:
                assert op["security"] == [], path
                continue
            assert {"400", "401", "403", "406"} <= codes, (verb, path)
            if "{" in path.removeprefix("/exampleAPI/chat/v1/{userId}").removeprefix(
                "/exampleAPI/notificationchannel/v1/{userId}"
            ):
                assert "404" in codes, (verb, path)
            if "requestBody" in op:
                assert {"413", "415"} <= codes, (verb, path)
            for code, answer in op["responses"].items():
                if code.startswith(("4", "5")):
                    ref = answer["content"]["application/json"]["schema"]["$ref"]
                    assert ref == "#/components/schemas/requestError"
                if code == "201":
                    assert answer["headers"]["Location"]["required"] is True
    creating = [
        p
        for p, item in document["paths"].items()
        if "post" in item and "application/x-www-form-urlencoded" in str(item["post"])
    ]
    assert len(creating) == 8  # subscriptions, channels, R3, R6, R8, R9, R11, R14


async def test_a_route_without_documentation_stops_the_start(database: Database) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.router.add_get("/health", handler)
    app.router.add_get("/undocumented", handler)
    with pytest.raises(openapi.DocumentOutOfStep, match="undocumented"):
        openapi.build_document(app, "http://x.test", auth_enabled=False)


async def test_undocumented_verbs_answer_405_with_the_documented_allow(
    database: Database, aiohttp_client: Any
) -> None:
    app = _app(database)
    document = app[openapi.PUBLISHED].document
    client = await aiohttp_client(app)
    for path, item in document["paths"].items():
        documented = {v.upper() for v in item}
        others = [v for v in HTTP_VERBS if v not in documented]
        if not others:
            continue  # the callbackURL answers every verb (403/404)
        async with client.request(others[0], _concrete(path)) as resp:
            assert resp.status == 405, (others[0], path)
            allow = {v.strip() for v in resp.headers["Allow"].split(",")}
            expected = documented | ({"HEAD"} if "GET" in documented else set())
            assert allow == expected, path
            assert "requestError" in await resp.json()


async def test_served_without_credentials_and_whatever_the_accept(
    database: Database, aiohttp_client: Any
) -> None:
    secret = [Credential(kind="bearer", token="t", users=["*"])]
    app = _app(database, credentials=secret)
    assert {} not in app[openapi.PUBLISHED].document["security"]
    client = await aiohttp_client(app)
    async with client.get("/openapi.json", headers={"Accept": "text/html"}) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert await resp.json() == app[openapi.PUBLISHED].document
    async with client.get("/docs", headers={"Accept": "text/html"}) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        page = await resp.text()
    for path in app[openapi.PUBLISHED].document["paths"]:
        assert f"<code>{path}</code>" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    async with client.get(_concrete("/exampleAPI" + openapi.SUBS)) as resp:
        assert resp.status == 401  # everything else still needs credentials


async def test_open_security_only_without_credentials(database: Database) -> None:
    document = _app(database)[openapi.PUBLISHED].document
    assert {} in document["security"]
    assert document["servers"] == [{"url": "http://api.test"}]
