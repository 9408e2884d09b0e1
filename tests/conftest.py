"""Shared pytest configuration."""

from __future__ import annotations

pytest_plugins = ["tests.testbed_fixture", "tests.pg_fixture"]
