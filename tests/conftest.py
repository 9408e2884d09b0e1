"""Shared pytest configuration.

Hypothesis: CI (``CI`` set) runs a derandomized profile, so a landing is judged on the
same examples every time; development runs explore new random examples (and record
them in .hypothesis/). No profile has a per-example deadline: the 2-core CI machine is
shared, and wall-clock deadlines there only produce flakes.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

pytest_plugins = [
    "tests.testbed_fixture",
    "tests.pg_fixture",
    "tests.db_fixtures",
    "tests.receiver_fixture",
]
