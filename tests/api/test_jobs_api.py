"""The jobs API in-process on the embedded database; the broker is replaced by a recorder."""

import sys

import pytest
from fastapi.testclient import TestClient

from models.db import session_scope
from models.queries import claim_job, record_progress

MINIMAL = {"model": {"name": "mlp"}, "data": {"name": "digits"}, "optimizer": {"name": "adam"}}


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


def test_submit_stores_and_queues_the_job(client: TestClient, queued: list) -> None:
    response = client.post("/v1/jobs", json={**MINIMAL, "name": "first", "tags": {"k": "v"}})
    assert response.status_code == 201
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["name"] == "first" and job["tags"] == {"k": "v"}
    assert job["spec"]["schedule"]["name"] == "constant"  # defaults filled in
    assert queued == [(job["id"], "any")]
    assert client.get(f"/v1/jobs/{job['id']}").json()["spec_hash"] == job["spec_hash"]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({**MINIMAL, "optimizer": {"name": "adamx"}}, "optimizer.name"),
        ({**MINIMAL, "optimizer": {"name": "adam", "lr": -1}}, "optimizer.lr"),
        ({**MINIMAL, "data": {"name": "digits", "batch_size": "x"}}, "data.batch_size"),
        ({**MINIMAL, "surprise": 1}, "surprise"),
        ({"model": {"name": "mlp"}, "data": {"name": "digits"}}, "optimizer"),
    ],
)
def test_bad_spec_is_422_with_field_path_and_nothing_queued(
    client: TestClient, queued: list, spec: dict, field: str
) -> None:
    response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in [detail["field"] for detail in error["details"]]
    assert queued == []
    assert client.get("/v1/jobs").json()["count"] == 0


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


def test_body_size_limit(monkeypatch: pytest.MonkeyPatch, embedded_db: dict, queued: list) -> None:
    monkeypatch.setenv("DESCENT_MAX_BODY_BYTES", "2000")
    from api.main import create_app
    from models.settings import get_settings

    get_settings.cache_clear()
    client = TestClient(create_app())
    response = client.post("/v1/jobs", json={**MINIMAL, "name": "x" * 3000})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    assert queued == []


def test_unknown_job_is_404(client: TestClient) -> None:
    response = client.get("/v1/jobs/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_list_filters_and_paginates(client: TestClient) -> None:
    ids = [
        client.post("/v1/jobs", json={**MINIMAL, "tags": {"run": str(i)}}).json()["id"]
        for i in range(5)
    ]
    client.post(f"/v1/jobs/{ids[0]}/cancel")
    seen, cursor = [], None
    while True:
        page = client.get("/v1/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        body = page.json()
        seen += [job["id"] for job in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # newest first, each exactly once
    canceled = client.get("/v1/jobs", params={"status": "canceled"}).json()
    assert [job["id"] for job in canceled["data"]] == [ids[0]]
    tagged = client.get("/v1/jobs", params={"tag": "run:3"}).json()
    assert [job["id"] for job in tagged["data"]] == [ids[3]]
    assert client.get("/v1/jobs", params={"cursor": "garbage"}).status_code == 422


def test_cancel_queued_job_never_starts(client: TestClient) -> None:
    job_id = client.post("/v1/jobs", json=MINIMAL).json()["id"]
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "canceled"
    with session_scope() as session:
        assert claim_job(session=session, job_id=job_id, worker="w", lease_seconds=10) is None


def test_cancel_running_job_sets_the_flag(client: TestClient) -> None:
    job_id = client.post("/v1/jobs", json=MINIMAL).json()["id"]
    with session_scope() as session:
        claim_job(session=session, job_id=job_id, worker="w", lease_seconds=10)
    body = client.post(f"/v1/jobs/{job_id}/cancel").json()
    assert body["status"] == "running" and body["cancel_requested"] is True


def test_metrics_are_read_by_name_incrementally_and_downsampled(client: TestClient) -> None:
    job_id = client.post("/v1/jobs", json=MINIMAL).json()["id"]
    with session_scope() as session:
        claim = claim_job(session=session, job_id=job_id, worker="w", lease_seconds=10)
        points = [
            {
                "name": "train_loss",
                "step": s,
                "value": 1 / s,
                "epoch": s / 10,
                "wall_time": s * 0.01,
            }
            for s in range(1, 201)
        ]
        points[100]["value"] = 50.0  # a spike downsampling must keep
        points.append({"name": "val_acc", "step": 200, "value": 0.9, "epoch": 20, "wall_time": 2.0})
        record_progress(
            session=session,
            job_id=job_id,
            attempt=claim.attempt,
            points=points,
            step=200,
            epoch=20,
            total_steps=400,
            total_epochs=40,
            lease_seconds=10,
        )
    url = f"/v1/jobs/{job_id}/metrics"
    full = client.get(url, params={"names": "train_loss,val_acc"}).json()
    assert len(full["series"]["train_loss"]["steps"]) == 200 and full["last_step"] == 200
    newer = client.get(url, params={"names": "train_loss", "since_step": 150}).json()
    assert newer["series"]["train_loss"]["steps"] == list(range(151, 201))
    small = client.get(url, params={"names": "train_loss", "max_points": 20}).json()
    values = small["series"]["train_loss"]["values"]
    assert len(values) <= 20 and 50.0 in values and values[-1] == 1 / 200
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["progress"] == {
        "step": 200,
        "total_steps": 400,
        "epoch": 20.0,
        "total_epochs": 40.0,
        "fraction": 0.5,
    }


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_docs_are_served(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    assert "/v1/jobs" in client.get("/openapi.json").json()["paths"]


def test_api_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, api.main; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
