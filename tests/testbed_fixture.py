"""Start and stop the Kamailio test bed (tests/testbed) on free loopback ports.

A missing ``kamailio``/``sipp`` binary fails the test (never a skip): the test
command (``scripts/test``) installs them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TESTBED = Path(__file__).parent / "testbed"
SCENARIOS = TESTBED / "scenarios"


def require_binary(name: str) -> str:
    """Path of ``name`` or fail the test with the install hint."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: run scripts/test (apt-get install kamailio sip-tester)"
        )
    return path


def _port_free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def ephemeral_port_start() -> int:
    """The lowest port the kernel hands out as a source port (net.ipv4.ip_local_port_range)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_block(size: int = 40, start: int = 21000, stop: int | None = None) -> int:
    """A base port such that base..base+size-1 are free on 127.0.0.1 (TCP and UDP).

    Blocks stay below the ephemeral range: a port there can be taken as the source port of
    any outgoing connection while its owner is down (a bridge killed and restarted).
    Default blocks come from 21000-29999; callers that need a second, disjoint block pass
    a ``start`` of 30000 or more (up to the ephemeral range).
    """
    if stop is None:
        stop = 30000 if start < 30000 else 65000
    stop = min(stop, ephemeral_port_start()) - size
    if start >= stop:
        raise ValueError(f"port block {start}+{size} does not fit below the ephemeral range")
    span = (stop - start) // 100
    base = start + (os.getpid() * 97) % span * 100
    for _ in range(span + 1):
        if all(_port_free(p) for p in range(base, base + size)):
            return base
        base = start + (base - start + 100) % (span * 100)
    raise RuntimeError("no free block of loopback ports")


@dataclass
class Testbed:
    """A running Kamailio and the ports around it (see tests/testbed/README.md)."""

    __test__ = False

    base: int
    run_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def sip_port(self) -> int:
        return self.base

    @property
    def msrp_port(self) -> int:
        return self.base + 5

    @property
    def as_port(self) -> int:
        """Where Kamailio sends requests for the bridge's users (KTB_AS_URI)."""
        return self.base + 10

    @property
    def peer_port(self) -> int:
        """Default peer for other users (KTB_PEER_URI)."""
        return self.base + 20

    @property
    def conf_port(self) -> int:
        """Conference focus for sip:conference-factory@ims.test (KTB_CONF_URI)."""
        return self.base + 30

    @property
    def tls_port(self) -> int:
        """Kamailio's SIP TLS listener (KTB_TLS_PORT; only with a tls.cfg)."""
        return self.base + 6

    @property
    def as_tls_port(self) -> int:
        """Where a TLS test bed sends requests for the bridge's users (transport=tls)."""
        return self.base + 7

    def uac_port(self, n: int) -> int:
        """Free ports base+1..base+4 and base+11..base+19 for test UACs."""
        return self.base + n

    @property
    def proxy(self) -> tuple[str, int]:
        return ("127.0.0.1", self.sip_port)

    @property
    def log(self) -> Path:
        return self.run_dir / "kamailio.log"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def ctl(self) -> str:
        """Kamailio's binrpc control socket (``kamcmd -s``)."""
        return f"unix:{self.run_dir / 'kamailio_ctl'}"

    def rpc(self, *command: str) -> str:
        """The output of one ``kamcmd`` RPC (e.g. ``tm.stats``) on this Kamailio."""
        proc = subprocess.run(
            [require_binary("kamcmd"), "-s", self.ctl, *command],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"kamcmd {' '.join(command)}: {proc.stderr or proc.stdout}")
        return proc.stdout

    def pending_transactions(self) -> int:
        """Transactions still waiting for a final response (tm.stats current - waiting).

        Each one is a request Kamailio keeps retransmitting (UDP) toward a peer until
        fr_timer / fr_inv_timer: whoever binds that peer port next receives it.
        """
        stats: dict[str, int] = {}
        for line in self.rpc("tm.stats").splitlines():
            name, sep, value = line.strip().partition(":")
            if sep and value.strip().isdigit():
                stats[name] = int(value)
        return stats["current"] - stats["waiting"]

    def settle(self, timeout: float = 35.0) -> tuple[float, str]:
        """Wait (bounded) until no transaction is pending; (seconds waited, what was pending)."""
        t0 = time.monotonic()
        pending = ""
        while self.pending_transactions() > 0:
            if not pending:
                pending = self.rpc("tm.list")
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"Kamailio transactions still pending:\n{pending}")
            time.sleep(0.05)
        return time.monotonic() - t0, pending


