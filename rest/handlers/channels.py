"""Routes of this resource family. STUB laid down by the skeleton."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application, prefix: str) -> None:
    """Add this module's routes under ``prefix``."""
