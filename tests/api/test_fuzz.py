"""Schemathesis against the app's own OpenAPI document, with auth on: every operation, every
built-in check (server errors, status codes, content types, response schemas and headers,
positive and negative data, ignored auth, unsupported methods, ...).

Kept small here (FUZZ_EXAMPLES per operation, default 20); benchmarks/fuzz.py runs a bigger
campaign against a live server and records the figures.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from models.db import session_scope
from models.keys import create_key

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
MINIMAL = {"model": {"name": "mlp"}, "data": {"name": "digits"}, "optimizer": {"name": "adam"}}
CONFIG = Path(__file__).with_name("schemathesis.toml")  # 422 where JSON Schema cannot tell
# The coverage phase enumerates JobSpec's boundary values and variants: over 5,000 requests for
# POST /v1/jobs alone (minutes here). benchmarks/fuzz.py runs it; this test fuzzes that operation.
QUICK = """
[[operations]]
include-method = "POST"
include-path = "/v1/jobs"
phases.coverage.enabled = false
"""


@pytest.fixture
def fuzz_state(embedded_db: dict, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, object]]:
    from models.settings import get_settings

    monkeypatch.setenv("DESCENT_AUTH", "1")
    get_settings.cache_clear()
    monkeypatch.setattr("api.routes.jobs.enqueue", lambda job_id, queue: None)
    with session_scope() as session:
        # the fuzzer's own limits stay out of its way; test_auth.py tests the limits
        _, secret = create_key(
            session=session, owner="fuzz", requests_per_minute=10**6, max_active_jobs=10**6
        )
    yield {"headers": {"Authorization": f"Bearer {secret}"}}
    get_settings.cache_clear()


def schema_of_the_app() -> schemathesis.BaseSchema:
    # Built at import (schemathesis.pytest.from_fixture does not run under pytest 9): the
    # document does not depend on settings, and the app reads them per request.
    from api.main import create_app

    config = schemathesis.Config.from_str(CONFIG.read_text() + QUICK)
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(), config=config)


schema = schema_of_the_app()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_schema(case: schemathesis.Case, fuzz_state: dict) -> None:
    case.call_and_validate(headers=fuzz_state["headers"])


def test_links_name_operations_that_exist() -> None:
    """The stateful phase (benchmarks/fuzz.py) follows these from a submitted job to its reads."""
    document = schema.raw_schema
    operation_ids = {op["operationId"] for ops in document["paths"].values() for op in ops.values()}
    links = document["paths"]["/v1/jobs"]["post"]["responses"]["201"]["links"]
    assert len(links) == 3
    assert {link["operationId"] for link in links.values()} <= operation_ids


def test_documented_examples_are_valid_specs() -> None:
    from api.routes.jobs import SPEC_EXAMPLES
    from models.spec import JobSpec

    for example in SPEC_EXAMPLES.values():
        JobSpec.model_validate(example["value"])


# What benchmarks/fuzz.py found, kept fixed: each was a 500 on PostgreSQL (SQLite took them).
# since_step past 32 bits (metrics.step is an integer column); a NUL character in text.
FINDINGS = [
    ("GET", "/v1/jobs/{job_id}/metrics?since_step=1060138592692662400", None),
    ("GET", "/v1/compare?jobs={job_id}&metrics=3%C3%AC%00", None),
    ("GET", "/v1/jobs/{job_id}/metrics?names=a%00b", None),
    ("POST", "/v1/jobs", {"name": "a\u0000b", **MINIMAL}),
]


def replay_findings(client: object, job_id: str, headers: dict, *, postgresql: bool) -> None:
    """Never a 5xx; PostgreSQL refuses each value (422), SQLite may store it."""
    for method, url, body in FINDINGS:
        response = client.request(  # type: ignore[attr-defined]
            method, url.format(job_id=job_id), headers=headers, json=body
        )
        assert response.status_code < 500, (url, body, response.text)
        if postgresql or "since_step" in url:
            assert response.status_code == 422, (url, body, response.text)


def test_fuzz_findings_stay_fixed(fuzz_state: dict) -> None:
    from fastapi.testclient import TestClient

    from api.main import create_app

    client = TestClient(create_app())
    job_id = client.post("/v1/jobs", json=MINIMAL, headers=fuzz_state["headers"]).json()["id"]
    replay_findings(client, job_id, fuzz_state["headers"], postgresql=False)


@pytest.mark.services
def test_fuzz_findings_stay_fixed_on_postgresql(
    services_env: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from api.main import create_app

    monkeypatch.setattr("api.routes.jobs.enqueue", lambda job_id, queue: None)
    with session_scope() as session:
        headers = {"Authorization": f"Bearer {create_key(session=session, owner='fuzz')[1]}"}
    client = TestClient(create_app(), raise_server_exceptions=False)
    job_id = client.post("/v1/jobs", json=MINIMAL, headers=headers).json()["id"]
    replay_findings(client, job_id, headers, postgresql=True)
