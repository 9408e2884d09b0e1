"""The SIP trust domain (sip.trust): the policy, and the stack applying it on the wire.

Two stacks over UDP: the stranger listens (and so sends) on 127.0.0.2, the trusted peer
on 127.0.0.1; the bridge-side stack trusts 127.0.0.1 only (loopback /8 works on Linux).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sip.stack import SipStack
from sip.timers import Timers
from sip.trust import FORBIDDEN_REASON, TrustDomain, Verdict
from sip.usage import IncomingRequest

FAST = Timers(t1=0.05, t2=0.4, t4=0.5, d_unreliable=0.5)
ALICE = "sip:+15555550001@ims.test"
BOB = "sip:+15555550002@ims.test"


def test_verdicts() -> None:
    domain = TrustDomain.of(["10.0.0.0/24", "::1", "192.0.2.7"])
    assert domain.trusts("10.0.0.200") and domain.trusts("192.0.2.7")
    assert domain.trusts("::ffff:10.0.0.1")  # a dual-stack listener's view of IPv4
    assert domain.trusts("[::1]")
    assert not domain.trusts("10.0.1.1") and not domain.trusts("192.0.2.8")
    assert not domain.trusts("not-an-address")
    for method in ("MESSAGE", "INVITE", "SUBSCRIBE", "REFER"):
        assert domain.verdict(method, "10.0.0.1", in_dialog=False) is Verdict.TRUSTED
        assert domain.verdict(method, "10.9.0.1", in_dialog=False) is Verdict.REFUSE
        assert domain.verdict(method, "10.9.0.1", in_dialog=True) is Verdict.STRIP
    assert domain.verdict("OPTIONS", "10.9.0.1", in_dialog=False) is Verdict.STRIP
    lab = TrustDomain.of(["10.0.0.0/24"], policy="from-header")
    assert lab.verdict("MESSAGE", "10.9.0.1", in_dialog=False) is Verdict.STRIP
    assert TrustDomain(()).verdict("MESSAGE", "127.0.0.1", in_dialog=False) is Verdict.REFUSE
    with pytest.raises(ValueError):
        TrustDomain.of(["10.0.0.0/33"])


@pytest.fixture
async def stacks() -> AsyncIterator[tuple[SipStack, SipStack, SipStack]]:
    bridge = SipStack(port=0, transports=["udp"], timers=FAST)
    stranger = SipStack(host="127.0.0.2", port=0, transports=["udp"], timers=FAST)
    proxy = SipStack(port=0, transports=["udp"], timers=FAST)
    for stack in (bridge, stranger, proxy):
        await stack.start()
    bridge.trust = TrustDomain.of(["127.0.0.1"])
    try:
        yield bridge, stranger, proxy
    finally:
        for stack in (bridge, stranger, proxy):
            await stack.stop()


async def test_untrusted_peer_refused_trusted_heard(
    stacks: tuple[SipStack, SipStack, SipStack],
) -> None:
    bridge, stranger, proxy = stacks
    heard: list[IncomingRequest] = []

    def on_request(req: IncomingRequest) -> None:
        heard.append(req)
        req.respond(202 if req.request.method == "MESSAGE" else 488)

    for method in ("MESSAGE", "INVITE", "SUBSCRIBE", "REFER"):
        bridge.on_request(method, on_request)
    target = f"sip:+15555550002@127.0.0.1:{bridge.port}"
    forged = [("P-Asserted-Identity", f"<{BOB}>")]
    for method in ("MESSAGE", "INVITE", "SUBSCRIBE", "REFER"):
        extra = {"SUBSCRIBE": [("Event", "conference")], "REFER": [("Refer-To", f"<{BOB}>")]}
        headers = forged + extra.get(method, [])
        resp = await stranger.send_request(method, target, sender=ALICE, headers=headers)
        assert (resp.status, resp.reason) == (403, FORBIDDEN_REASON), method
    assert heard == []  # the handlers never saw them
    options = await stranger.send_request("OPTIONS", target, sender=ALICE)
    assert options.status == 200  # acts for nobody

    resp = await proxy.send_request(
        "MESSAGE", target, sender=ALICE, body=b"hi", content_type="text/plain"
    )  # the stack asserts its sender: P-Asserted-Identity: <ALICE>
    assert resp.status == 202
    assert heard[0].request.get("P-Asserted-Identity") == f"<{ALICE}>"  # trusted: kept


async def test_from_header_policy_strips_asserted_identity(
    stacks: tuple[SipStack, SipStack, SipStack],
) -> None:
    bridge, stranger, _ = stacks
    bridge.trust = TrustDomain.of(["127.0.0.1"], policy="from-header")
    heard: list[IncomingRequest] = []

    def on_message(req: IncomingRequest) -> None:
        heard.append(req)
        req.respond(202)

    bridge.on_request("MESSAGE", on_message)
    target = f"sip:+15555550002@127.0.0.1:{bridge.port}"
    resp = await stranger.send_request(
        "MESSAGE", target, sender=ALICE, body=b"hi", content_type="text/plain"
    )  # the stack adds P-Asserted-Identity: <ALICE>
    assert resp.status == 202
    assert heard[0].request.get("P-Asserted-Identity") is None  # RFC 3325 §5
    assert heard[0].request.from_.uri.user == "+15555550001"  # type: ignore[union-attr]
