"""pjsua2 as an independent SIP peer for pager-mode MESSAGE, run as its own process.

    python -m tests.peers.pjsua_peer --port 5080 --user bob --proxy sip:127.0.0.1:5060

Line protocol (one JSON object per line; pjlib may print log lines before its log
configuration applies: readers skip lines that do not start with ``{``):
    stdin   {"cmd": "send", "to": URI, "content_type": T, "body": TEXT}   sends a MESSAGE
            {"cmd": "quit"}
    stdout  {"event": "ready", "port": N}
            {"event": "status", "code": C, "reason": R, "to": URI}       final response
            {"event": "message", "from": URI, "to": URI, "content_type": T, "body": TEXT}
            {"event": "error", "text": ...}
One UDP transport on 127.0.0.1, no registration, the null audio device, and pjsua's own
threads off (``threadCnt = 0``): everything runs in this process's main loop.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import select
import sys
from typing import Any

import pjsua2 as pj


def emit(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class PagerAccount(pj.Account):  # type: ignore[misc]
    """Reports received MESSAGEs and the final status of sent ones."""

    def onInstantMessage(self, prm: Any) -> None:  # noqa: N802 - pjsua2 callback name
        emit(
            event="message",
            **{"from": prm.fromUri},
            to=prm.toUri,
            content_type=prm.contentType,
            body=prm.msgBody,
        )

    def onInstantMessageStatus(self, prm: Any) -> None:  # noqa: N802
        emit(event="status", code=int(prm.code), reason=prm.reason, to=prm.toUri)


def run(port: int, user: str, domain: str, proxy: str | None) -> None:
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.userAgent = "pjsua2-test-peer"
    cfg.logConfig.level = 1
    cfg.logConfig.consoleLevel = 1
    cfg.medConfig.hasIoqueue = True
    ep.libInit(cfg)
    tcfg = pj.TransportConfig()
    tcfg.port = port
    tcfg.boundAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    ep.libStart()
    ep.audDevManager().setNullDev()

    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:{user}@{domain}"
    if proxy:
        acfg.sipConfig.proxies.append(proxy)
    account = PagerAccount()
    account.create(acfg)
    buddies: dict[str, pj.Buddy] = {}
    emit(event="ready", port=port)
    stdin = sys.stdin.fileno()
    pending = b""
    try:
        while True:
            ready, _, _ = select.select([stdin], [], [], 0)
            if ready:
                chunk = os.read(stdin, 65536)
                if not chunk:
                    break
                pending += chunk
                while b"\n" in pending:
                    raw, pending = pending.split(b"\n", 1)
                    if not raw.strip():
                        continue
                    cmd = json.loads(raw)
                    if cmd["cmd"] == "quit":
                        return
                    if cmd["cmd"] == "send":
                        buddy = buddies.get(cmd["to"])
                        if buddy is None:
                            bcfg = pj.BuddyConfig()
                            bcfg.uri = cmd["to"]
                            bcfg.subscribe = False
                            buddy = pj.Buddy()
                            buddy.create(account, bcfg)
                            buddies[cmd["to"]] = buddy
                        prm = pj.SendInstantMessageParam()
                        prm.contentType = cmd["content_type"]
                        prm.content = cmd["body"]
                        buddy.sendInstantMessage(prm)
                    else:
                        emit(event="error", text=f"unknown command {cmd['cmd']!r}")
            ep.libHandleEvents(20)
    finally:
        buddies.clear()
        gc.collect()  # Buddy destructors need their account alive
        account.shutdown()
        del account
        gc.collect()
        ep.libDestroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", default="bob")
    parser.add_argument("--domain", default="ims.test")
    parser.add_argument("--proxy", default=None, help="outbound proxy URI (;lr is added)")
    args = parser.parse_args()
    proxy = args.proxy
    if proxy and ";lr" not in proxy:
        proxy += ";lr"
    run(args.port, args.user, args.domain, proxy)


if __name__ == "__main__":
    main()
