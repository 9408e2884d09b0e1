"""Hostile input over the wire against a running ``chat-bridge serve`` (issue 13, Tests).

One bridge on the embedded default (its own SIP listener is its proxy, real SIP and MSRP
on loopback) takes every attack of the issue that travels over the wire, with small
deadlines, idle timeouts and caps so that the whole run takes seconds:

* SIP over UDP and TCP: the quadratic CPIM header, XML namespace amplification in
  isComposing and IMDN bodies, a 500 KB INVITE with 100,000 SDP ``a=`` lines, numbers of
  5,000 digits (CSeq, Content-Length, Via port, Request-URI port), a second ``To`` that
  does not parse: each one answered 400 (488 for the SDP), the TCP connection kept open
  and answering an OPTIONS after them, except after a Content-Length that loses the framing;
* MSRP: 5,000-digit Byte-Range and Expires answered 400; connections that stop inside a
  1 MB frame closed at the frame deadline;
* a SIP TCP connection that trickles one header line at a time, closed at the deadline;
* a flood of idle SIP and MSRP connections beyond the caps: the extra ones refused;
* notifyURLs on other loopback addresses, a cloud metadata address, the unspecified
  address, a decimal IPv4 host, the bridge's own REST port, with user-info, and another
  user's channel callbackURL: 400.

After each step ``/health`` must answer within ``PROMPT`` seconds, and at the end a chat
message A -> B goes through on the session opened before the attacks. The bridge's RSS
(``VmRSS`` of /proc/<pid>/status) is read after a warm-up (baseline), during the attacks
(peak) and once every attacker's connection is closed: it must come back within
``RSS_SLACK`` of the baseline (the figures are printed; the defects this guards against
grew it by 156 MB to 1.3 GB). The log must stay small too (CodecError texts are cut,
malformed-message lines rate-limited: 100 malformed MESSAGEs in a row log a few lines).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from tests import hostile_inputs as hostile
from tests.integration.test_chat_serve import A, B, Serve, q, serving
from tests.unit.test_delivery_support import Receiver

pytestmark = pytest.mark.integration

PROMPT = 1.0
"""Seconds ``/health`` may take after an attack (it answers in milliseconds when idle)."""
DEADLINE = 1.0
"""CHAT_BRIDGE_SIP_MESSAGE_DEADLINE and CHAT_BRIDGE_MSRP_FRAME_DEADLINE of the run."""
IDLE = 2.0
"""CHAT_BRIDGE_SIP_IDLE_TIMEOUT and CHAT_BRIDGE_MSRP_IDLE_TIMEOUT of the run."""
CAP = 30
"""CHAT_BRIDGE_SIP_MAX_CONNECTIONS and CHAT_BRIDGE_MSRP_MAX_CONNECTIONS of the run."""
STALLED_FRAMES = 20
"""MSRP connections that each stop 1 MB into a frame (20 MB held until the deadline)."""
RSS_SLACK = 8 * 1024
"""KiB the RSS may stay above its baseline once the attackers are gone: room for the
allocator's retained arenas and caches. Measured: the stalled frames raise the peak by
about 20 MB and the RSS ends 0.3 to 1.2 MB above the baseline; the defects this guards
against held 156 MB to 1.3 GB."""
FLOOD = 100
"""Malformed MESSAGEs sent back to back on one connection."""
LOG_SLACK = 64 * 1024
"""Bytes the attacks may add to the log (about 40 malformed messages and connections)."""

USER = b"sip:+15555550202@ims.test"


def request(
    method: bytes,
    call_id: bytes,
    transport: bytes,
    port: int,
    *,
    extra: bytes = b"",
    body: bytes = b"",
    uri: bytes = USER,
    via: bytes | None = None,
) -> bytes:
    """An out-of-dialog request from a stranger at 127.0.0.1:``port`` to a served user."""
    via = via or b"SIP/2.0/%s 127.0.0.1:%d;branch=z9hG4bK%s;rport" % (transport, port, call_id)
    return (
        b"%s %s SIP/2.0\r\nVia: %s\r\n" % (method, uri, via)
        + b"From: <sip:+15555550999@ims.test>;tag=x1\r\nTo: <%s>\r\n" % USER
        + b"Call-ID: %s\r\nCSeq: 1 %s\r\nMax-Forwards: 70\r\n" % (call_id, method)
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def imdn_body(n: int) -> bytes:
    """A CPIM-wrapped IMDN (RFC 5438 §7.1) whose XML is the namespace amplification case."""
    return (
        b"From: <sip:a@b>\r\nTo: <sip:c@d>\r\nNS: imdn <urn:ietf:params:imdn>\r\n"
        b"imdn.Message-ID: x1\r\n\r\nContent-Type: message/imdn+xml\r\n"
        b"Content-Disposition: notification\r\n\r\n"
        + hostile.XML_HOSTILE["long namespace (issue)"](n)
    )


Make = Callable[[bytes, int], bytes]
"""Builds an attack from (transport, local port)."""

CPIM = b"Content-Type: message/cpim\r\n"
ISCOMPOSING = b"Content-Type: application/im-iscomposing+xml\r\n"
DIGITS = b"9" * 5000


def _contact(t: bytes, p: int) -> bytes:
    return b"Contact: <sip:x@127.0.0.1:%d;transport=%s>\r\nContent-Type: application/sdp\r\n" % (
        p,
        t.lower(),
    )


def attacks(size: int) -> dict[str, tuple[Make, int]]:
    """Name -> (request maker, expected status); ``size`` is the body size of the XML and
    CPIM cases (60 KB fits a UDP datagram, TCP takes 200 KB)."""
    return {
        "quadratic CPIM": (
            lambda t, p: request(
                b"MESSAGE",
                b"cpim",
                t,
                p,
                extra=CPIM,
                body=hostile.CPIM_HOSTILE["spaces in To (issue)"](size),
            ),
            400,
        ),
        "namespace amplification (isComposing)": (
            lambda t, p: request(
                b"MESSAGE",
                b"iscomposing",
                t,
                p,
                extra=ISCOMPOSING,
                body=hostile.XML_HOSTILE["long namespace (issue)"](size),
            ),
            400,
        ),
        "namespace amplification (IMDN)": (
            lambda t, p: request(b"MESSAGE", b"imdn", t, p, extra=CPIM, body=imdn_body(size)),
            400,
        ),
        "5,000-digit CSeq": (
            lambda t, p: request(b"OPTIONS", b"cseq", t, p).replace(b"CSeq: 1", b"CSeq: " + DIGITS),
            400,
        ),
        "5,000-digit Via port": (
            lambda t, p: request(
                b"OPTIONS",
                b"via",
                t,
                p,
                via=b"SIP/2.0/%s 127.0.0.1:%s;branch=z9hG4bKv" % (t, DIGITS),
            ),
            400,
        ),
        "5,000-digit Request-URI port": (
            lambda t, p: request(b"OPTIONS", b"ruri", t, p, uri=b"sip:+1@h:" + DIGITS),
            400,
        ),
        "two To, the second malformed": (
            lambda t, p: request(
                b"OPTIONS", b"twoto", t, p, extra=b"To: <sip:x@h;" + DIGITS + b"\r\n"
            ),
            400,
        ),
    }


TCP_ONLY: dict[str, tuple[Make, int]] = {
    "quadratic SDP in a 500 KB INVITE": (
        lambda t, p: request(
            b"INVITE",
            b"sdp",
            t,
            p,
            extra=_contact(t, p),
            body=hostile.SDP_HOSTILE["a= lines (issue)"](500_000),
        ),
        488,
    ),
}


def rss_kib(pid: int) -> int:
    """VmRSS of process ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def read_response(reader: asyncio.StreamReader) -> int:
    """Status of the next SIP response on a stream (its body read and dropped)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            length = int(value)
    if length:
        await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the peer closes the stream within ``seconds`` (data read is dropped)."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


class Probe:
    """The bridge under attack: /health timing, RSS samples, the log's size."""

    def __init__(self, serve: Serve, http: aiohttp.ClientSession) -> None:
        self.serve = serve
        self.http = http
        assert serve.proc is not None
        self.pid = serve.proc.pid
        self.peak = 0
        self.slowest = 0.0
        self.slowest_after = ""

    def sample(self) -> int:
        rss = rss_kib(self.pid)
        self.peak = max(self.peak, rss)
        return rss

    async def healthy(self, after: str) -> None:
        """``/health`` answers 200 within PROMPT seconds."""
        self.sample()
        began = time.monotonic()
        async with asyncio.timeout(PROMPT + 4.0):
            async with self.http.get(self.serve.root + "/health") as resp:
                assert resp.status == 200, after
        took = time.monotonic() - began
        if took > self.slowest:
            self.slowest, self.slowest_after = took, after
        assert took < PROMPT, f"/health took {took:.2f} s after {after}"


