"""Schema-driven test: schemathesis against ``chat-bridge serve`` on the embedded default.

The bridge is started as a subprocess (tests/serve_process.py); its own
``GET /openapi.json`` is loaded and every operation gets a fixed,
derandomized number of generated requests, positive (valid path users, bodies
from the pydantic schemas, in JSON, XML or form encoding) and negative. Each
answer must not be a 5xx and must conform to the document: a documented
status, its content type, its headers (``Location`` on 201) and its body
schema. A finding is a bug in rest/ (or in the document), not noise.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.serve_process import ServeProcess, serve_env
from tests.testbed_fixture import free_port_block

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("OPENAPI_EXAMPLES", "6"))
"""Generated requests per operation (derandomized: the same ones on every run)."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@dataclass
class Served:
    serve: ServeProcess
    schema: schemathesis.schemas.BaseSchema


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("openapi")
    base = free_port_block(size=4)
    env = serve_env(
        tmp / "bridge.db",
        http_port=base,
        sip_port=base + 1,
        CHAT_BRIDGE_CHAT_INVITE_TIMEOUT="3",
        CHAT_BRIDGE_CHANNEL_POLL_TIMEOUT="1",
        CHAT_BRIDGE_LOG_LEVEL="INFO",
    )
    serve = ServeProcess(env, tmp / "bridge.log", base)
    asyncio.run(serve.start())
    try:
        schema = schemathesis.openapi.from_url(serve.root + "/openapi.json", timeout=10)
        yield Served(serve, schema)
    finally:
        serve.stop()


@pytest.mark.parametrize(
    "mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
)
def test_no_server_error_and_no_contradiction_of_the_document(
    served: Served, mode: schemathesis.GenerationMode
) -> None:
    started = time.monotonic()
    failures: list[str] = []
    operations: list[str] = []
    statuses: Counter[int] = Counter()
    with requests.Session() as http:
        for result in served.schema.get_all_operations():
            operation = result.ok()
            operations.append(operation.label)
            strategy = operation.as_strategy(mode)

            @settings(
                max_examples=EXAMPLES,
                derandomize=True,
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def run(case: schemathesis.Case) -> None:
                try:
                    response = case.call_and_validate(
                        base_url=served.serve.root, session=http, checks=CHECKS, timeout=10
                    )
                    statuses[response.status_code] += 1
                except Exception as exc:  # collect them all, report at the end
                    failures.append(f"{case.operation.label}: {exc}")

            try:
                run()
            except Unsatisfiable:  # negative mode: nothing to negate (no parameter, no body)
                assert mode is not schemathesis.GenerationMode.POSITIVE
    elapsed = time.monotonic() - started
    logging.getLogger(__name__).info(
        "%s: %d requests in %.1f s: %s", mode, statuses.total(), elapsed, sorted(statuses.items())
    )
    log = Path(served.serve.log).read_text()
    assert not failures, "\n\n".join(dict.fromkeys(failures)) + "\n" + log[-3000:]
    # every documented operation was exercised (schemathesis skips the document's own URL)
    assert len(operations) == 41 and "GET /openapi.json" not in operations, operations
    assert "x unhandled error" not in log
    assert elapsed < 50, f"took {elapsed:.0f} s"
    if mode is schemathesis.GenerationMode.POSITIVE:  # valid data reaches the handlers
        assert statuses[200] and statuses[201], statuses
