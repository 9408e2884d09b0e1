"""A throwaway PostgreSQL server for the store tests.

``CHAT_BRIDGE_TEST_POSTGRES_URL`` (any SQLAlchemy URL of a database the tests
may create databases in) wins. Otherwise the fixture starts a private cluster
from ``/usr/lib/postgresql/*/bin`` in a temporary directory, on a unix socket
and a free 127.0.0.1 port; as root, initdb and postgres run as the
``postgres`` system user (initdb refuses root). The cluster is stopped at the
end of the session. Without either: the test fails when ``CI`` is set (the
test command installs PostgreSQL), else it is skipped.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.engine import make_url

ENV_URL = "CHAT_BRIDGE_TEST_POSTGRES_URL"


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(found[0]).parent if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL unavailable: {reason} (scripts/test installs postgresql)")
    pytest.skip(f"PostgreSQL unavailable: {reason}")


class _Cluster:
    """A private PostgreSQL cluster run by ``pg_ctl``."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="chat-bridge-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.prefix = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        cmd = [*self.prefix, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stdout}\n{proc.stderr}")

    def start(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=100"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-o",
            opts,
            "-w",
            "-t",
            "30",
            "start",
        )

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL (postgresql+asyncpg) of a server whose role may create databases."""
    env = os.environ.get(ENV_URL)
    if env:
        yield env
        return
    bindir = _pg_bindir()
    if bindir is None:
        _unavailable("no /usr/lib/postgresql/*/bin/initdb and no " + ENV_URL)
    assert bindir is not None
    cluster = _Cluster(bindir)
    try:
        cluster.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(cluster.root, ignore_errors=True)
        _unavailable(str(exc))
    try:
        yield cluster.url
    finally:
        cluster.stop()


async def create_database(server_url: str) -> tuple[str, str]:
    """Create an empty database on ``server_url``; return (its URL, its name)."""

    url = make_url(server_url).set(drivername="postgresql+asyncpg")
    name = "cb_" + secrets.token_hex(6)
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        database=url.database or "postgres",
    )
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return url.set(database=name).render_as_string(hide_password=False), name


async def drop_database(server_url: str, name: str) -> None:
    """Drop a database made by :func:`create_database`."""

    url = make_url(server_url)
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        database=url.database or "postgres",
    )
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
