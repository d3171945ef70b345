"""POST /v1/ensembles in-process on the embedded database: members are checked without torch, the
ensemble becomes a queued job of `task: ensemble`, bad member sets are 422 with the reason."""

import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from models.db import session_scope
from models.queries import create_job
from models.spec import JobSpec

MEMBER = {
    "model": {"name": "mlp"},
    "data": {"name": "digits", "split_seed": 3},
    "optimizer": {"name": "adam"},
}


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(
        "api.routes.jobs.enqueue", lambda job_id, queue: sent.append((job_id, queue))
    )
    return sent


@pytest.fixture
def client(embedded_db: dict, queued: list) -> TestClient:
    from api.main import create_app

    return TestClient(create_app())


def finished_job(spec: dict, status: str = "succeeded", owner: str = "local") -> str:
    with session_scope() as session:
        job = create_job(
            session=session, spec=JobSpec.model_validate(spec), submitted=spec, owner=owner
        )
        job.status = status
        return job.id


def test_ensemble_of_seeds_is_queued_as_a_job(client: TestClient, queued: list) -> None:
    ids = [finished_job({**MEMBER, "seed": seed}) for seed in (0, 1, 2)]
    response = client.post("/v1/ensembles", json={"jobs": ids, "name": "three seeds"})
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "queued" and job["name"] == "three seeds"
    assert job["spec"] == {
        "version": 1,
        "name": "three seeds",
        "tags": {},
        "task": "ensemble",
        "ensemble": {"jobs": ids},
        "device": "auto",
    }
    assert queued == [(job["id"], "any")]
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"


@pytest.mark.parametrize(
    ("second", "status", "owner", "reason"),
    [
        ({**MEMBER, "seed": 1, "optimizer": {"name": "sgd"}}, "succeeded", "local", "more than"),
        ({**MEMBER, "seed": 1}, "running", "local", "is running, not succeeded"),
        ({**MEMBER, "seed": 1}, "succeeded", "someone-else", "no job"),
        ({**MEMBER, "seed": 1, "data": {"name": "digits"}}, "succeeded", "local", "more than"),
    ],
)
def test_bad_member_sets_are_422_and_nothing_is_queued(
    client: TestClient, queued: list, second: dict, status: str, owner: str, reason: str
) -> None:
    ids = [finished_job({**MEMBER, "seed": 0}), finished_job(second, status, owner)]
    response = client.post("/v1/ensembles", json={"jobs": ids})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_ensemble" and reason in error["message"]
    assert queued == []


@pytest.mark.parametrize(
    "body",
    [{"jobs": ["only-one"]}, {"jobs": ["a", "a"]}, {"jobs": ["a", "b"], "extra": 1}, {}],
)
def test_malformed_bodies_are_422_validation_errors(client: TestClient, body: dict) -> None:
    response = client.post("/v1/ensembles", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


def test_the_api_still_does_not_import_torch() -> None:
    probe = "import sys, api.main, api.routes.ensembles; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
