"""Relay AUTH with a digest challenge (RFC 4976 §5.2) against a small in-process relay.

Kamailio's test-bed relay accepts AUTH without a challenge, so the 401 path is played by
a fake relay built from our own codec: it challenges, verifies with ``sip.auth`` and
grants a Use-Path. It answers AUTH only (no relaying).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sip.auth import make_challenge, parse_credentials, verify
from sip.errors import MSRPError
from sip.msrp import MSRPStack, RelayConfig
from sip.msrp.message import MSRPMessage, serialize_message
from sip.msrp.parser import MSRPParser
from sip.msrp.uri import MSRPURI, SessionId

pytestmark = pytest.mark.timeout(30)

PASSWORD = "s3cret"


class FakeRelay:
    def __init__(self) -> None:
        self.auths: list[MSRPMessage] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = MSRPParser()
        try:
            while data := await reader.read(65536):
                for req in parser.feed(data):
                    assert isinstance(req, MSRPMessage) and req.method == "AUTH"
                    self.auths.append(req)
                    writer.write(serialize_message(self.answer(req)))
        finally:
            writer.close()

    def answer(self, req: MSRPMessage) -> MSRPMessage:
        me = MSRPURI("127.0.0.1", self.port)
        auth = req.header("Authorization")
        status, reason = 401, "Unauthorized"
        challenge = make_challenge("relay.test", algorithm="SHA-256")
        headers: tuple[tuple[str, str], ...] = (("WWW-Authenticate", str(challenge)),)
        if auth is not None:
            creds = parse_credentials(auth)
            if creds.uri == str(req.to_path[0]) and verify(creds, "AUTH", PASSWORD):
                use = MSRPURI("127.0.0.1", self.port, SessionId(f"relay{len(self.auths)}"))
                status, reason = 200, "OK"
                headers = (("Use-Path", str(use)), ("Expires", "900"))
        return MSRPMessage(
            req.transaction_id,
            status=status,
            reason=reason,
            to_path=(req.from_path[0],),
            from_path=(me,),
            headers=headers,
        )


@pytest.fixture
async def relay() -> AsyncIterator[FakeRelay]:
    fake = FakeRelay()
    fake.server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    fake.port = fake.server.sockets[0].getsockname()[1]
    yield fake
    fake.server.close()
    await fake.server.wait_closed()


def config(relay: FakeRelay, password: str | None) -> RelayConfig:
    return RelayConfig.from_string(
        f"msrp://127.0.0.1:{relay.port};tcp",
        username="bridge" if password is not None else None,
        password=password,
    )


async def test_digest_challenge_is_answered(relay: FakeRelay):
    stack = MSRPStack(relay=config(relay, PASSWORD))
    await stack.start()
    try:
        session = await stack.create_session()
        assert [u.session_id for u in session.local_path] == ["relay2", session.session_id]
        assert relay.auths[0].header("Authorization") is None
        creds = parse_credentials(relay.auths[1].header("Authorization") or "")
        assert creds.username == "bridge" and creds.algorithm == "SHA-256"
        assert creds.realm == "relay.test" and creds.qop == "auth"
        delay = session._refresh.when() - asyncio.get_running_loop().time()  # type: ignore[union-attr]
        assert 700 < delay <= 720  # 80 % of Expires 900
    finally:
        await stack.close()


@pytest.mark.parametrize("password", [None, "wrong"])
async def test_missing_or_wrong_credentials_give_401(relay: FakeRelay, password: str | None):
    stack = MSRPStack(relay=config(relay, password))
    await stack.start()
    try:
        with pytest.raises(MSRPError) as info:
            await stack.create_session(session_id="s4011234")
        assert info.value.status == 401 and not info.value.local
        assert len(relay.auths) == (1 if password is None else 2)
        assert stack.session("s4011234") is None
        await asyncio.sleep(0.05)
        assert not stack._links  # the relay connection is not kept for nothing
    finally:
        await stack.close()