def start_testbed(run_dir: Path, *, as_transport: str = "udp", **overrides: str) -> Testbed:
    """Start Kamailio from tests/testbed/start.sh on a free port block."""
    require_binary("kamailio")
    require_binary("sipp")
    base = free_port_block()
    tb = Testbed(base=base, run_dir=run_dir)
    as_uri = f"sip:127.0.0.1:{tb.as_port}"
    if as_transport == "tcp":
        as_uri += ";transport=tcp"
    elif as_transport == "tls":
        as_uri = f"sip:127.0.0.1:{tb.as_tls_port};transport=tls"
        overrides.setdefault("KTB_TLS_PORT", str(tb.tls_port))
    env = {
        "KTB_SIP_PORT": str(tb.sip_port),
        "KTB_MSRP_PORT": str(tb.msrp_port),
        "KTB_AS_URI": as_uri,
        "KTB_PEER_URI": f"sip:127.0.0.1:{tb.peer_port}",
        "KTB_CONF_URI": f"sip:127.0.0.1:{tb.conf_port}",
    }
    env.update(overrides)
    tb.env = env
    proc = subprocess.run(
        [str(TESTBED / "start.sh"), str(run_dir)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        pytest.fail(f"kamailio test bed did not start:\n{proc.stderr}\n{proc.stdout}")
    return tb


def stop_testbed(tb: Testbed) -> None:
    """Stop the Kamailio started by :func:`start_testbed`."""
    subprocess.run(
        [str(TESTBED / "stop.sh"), str(tb.run_dir)], capture_output=True, text=True, timeout=30
    )


@pytest.fixture(scope="session")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    """One Kamailio for the whole session; the bridge (AS) is reached over UDP."""
    tb = start_testbed(tmp_path_factory.mktemp("kamailio"))
    yield tb
    stop_testbed(tb)


@pytest.fixture(scope="session")
def kamailio_tcp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    """A second Kamailio that reaches the AS over TCP (KTB_AS_URI ;transport=tcp)."""
    tb = start_testbed(tmp_path_factory.mktemp("kamailio-tcp"), as_transport="tcp")
    yield tb
    stop_testbed(tb)


def kamailio_tls_cfg(run_dir: Path, cert: Path, key: Path, ca: Path) -> Path:
    """A tls.cfg for Kamailio's tls module: it serves ``cert`` and, as a client (toward the
    bridge), verifies the peer's certificate against ``ca``."""
    path = run_dir / "tls.cfg"
    path.write_text(
        "[server:default]\n"
        "method = TLSv1.2+\n"
        "verify_certificate = no\n"
        "require_certificate = no\n"
        f"certificate = {cert}\nprivate_key = {key}\nca_list = {ca}\n\n"
        "[client:default]\n"
        "method = TLSv1.2+\n"
        "verify_certificate = yes\n"
        "require_certificate = yes\n"
        f"certificate = {cert}\nprivate_key = {key}\nca_list = {ca}\n"
    )
    return path


@dataclass
class TLSTestbed:
    """A Kamailio with SIP over TLS and the test PKI its certificates come from."""

    __test__ = False

    testbed: Testbed
    pki: Any


@pytest.fixture(scope="session")
def kamailio_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSTestbed]:
    """A third Kamailio with a TLS listener (tls module, certificates made at test time) that
    reaches the AS over TLS (KTB_AS_URI ;transport=tls); no MSRP relay (kamailio.cfg)."""
    from tests.tls_certs import make_pki

    if not list(Path("/usr/lib").glob("*/kamailio/modules/tls.so")) and not list(
        Path("/usr/lib").glob("kamailio/modules/tls.so")
    ):
        pytest.fail("Kamailio's tls module is missing: run scripts/install-test-deps")
    run_dir = tmp_path_factory.mktemp("kamailio-tls")
    pki = make_pki(run_dir / "pki")
    cfg = kamailio_tls_cfg(run_dir, pki.good.cert, pki.good.key, pki.ca)
    tb = start_testbed(run_dir, as_transport="tls", KTB_TLS_CFG=str(cfg))
    yield TLSTestbed(tb, pki)
    stop_testbed(tb)


SETTLE_GRACE = 2.0
"""Seconds a test's last transaction may still take at teardown (a final response in flight)."""

_CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remembers a failed test body, so the settle check below does not pile on."""
    report: pytest.TestReport = yield
    if report.when == "call" and report.failed:
        item.stash[_CALL_FAILED] = True
    return report


@pytest.fixture(autouse=True)
def _kamailio_settles(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test on a session Kamailio, wait until that Kamailio has no pending transaction.

    The Kamailios are shared by the whole session and route every user outside the
    bridge's range to one peer port. A request a test leaves without a final response
    (e.g. an IMDN toward a peer nobody plays) is retransmitted for up to fr_timer (10 s),
    and the next test's SIPp on that port takes it as its own call. So every test leaves
    its Kamailio quiet (the next one starts clean, whatever the order), and a test that
    left requests pending for more than SETTLE_GRACE fails at teardown, naming them.
    """
    yield
    for name in ("kamailio", "kamailio_tcp", "kamailio_tls"):
        tb = request.node.funcargs.get(name) if name in request.fixturenames else None
        if isinstance(tb, TLSTestbed):
            tb = tb.testbed
        if not isinstance(tb, Testbed):
            continue
        waited, pending = tb.settle()
        if waited > SETTLE_GRACE and not request.node.stash.get(_CALL_FAILED, False):
            pytest.fail(
                f"the test left SIP transactions pending in {name} for {waited:.1f} s "
                "(requests nobody answered; a later test's peer would receive them). "
                f"Kamailio's transactions then (tm.list):\n{pending}",
                pytrace=False,
            )


def sipp_command(tb: Testbed, scenario: str, *args: str, local_port: int) -> list[str]:
    """A bounded sipp command line for ``scenario`` (a file in tests/testbed/scenarios)."""
    return [
        require_binary("sipp"),
        "-sf",
        str(SCENARIOS / scenario),
        "-p",
        str(local_port),
        "-i",
        "127.0.0.1",
        "-bind_local",
        "-ci",
        "127.0.0.1",
        "-mi",
        "127.0.0.1",
        "-nostdin",
        "-timeout",
        "30s",
        "-timeout_error",
        *args,
    ]
