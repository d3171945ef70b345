"""GET /v1/compare (downsampled series that keep every spike, a table of final and best values
and time to target) and the server-sent-events stream of a job, on the embedded database."""

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from models.db import session_scope
from models.queries import claim_job, finish_job, record_progress
from models.tables import JobStatus

MINIMAL = {"model": {"name": "mlp"}, "data": {"name": "digits"}, "optimizer": {"name": "adam"}}


@pytest.fixture
def client(embedded_db: dict, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    from api.main import create_app

    monkeypatch.setattr("api.routes.jobs.enqueue", lambda job_id, queue: None)
    return TestClient(create_app())


def job_with(client: TestClient, curves: dict[str, np.ndarray], *, finish: bool = True) -> str:
    job_id = client.post("/v1/jobs", json=MINIMAL).json()["id"]
    with session_scope() as session:
        claim = claim_job(session=session, job_id=job_id, worker="w", lease_seconds=30)
        assert claim is not None
    # Several flushes, as a worker writes them.
    for chunk in range(4):
        points = [
            {"name": name, "step": s, "value": float(v[s]), "epoch": s / 100, "wall_time": s / 10}
            for name, v in curves.items()
            for s in range(chunk * len(v) // 4, (chunk + 1) * len(v) // 4)
        ]
        with session_scope() as session:
            record_progress(
                session=session,
                job_id=job_id,
                attempt=claim.attempt,
                points=points,
                step=(chunk + 1) * 10,
                epoch=0.1,
                lease_seconds=30,
            )
    if finish:
        with session_scope() as session:
            finish_job(
                session=session, job_id=job_id, attempt=claim.attempt, status=JobStatus.succeeded
            )
    return job_id


def noisy(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.exp(-np.arange(n) / (n / 4)) + 0.05 * rng.normal(size=n)


def test_compare_downsamples_each_series_and_keeps_its_extremes(client: TestClient) -> None:
    losses = [noisy(6000, seed) for seed in range(3)]
    losses[1][4321] = 9.0  # a spike that a stride would miss
    accuracy = np.linspace(0.1, 0.95, 6000)
    ids = [job_with(client, {"train_loss": loss, "val_acc": accuracy}) for loss in losses]
    response = client.get(
        "/v1/compare",
        params={"jobs": ",".join(ids), "metrics": "train_loss,val_acc", "max_points": 100},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["x"] == "step" and [j["id"] for j in body["jobs"]] == ids
    for job_id, loss in zip(ids, losses, strict=True):
        curve = body["series"][job_id]["train_loss"]
        assert 50 <= len(curve["y"]) <= 100
        assert max(curve["y"]) == loss.max() and min(curve["y"]) == loss.min()
        assert (
            curve["x"] == curve["steps"] and curve["steps"][0] == 0 and curve["steps"][-1] == 5999
        )
        assert np.allclose(curve["y"], loss[curve["steps"]])
        table = next(j for j in body["jobs"] if j["id"] == job_id)["metrics"]["train_loss"]
        assert table["count"] == 6000 and table["final"] == loss[-1]
        assert (table["min"], table["max"]) == (loss.min(), loss.max())
        assert table["min_step"] == int(loss.argmin()) and table["best"] == loss.min()
    assert 9.0 in body["series"][ids[1]]["train_loss"]["y"]
    by_time = client.get(
        "/v1/compare", params={"jobs": ids[0], "metrics": "val_acc", "x": "time", "max_points": 50}
    ).json()
    curve = by_time["series"][ids[0]]["val_acc"]
    assert curve["x"] == pytest.approx([s / 10 for s in curve["steps"]])


def test_compare_reports_time_to_target(client: TestClient) -> None:
    fast = job_with(client, {"val_acc": np.linspace(0.0, 1.0, 101)})
    slow = job_with(client, {"val_acc": np.linspace(0.0, 0.5, 101)})
    body = client.get(
        "/v1/compare", params={"jobs": f"{fast},{slow}", "target": "val_acc>=0.9"}
    ).json()
    hits = {j["id"]: j["target"] for j in body["jobs"]}
    assert hits[fast] == {"reached": True, "step": 90, "time_s": 9.0, "epoch": 0.9}
    assert hits[slow] == {"reached": False, "step": None, "time_s": None, "epoch": None}
    assert body["target"] == {"metric": "val_acc", "value": 0.9, "mode": "max"}
    lower = client.get("/v1/compare", params={"jobs": fast, "target": "val_acc<=0.05"}).json()
    assert lower["jobs"][0]["target"]["step"] == 0


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"jobs": "0" * 36}, 404),
        ({"jobs": "{job}", "target": "val_acc>0.9"}, 422),
        ({"jobs": ",".join(str(i) for i in range(51))}, 422),
        ({"jobs": "{job}", "max_points": 2}, 422),
    ],
)
def test_compare_rejects_what_it_cannot_answer(
    client: TestClient, params: dict, status: int
) -> None:
    job_id = job_with(client, {"val_acc": np.ones(10)})
    params = {k: v.format(job=job_id) if isinstance(v, str) else v for k, v in params.items()}
    assert client.get("/v1/compare", params=params).status_code == status


def events_of(text: str) -> list[tuple[str, dict, str | None]]:
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            out.append((fields["event"], json.loads(fields["data"]), fields.get("id")))
    return out


def test_events_stream_progress_metrics_and_the_end(client: TestClient) -> None:
    job_id = job_with(client, {"train_loss": np.linspace(1.0, 0.1, 40)})
    with client.stream("GET", f"/v1/jobs/{job_id}/events", params={"interval": 0.1}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = events_of("".join(stream.iter_text()))
    kinds = [kind for kind, _, _ in events]
    assert kinds == ["progress", "metrics", "end"]
    progress, metrics, end = (data for _, data, _ in events)
    assert progress["status"] == "succeeded"
    assert metrics["series"]["train_loss"]["steps"] == list(range(40))
    assert events[1][2] == "39" and metrics["last_step"] == 39
    assert end["status"] == "succeeded" and "summary" in end
    # Reconnecting with Last-Event-ID sends only what came after it: here nothing.
    with client.stream(
        "GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "39"}
    ) as stream:
        again = [kind for kind, _, _ in events_of("".join(stream.iter_text()))]
    assert again == ["progress", "end"]
    assert client.get(f"/v1/jobs/{'0' * 36}/events").status_code == 404
