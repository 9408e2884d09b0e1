"""Configuration, user URIs, fault bodies and the migration runner."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.config import Settings, load_settings
from bridge.errors import ConfigError
from rest.errors import OMAFault, method_not_allowed
from rest.uris import InvalidUserUri, ServerRoot, canonical_user, is_acr_auth
from state.db import Database


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("+15551230001", "tel:+15551230001"),
        ("tel%3A%2B15551230001", "tel:+15551230001"),
        ("tel:+1-555-123-0001", "tel:+15551230001"),
        ("sip:+15551230001@ims.test;user=phone", "tel:+15551230001"),
        ("sip%3A%2B15551230001%40ims.test", "tel:+15551230001"),
        ("sip:Alice@IMS.test;transport=tcp", "sip:Alice@ims.test"),
        ("<sip:bob@ims.test>", "sip:bob@ims.test"),
    ],
)
def test_canonical_user(raw: str, canonical: str) -> None:
    assert canonical_user(raw) == canonical


@pytest.mark.parametrize("raw", ["", "bob", "sip:ims.test", "tel:abc", "mailto:a@b", "%"])
def test_canonical_user_rejects(raw: str) -> None:
    with pytest.raises(InvalidUserUri):
        canonical_user(raw)


def test_acr_auth() -> None:
    assert is_acr_auth("acr:auth") and is_acr_auth("acr%3AAuthorization")
    assert not is_acr_auth("tel:+1")


def test_server_root_urls() -> None:
    root = ServerRoot("https://api.example.com/exampleAPI/")
    assert root.path_prefix == "/exampleAPI"
    assert (
        root.chat("tel:+15551230001", "subscriptions", "s1")
        == "https://api.example.com/exampleAPI/chat/v1/tel%3A%2B15551230001/subscriptions/s1"
    )
    assert root.channels("tel:+1", "c1").endswith("/notificationchannel/v1/tel%3A%2B1/channels/c1")
    assert ServerRoot("http://h:1").path_prefix == ""


def test_fault_body_and_allow() -> None:
    fault = method_not_allowed("PUT", ["POST", "GET"])
    assert fault.status == 405 and fault.headers["Allow"] == "GET, POST"
    body = OMAFault(403, "POL0001", ["x"]).body()
    assert body == {
        "requestError": {
            "policyException": {
                "messageId": "POL0001",
                "text": "A policy error occurred. Error code is %1",
                "variables": ["x"],
            }
        }
    }


def test_settings_from_env_and_file(tmp_path, monkeypatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("http_port: 9001\nserver_root: http://x:1/p/\n")
    monkeypatch.setenv("CHAT_BRIDGE_HTTP_HOST", "127.0.0.2")
    s = load_settings(cfg)
    assert (s.http_host, s.http_port, s.server_root) == ("127.0.0.2", 9001, "http://x:1/p")
    monkeypatch.setenv("CHAT_BRIDGE_HTTP_PORT", "9002")
    assert load_settings(cfg).http_port == 9002  # environment wins over the file
    assert Settings().loopback_only


def test_settings_errors(tmp_path, monkeypatch) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError):
        load_settings(bad)
    monkeypatch.setenv("CHAT_BRIDGE_HTTP_PORT", "not-a-port")
    with pytest.raises(ConfigError):
        load_settings()


async def test_migrate_empty_database(tmp_path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    first = await db.migrate()
    assert await db.migrate() == first  # idempotent
    assert await db.ping()
    await db.close()


def test_config_example_is_current_and_loads(monkeypatch) -> None:
    from pathlib import Path

    from bridge.config import example_yaml

    example = Path(__file__).parents[2] / "config.example.yaml"
    assert example.read_text() == example_yaml(), "run: chat-bridge config --example"
    for name in Settings.model_fields:
        monkeypatch.delenv("CHAT_BRIDGE_" + name.upper(), raising=False)
    assert load_settings(example) == Settings()


def test_server_root_follows_the_listener() -> None:
    from bridge.config import Settings

    assert Settings(http_port=9000).server_root == "http://127.0.0.1:9000"
    assert Settings(http_host="::1", http_port=1).server_root == "http://[::1]:1"
    assert Settings(http_host="0.0.0.0", http_port=2).server_root == "http://127.0.0.1:2"
    assert Settings(server_root="https://api.example/chat/").server_root == (
        "https://api.example/chat"
    )


def test_event_loop_choice() -> None:
    import asyncio

    import uvloop

    from bridge.cli import loop_factory

    assert loop_factory("asyncio") is None
    assert loop_factory("auto") is uvloop.new_event_loop
    loop = loop_factory("uvloop")()  # type: ignore[misc]
    try:
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()


@given(st.text(max_size=300))
def test_quote_segment_is_urllib_quote(text: str) -> None:
    from urllib.parse import quote

    from rest.uris import quote_segment

    assert quote_segment(text) == quote(text, safe="")
