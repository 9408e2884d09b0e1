"""Codec micro-benchmark: the chat hot-path codecs on realistic frames, one process.

usage: python bench/codec_bench.py [--seconds 0.3] [--only SUBSTRING]

Prints one line per codec operation: operations per second and microseconds per
operation (best of three runs of about ``--seconds`` each).  The inputs are what
one chat message costs the bridge: a CPIM chat message (From, To, NS imdn,
imdn.Message-ID, DateTime, imdn.Disposition-Notification, short text/plain body),
the CPIM-wrapped IMDN delivery report, the MSRP SEND frames carrying both and
their 200 responses, all built with the codecs' own serializers.  The last line
("per chat message") runs the whole codec work of one message: 4 MSRP frames
parsed and serialized, 2 CPIM bodies parsed and serialized, 1 IMDN built,
serialized and parsed.

Measured on the 2-core dev box (best of 3 interleaved runs, µs/op, before = 928a895):
cpim.parse chat 25.8 -> 15.8, cpim.serialize chat 8.9 -> 4.8, imdn.parse 21.4 -> 14.6,
imdn.serialize 11.3 -> 1.9, msrp.parse_message SEND 12.0 -> 7.7, serialize_message SEND
2.9 -> 1.7, MSRPParser.feed 4 frames 47.1 -> 33.0, per chat message 245 -> 157 (1.56x).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sip import cpim, imdn, multipart  # noqa: E402
from sip.msrp.message import (  # noqa: E402
    MSRPMessage,
    TransactionId,
    parse_byte_range,
    parse_message,
    serialize_message,
)
from sip.msrp.parser import MSRPParser  # noqa: E402
from sip.msrp.uri import SessionId, parse_uri, serialize_path  # noqa: E402
from sip.xmlutil import format_datetime, parse_datetime  # noqa: E402

STAMP = datetime(2026, 11, 25, 5, 30, 46, 123000, tzinfo=timezone.utc)
ALICE = cpim.NameAddr("sip:+33612345678@ims.example.net")
BOB = cpim.NameAddr("tel:+33698765432", "Bob")
LOCAL = parse_uri("msrp://127.0.0.1:40211/kx7Yq2mP9aZr;tcp")
REMOTE = parse_uri("msrp://10.20.30.40:2855/Sb3nq8Lw0Vtd;tcp")
assert LOCAL.session_id == SessionId("kx7Yq2mP9aZr")

CHAT = cpim.build_chat_message(
    sender=ALICE,
    recipient=BOB,
    message_id="Mf2a9c1e7b04d4e6",
    timestamp=STAMP,
    body="Hello Bob, see you at 6 at the usual place?".encode(),
)
CHAT_BYTES = cpim.serialize(CHAT)
REPORT = imdn.build_imdn(
    message_id="Mf2a9c1e7b04d4e6",
    original_datetime=STAMP,
    notification=imdn.NotificationType.DELIVERY,
    status=imdn.Status.DELIVERED,
)
REPORT_XML = imdn.serialize(REPORT)
IMDN_CPIM = cpim.build_imdn_message(
    sender=BOB,
    recipient=ALICE,
    message_id="Ne81b0f3a9c2d117",
    timestamp=STAMP,
    imdn_xml=REPORT_XML,
)
IMDN_CPIM_BYTES = cpim.serialize(IMDN_CPIM)


def _send(tid: str, mid: str, body: bytes) -> MSRPMessage:
    return MSRPMessage(
        TransactionId(tid),
        "SEND",
        to_path=(REMOTE,),
        from_path=(LOCAL,),
        headers=(
            ("Message-ID", mid),
            ("Success-Report", "no"),
            ("Failure-Report", "yes"),
            ("Byte-Range", f"1-{len(body)}/{len(body)}"),
        ),
        content_type=cpim.CONTENT_TYPE,
        body=body,
    )


def _ok(tid: str) -> MSRPMessage:
    return MSRPMessage(
        TransactionId(tid), status=200, reason="OK", to_path=(LOCAL,), from_path=(REMOTE,)
    )


SEND = _send("a1b2c3d4e5f6", "m0a1b2c3d4e5", CHAT_BYTES)
SEND_IMDN = _send("f6e5d4c3b2a1", "n0a1b2c3d4e5", IMDN_CPIM_BYTES)
OK = _ok("a1b2c3d4e5f6")
OK_IMDN = _ok("f6e5d4c3b2a1")
SEND_BYTES = serialize_message(SEND)
SEND_IMDN_BYTES = serialize_message(SEND_IMDN)
OK_BYTES = serialize_message(OK)
STREAM = SEND_BYTES + OK_BYTES + SEND_IMDN_BYTES + serialize_message(OK_IMDN)
STAMP_TEXT = format_datetime(STAMP)
CTYPE = "text/plain;charset=UTF-8"


def _feed_stream() -> None:
    frames = MSRPParser().feed(STREAM)
    assert len(frames) == 4


def _per_message() -> None:
    """The codec work of one chat message end to end."""
    for frame in (SEND, OK, SEND_IMDN, OK_IMDN):
        parse_message(serialize_message(frame))
    cpim.parse(cpim.serialize(CHAT))
    xml = imdn.serialize(
        imdn.build_imdn(
            message_id="Mf2a9c1e7b04d4e6",
            original_datetime=STAMP,
            notification=imdn.NotificationType.DELIVERY,
            status=imdn.Status.DELIVERED,
        )
    )
    imdn.parse(cpim.parse(cpim.serialize(IMDN_CPIM)).body)
    imdn.parse(xml)


CASES: list[tuple[str, Callable[[], object]]] = [
    ("cpim.parse chat", lambda: cpim.parse(CHAT_BYTES)),
    ("cpim.parse imdn", lambda: cpim.parse(IMDN_CPIM_BYTES)),
    ("cpim.serialize chat", lambda: cpim.serialize(CHAT)),
    ("cpim.serialize imdn", lambda: cpim.serialize(IMDN_CPIM)),
    ("cpim.parse_name_addr", lambda: cpim.parse_name_addr('"Bob" <tel:+33698765432>')),
    ("imdn.parse", lambda: imdn.parse(REPORT_XML)),
    ("imdn.serialize", lambda: imdn.serialize(REPORT)),
    (
        "imdn.build_imdn",
        lambda: imdn.build_imdn(
            message_id="Mf2a9c1e7b04d4e6",
            original_datetime=STAMP,
            notification=imdn.NotificationType.DELIVERY,
            status=imdn.Status.DELIVERED,
        ),
    ),
    ("msrp.parse_message SEND", lambda: parse_message(SEND_BYTES)),
    ("msrp.parse_message 200", lambda: parse_message(OK_BYTES)),
    ("msrp.serialize_message SEND", lambda: serialize_message(SEND)),
    ("msrp.serialize_message 200", lambda: serialize_message(OK)),
    ("msrp.parse_byte_range", lambda: parse_byte_range("1-182/182")),
    ("msrp.serialize_path", lambda: serialize_path((REMOTE,))),
    ("msrp.MSRPParser.feed 4 frames", _feed_stream),
    ("xmlutil.parse_datetime", lambda: parse_datetime(STAMP_TEXT, "bench")),
    ("xmlutil.format_datetime", lambda: format_datetime(STAMP)),
    ("multipart.parse_content_type", lambda: multipart.parse_content_type(CTYPE)),
    ("multipart.split_head", lambda: multipart.split_head(CHAT_BYTES)),
    ("per chat message (all codecs)", _per_message),
]


def measure(func: Callable[[], object], seconds: float) -> float:
    """Seconds per call: best of three runs of about ``seconds`` each."""
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            func()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds / 10:
            break
        number *= 2
    number = max(1, int(number * seconds / 10 / elapsed * 10 / 3))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(number):
            func()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def main() -> None:
    """Runs every case and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.3)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    print(f"{'codec operation':32} {'ops/s':>12} {'us/op':>9}")
    for name, func in CASES:
        if args.only and args.only not in name:
            continue
        per_call = measure(func, args.seconds)
        print(f"{name:32} {1 / per_call:12,.0f} {per_call * 1e6:9.2f}")


if __name__ == "__main__":
    main()
