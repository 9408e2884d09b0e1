"""The ``chat-bridge`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable

from bridge import __version__
from bridge.config import load_settings
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``chat-bridge`` console script."""
    parser = argparse.ArgumentParser(prog="chat-bridge", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="run the bridge (REST + SIP/MSRP)")
    serve_p.add_argument("--config", help="YAML settings file (else CHAT_BRIDGE_CONFIG)")
    config_p = sub.add_parser("config", help="print the effective settings as JSON")
    config_p.add_argument("--config", help="YAML settings file")
    config_p.add_argument(
        "--example", action="store_true", help="print a YAML file of every setting instead"
    )
    args = parser.parse_args(argv)
    if args.command == "config" and args.example:
        from bridge.config import example_yaml

        print(example_yaml(), end="")
        return 0
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"chat-bridge: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "config":
        print(settings.model_dump_json(indent=2))
        return 0
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
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