async def udp_attacks(probe: Probe, sip_port: int) -> None:
    loop = asyncio.get_running_loop()
    for name, (make, status) in attacks(60_000).items():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.bind(("127.0.0.1", 0))
            data = make(b"UDP", sock.getsockname()[1])
            await loop.sock_sendto(sock, data, ("127.0.0.1", sip_port))
            answer = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5.0)
        assert int(answer.split(b" ", 2)[1]) == status, f"udp {name}: {answer[:80]!r}"
        await probe.healthy(f"udp {name}")
    # Content-Length does not frame a datagram (RFC 3261 §18.3): still a 400
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
        data = request(b"OPTIONS", b"clen", b"UDP", sock.getsockname()[1])
        data = data.replace(b"Content-Length: 0", b"Content-Length: " + DIGITS)
        await loop.sock_sendto(sock, data, ("127.0.0.1", sip_port))
        answer = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5.0)
    assert answer.startswith(b"SIP/2.0 400 "), answer[:80]


async def tcp_attacks(probe: Probe, sip_port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sip_port)
    port = writer.get_extra_info("sockname")[1]
    try:
        for name, (make, status) in {**attacks(200_000), **TCP_ONLY}.items():
            writer.write(make(b"TCP", port))
            got = await read_response(reader)
            assert got == status, f"tcp {name}: {got}"
            await probe.healthy(f"tcp {name}")
        # the same connection still carries a good request
        writer.write(request(b"OPTIONS", b"after", b"TCP", port))
        assert await read_response(reader) == 200
        # a flood of small malformed ones: each answered, the log lines rate-limited
        body = hostile.CPIM_HOSTILE["spaces in To (issue)"](1000)
        flood = (
            request(b"MESSAGE", b"f%d" % i, b"TCP", port, extra=CPIM, body=body)
            for i in range(FLOOD)
        )
        writer.write(b"".join(flood))
        assert [await read_response(reader) for _ in range(FLOOD)] == [400] * FLOOD
    finally:
        writer.close()
    # a Content-Length beyond any number loses the framing: that connection is closed
    reader, writer = await asyncio.open_connection("127.0.0.1", sip_port)
    port = writer.get_extra_info("sockname")[1]
    data = request(b"OPTIONS", b"clen", b"TCP", port)
    writer.write(data.replace(b"Content-Length: 0", b"Content-Length: " + DIGITS))
    assert await closed_within(reader, 2.0)
    writer.close()
    await probe.healthy("tcp Content-Length")


