"""The ``chat-bridge`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable

from bridge import __version__
from bridge.config import Settings, load_settings, mask_text, masked_dump, unknown_variables
from bridge.errors import ConfigError


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop factory for ``choice`` (``auto``: uvloop if it is installed)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("event_loop is uvloop but uvloop is not installed") from None
        return None
    return uvloop.new_event_loop


def migrate(settings: Settings) -> int:
    """``chat-bridge migrate``: apply the pending migrations, print the version reached."""
    from state.db import Database

    async def run() -> int:
        database = Database(settings.database_url)
        try:
            return await database.migrate()
        finally:
            await database.close()

    try:
        version = asyncio.run(run())
    except Exception as exc:  # ours (StoreError) or the driver's: refused, unreachable
        print(f"chat-bridge: cannot migrate the store: {mask_text(str(exc))}", file=sys.stderr)
        return 1
    print(f"schema version {version}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``chat-bridge`` console script."""
    parser = argparse.ArgumentParser(prog="chat-bridge", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="run the bridge (REST + SIP/MSRP)")
    config_p = sub.add_parser(
        "config", help="print the effective settings as JSON (secrets masked)"
    )
    config_p.add_argument(
        "--example", action="store_true", help="print a YAML file of every setting instead"
    )
    migrate_p = sub.add_parser(
        "migrate", help="bring the store to the current schema, print its version, and exit"
    )
    for command in (serve_p, config_p, migrate_p):
        command.add_argument("--config", help="YAML settings file (else CHAT_BRIDGE_CONFIG)")
        command.add_argument(
            "--strict",
            action="store_true",
            help="refuse unknown CHAT_BRIDGE_* environment variables (exit 2)",
        )
    args = parser.parse_args(argv)
    if args.command == "config" and args.example:
        from bridge.config import example_yaml

        print(example_yaml(), end="")
        return 0
    unknown = unknown_variables(os.environ)
    for line in unknown:
        print(f"chat-bridge: {'error' if args.strict else 'warning'}: {line}", file=sys.stderr)
    if unknown and args.strict:
        return 2
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"chat-bridge: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "config":
        print(json.dumps(masked_dump(settings), indent=2))
        return 0
    if args.command == "migrate":
        return migrate(settings)
    from bridge.observability.logs import setup_logging

    setup_logging(settings)  # text or JSON lines, secrets hidden (docs/operations.md)
    from bridge.app import serve

    try:
        with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
            runner.run(serve(settings))
    except KeyboardInterrupt:
        pass
    except ConfigError as exc:
        print(f"chat-bridge: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a listener could not bind (port in use, bad address)
        print(f"chat-bridge: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
