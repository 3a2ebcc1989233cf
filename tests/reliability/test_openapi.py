"""schemathesis against the gateway's own /openapi.json: generated requests (valid and invalid) to
every documented operation never get a 5xx, and every reply matches the spec.

The spec is generated from the registered routes (gateway/openapi.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.errors
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.harness import ADMIN_KEY, Gateway, http
from tests.reliability.accounting import COLUMNS

EXAMPLES_PER_OPERATION = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def fuzz(spec: dict[str, Any], base_url: str, key: str) -> list[str]:
    """Run bounded, derandomized schemathesis examples on every operation; the failures."""
    schema = schemathesis.openapi.from_dict(spec)
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                case.call_and_validate(
                    base_url=base_url, headers={"X-Api-Key": key}, checks=CHECKS, timeout=30
                )

            try:
                check()
            except hypothesis.errors.Unsatisfiable:
                continue  # nothing to make invalid (e.g. no parameters and no body)
            except Exception as exc:  # every operation is tried; all failures are reported
                failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}")
    return failures


def test_schemathesis_against_own_openapi(kafka: str, tmp_path: Path) -> None:
    gw = Gateway(tmp_path, kafka).start()
    try:
        gw.create_stream("fuzzed", COLUMNS)  # a stream for the generated ingest requests to hit
        reply = http("GET", gw.url + "/openapi.json")
        assert reply.status == 200, "the gateway serves no /openapi.json yet"
        failures = fuzz(reply.json(), gw.url, ADMIN_KEY)
        assert not failures, "\n\n".join(failures)
        assert http("GET", gw.url + "/healthz").status == 200
    finally:
        assert gw.stop() == 0, gw.log()[-3000:]