async def msrp_attacks(probe: Probe, msrp_port: int) -> None:
    for name in ("digits in Byte-Range", "digits in Expires"):
        reader, writer = await asyncio.open_connection("127.0.0.1", msrp_port)
        writer.write(hostile.MSRP_HOSTILE[name](5000))
        answer = await asyncio.wait_for(reader.readuntil(b"$\r\n"), 5.0)
        assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request"), (name, answer[:80])
        writer.close()
        await probe.healthy(f"msrp {name}")


async def stalled_frames(probe: Probe, msrp_port: int) -> None:
    """Connections that stop 1 MB into an MSRP frame are closed at the frame deadline."""
    frame = hostile.MSRP_HOSTILE["end-line lookalikes"](2_000_000)[:1_000_000]
    conns = [await asyncio.open_connection("127.0.0.1", msrp_port) for _ in range(STALLED_FRAMES)]
    for _, writer in conns:
        writer.write(frame)
    await asyncio.gather(*(writer.drain() for _, writer in conns))
    began = time.monotonic()
    await asyncio.sleep(DEADLINE / 2)  # the frames are in, the deadline not yet passed
    await probe.healthy("stalled MSRP frames")
    done = await asyncio.gather(*(closed_within(reader, DEADLINE + 3.0) for reader, _ in conns))
    assert all(done), f"{done.count(False)} stalled MSRP connections still open"
    assert time.monotonic() - began < DEADLINE + 3.0
    for _, writer in conns:
        writer.close()


