"""Run the SIPp scenarios of tests/sipp as bounded subprocesses (tests and bench).

Every run is pinned to 127.0.0.1 (``-i -bind_local -ci -mi``), has an explicit
local port, ``-m N``, ``-timeout 30s -timeout_error`` (or a longer bound for
load runs) and a wall-clock limit; its statistics come from ``-trace_stat``.
A missing ``sipp`` binary fails the caller (:class:`SippMissing`). ``SIPP_TRACE_MSG=1`` in
the environment adds ``-trace_msg`` (every message in the run directory).
"""

from __future__ import annotations

import asyncio
import csv
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
USERS_CSV = HERE.parent / "testbed" / "scenarios" / "users.csv"


class SippMissing(RuntimeError):
    """sipp is not installed (Debian package sip-tester)."""


@dataclass
class SippResult:
    """Exit code, counters and output of one sipp run."""

    returncode: int
    successful: int
    failed: int
    retransmissions: int
    elapsed: float
    stdout: str
    stderr: str
    workdir: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0

    def explain(self) -> str:
        """The tail of what sipp said, for assertion messages."""
        errors = ""
        for path in self.workdir.glob("*errors.log"):
            errors += path.read_text(errors="replace")[-3000:]
        return (
            f"sipp rc={self.returncode} ok={self.successful} failed={self.failed}\n"
            f"{self.stdout[-2000:]}\n{self.stderr[-2000:]}\n{errors}"
        )


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        raise SippMissing("sipp is not installed: apt-get install sip-tester")
    return path


def command(
    scenario: str,
    *args: str,
    local_port: int,
    calls: int = 1,
    transport: str = "udp",
    timeout: str = "30s",
) -> list[str]:
    """A bounded sipp command line for tests/sipp/``scenario``."""
    return [
        sipp_binary(),
        "-sf",
        str(HERE / scenario),
        "-p",
        str(local_port),
        "-t",
        "u1" if transport == "udp" else "t1",
        "-i",
        "127.0.0.1",
        "-bind_local",
        "-ci",
        "127.0.0.1",
        "-mi",
        "127.0.0.1",
        "-nostdin",
        "-m",
        str(calls),
        "-timeout",
        timeout,
        "-timeout_error",
        "-trace_err",
        "-trace_logs",
        *(["-trace_msg"] if os.environ.get("SIPP_TRACE_MSG") else []),  # debugging aid
        "-trace_stat",
        "-stf",
        "stats.csv",
        "-fd",
        "1",
        *args,
    ]


def _counters(workdir: Path) -> tuple[int, int, int]:
    path = workdir / "stats.csv"
    try:
        rows = list(csv.reader(path.read_text().splitlines(), delimiter=";"))
    except OSError:
        return 0, 0, 0
    if len(rows) < 2:
        return 0, 0, 0
    head, last = rows[0], rows[-1]

    def value(name: str) -> int:
        try:
            return int(last[head.index(name)])
        except (ValueError, IndexError):
            return 0

    return value("SuccessfulCall(C)"), value("FailedCall(C)"), value("Retransmissions(C)")


class SippProcess:
    """One sipp subprocess started in ``workdir``; ``wait()`` collects its result."""

    def __init__(self, cmd: list[str], workdir: Path, limit: float) -> None:
        self.cmd = cmd
        self.workdir = workdir
        self.limit = limit
        self._proc: asyncio.subprocess.Process | None = None
        self._t0 = 0.0

    async def start(self) -> SippProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        self._proc = await asyncio.create_subprocess_exec(
            *self.cmd,
            cwd=self.workdir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return self

    async def wait(self, limit: float | None = None) -> SippResult:
        """Collects the result; kills sipp after ``limit`` (default: the start limit)."""
        assert self._proc is not None
        try:
            out, err = await asyncio.wait_for(self._proc.communicate(), limit or self.limit)
        except asyncio.TimeoutError:
            self._proc.kill()
            out, err = await self._proc.communicate()
        elapsed = asyncio.get_running_loop().time() - self._t0
        ok, failed, retrans = _counters(self.workdir)
        return SippResult(
            self._proc.returncode if self._proc.returncode is not None else -1,
            ok,
            failed,
            retrans,
            elapsed,
            out.decode(errors="replace"),
            err.decode(errors="replace"),
            self.workdir,
        )

    async def stop(self) -> None:
        """Kill the process if it still runs (test teardown)."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.communicate()


async def start(cmd: list[str], workdir: Path, limit: float = 45.0) -> SippProcess:
    """Start sipp ``cmd`` in ``workdir``, killed after ``limit`` seconds at the latest."""
    return await SippProcess(cmd, workdir, limit).start()


async def ready(port: int, transport: str = "udp", wait: float = 5.0) -> None:
    """Wait until sipp has bound ``port`` on 127.0.0.1 (so a peer can reach it)."""
    import socket

    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    while loop.time() < deadline:
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"sipp did not bind 127.0.0.1:{port}/{transport}")