async def trickle(probe: Probe, sip_port: int) -> None:
    """One header line every 0.2 s never completes a message: closed at the deadline,
    although it is never idle."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sip_port)
    port = writer.get_extra_info("sockname")[1]
    lines = request(b"OPTIONS", b"trickle", b"TCP", port).split(b"\r\n")[:-3]
    lines += [b"X-Slow-%d: y" % i for i in range(40)]
    began = time.monotonic()
    closing = asyncio.create_task(closed_within(reader, DEADLINE + 3.0))
    for line in lines:
        if closing.done():
            break
        try:
            writer.write(line + b"\r\n")
            await writer.drain()
        except ConnectionError:
            break
        await asyncio.sleep(0.2)
    assert await closing, "the trickling connection was not closed"
    took = time.monotonic() - began
    assert DEADLINE * 0.9 <= took < DEADLINE + 3.0, took
    writer.close()
    await probe.healthy("trickle")


async def flood(probe: Probe, port: int, what: str) -> None:
    """CAP + 10 idle connections: 10 refused at once, the others closed when idle."""
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(CAP + 10)]
    await probe.healthy(f"{what} flood")
    refused = await asyncio.gather(*(closed_within(reader, 0.5) for reader, _ in conns))
    assert refused.count(True) == 10, f"{what}: {refused.count(True)} refused of {CAP + 10}"
    rest = await asyncio.gather(*(closed_within(reader, IDLE + 3.0) for reader, _ in conns))
    assert all(rest), f"{what}: {rest.count(False)} idle connections still open"
    for _, writer in conns:
        writer.close()


async def notify_urls(serve: Serve, receiver: Receiver) -> None:
    own = serve.root + "/notify"
    channel = {"notificationChannel": {"channelType": "LongPolling"}}
    bobs = await serve.call("POST", f"/notificationchannel/v1/{q(B)}/channels", channel, 201)
    refused = [
        bobs["notificationChannel"]["callbackURL"],  # another user's channel (defect 10)
        "http://127.0.0.2:22/",  # loopback, not the allowed 127.0.0.1
        "http://[::1]:8080/",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0:8080/",
        "http://2130706433/",
        own,  # the bridge's own REST listener, although 127.0.0.1 is allowed
        receiver.url("/x").replace("http://", "http://user:secret@"),
    ]
    for url in refused:
        body = {"chatNotificationSubscription": {"callbackReference": {"notifyURL": url}}}
        async with aiohttp.ClientSession() as http:
            async with http.post(serve.root + f"/chat/v1/{q(A)}/subscriptions", json=body) as resp:
                text = await resp.text()
                assert resp.status == 400, f"{url}: {resp.status} {text}"
                assert "notifyURL" in text, text


async def settle_rss(probe: Probe, baseline: int) -> int:
    """The lowest RSS seen within 5 s, stopping once within the slack."""
    low = probe.sample()
    for _ in range(25):
        if low <= baseline + RSS_SLACK:
            break
        await asyncio.sleep(0.2)
        low = min(low, probe.sample())
    return low


async def chat(serve: Serve, session: str, text: str, count: int) -> None:
    await serve.call("POST", session + "/messages", {"chatMessage": {"text": text}}, 201)
    notes = await serve.notes(B, "chatMessageNotification", count, wait=5.0)
    assert notes[-1]["chatMessage"] == {"text": text}


async def test_hostile_input_over_the_wire(tmp_path: Path, receiver: Receiver) -> None:
    with serving(
        tmp_path,
        receiver,
        CHAT_BRIDGE_SIP_MESSAGE_DEADLINE=str(DEADLINE),
        CHAT_BRIDGE_MSRP_FRAME_DEADLINE=str(DEADLINE),
        CHAT_BRIDGE_SIP_IDLE_TIMEOUT=str(IDLE),
        CHAT_BRIDGE_MSRP_IDLE_TIMEOUT=str(IDLE),
        CHAT_BRIDGE_SIP_MAX_CONNECTIONS=str(CAP),
        CHAT_BRIDGE_MSRP_MAX_CONNECTIONS=str(CAP),
        # only 127.0.0.1 (the receiver) among the loopback addresses
        CHAT_BRIDGE_NOTIFY_ALLOW_LOOPBACK="false",
        CHAT_BRIDGE_NOTIFY_ALLOWED_NETWORKS='["127.0.0.1/32"]',
    ) as serve:
        msrp_port = serve.http_port + 2
        serve.env["CHAT_BRIDGE_MSRP_PORT"] = str(msrp_port)
        await serve.start()
        sip_port = int(serve.env["CHAT_BRIDGE_SIP_PORT"])

        # warm-up: a 1-1 session A -> B with a message, then the baseline
        await serve.subscribe(A)
        await serve.subscribe(B)
        created = await serve.call(
            "POST", f"/chat/v1/{q(A)}/oneToOne/{q(B)}", {"chatSessionInformation": {}}, 201
        )
        session = serve.local(created["chatSessionInformation"]["resourceURL"])
        (invite,) = await serve.notes(B, "chatSessionInvitationNotification", wait=5.0)
        links = {link["rel"]: serve.local(link["href"]) for link in invite["link"]}
        await serve.call("PUT", links["ParticipantSessionStatus"], status=204)
        (accepted,) = await serve.notes(A, "chatEventNotification", wait=5.0)
        assert accepted["eventType"] == "Accepted"
        await chat(serve, session, "before the attacks", 1)

        async with aiohttp.ClientSession() as http:
            probe = Probe(serve, http)
            await probe.healthy("warm-up")
            baseline = probe.sample()
            log_before = serve.log.stat().st_size
            began = time.monotonic()

            steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
                ("udp", lambda: udp_attacks(probe, sip_port)),
                ("tcp", lambda: tcp_attacks(probe, sip_port)),
                ("msrp", lambda: msrp_attacks(probe, msrp_port)),
                ("stalled frames", lambda: stalled_frames(probe, msrp_port)),
                ("trickle", lambda: trickle(probe, sip_port)),
                ("sip flood", lambda: flood(probe, sip_port, "SIP")),
                ("msrp flood", lambda: flood(probe, msrp_port, "MSRP")),
                ("notifyURL", lambda: notify_urls(serve, receiver)),
            ]
            for name, step in steps:
                await step()
                await probe.healthy(name)
            attacked = time.monotonic() - began

            # the session opened before the attacks still carries messages
            await chat(serve, session, "after the attacks", 2)
            final = await settle_rss(probe, baseline)
            grown = serve.log.stat().st_size - log_before
            print(  # noqa: T201 (shown with -s)
                f"\nRSS KiB: baseline {baseline}, peak {probe.peak} (+{probe.peak - baseline}), "
                f"after {final} (+{final - baseline}; slack {RSS_SLACK}); "
                f"slowest /health {probe.slowest * 1000:.0f} ms ({probe.slowest_after}); "
                f"log +{grown} bytes; "
                f"attacks took {attacked:.1f} s"
            )
            assert final <= baseline + RSS_SLACK, (baseline, probe.peak, final)
            assert grown < LOG_SLACK, serve.log.read_text()[-4000:]
            # one line per peer (or sender) and 10 s window, then a count (sip.ratelog)
            lines = serve.log.read_text().splitlines()
            for kind in ("bridge.signalling.base: x MESSAGE", "malformed SIP message from"):
                assert sum(kind in line for line in lines) <= 2, kind
