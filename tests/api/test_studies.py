"""Studies through the API on the embedded database. The broker is replaced by a recorder, the
driver's rounds run in this process, and the trial jobs are "run" by writing their metrics
through the same ledger calls a worker uses (no torch)."""

import math

import pytest
from fastapi.testclient import TestClient
from scipy import stats as scipy_stats

from models.db import session_scope
from models.queries import claim_job, finish_job, record_progress
from models.tables import JobStatus

BASE = {
    "model": {"name": "mlp", "args": {"hidden": [8]}},
    "data": {"name": "digits"},
    "optimizer": {"name": "sgd"},
    "max_steps": 20,
}
# val_acc per (lr, seed): lr 0.1 is clearly better than lr 0.01.
ACCURACY = {(0.01, 0): 0.80, (0.01, 1): 0.82, (0.01, 2): 0.78, (0.1, 0): 0.90, (0.1, 1): 0.93}
ACCURACY[(0.1, 2)] = 0.91


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every message the API or the driver would send to the broker."""
    messages: list[tuple] = []
    monkeypatch.setattr(
        "api.routes.studies.send_driver",
        lambda study_id, token: messages.append(("drive", study_id, token)),
    )
    monkeypatch.setattr(
        "api.routes.jobs.enqueue", lambda job_id, queue: messages.append(("job", job_id))
    )

    def send_task(name, args=None, **kwargs):  # type: ignore[no-untyped-def]
        messages.append(("drive" if name == "drive_study" else "job", *args))

    monkeypatch.setattr("worker.studies.app.send_task", send_task)
    return messages


@pytest.fixture
def client(embedded_db: dict, sent: list) -> TestClient:
    from api.main import create_app

    return TestClient(create_app())


def token_of(sent: list, study_id: str) -> str:
    return [m for m in sent if m[0] == "drive" and m[1] == study_id][-1][2]


def run_round(sent: list, study_id: str) -> None:
    from worker.studies import drive

    drive(study_id, token_of(sent, study_id))


def complete(
    job_id: str, curve: list[tuple[int, float]], status: JobStatus = JobStatus.succeeded
) -> None:
    """What a worker does for a job: claim it, flush its points, finish it."""
    with session_scope() as session:
        claim = claim_job(session=session, job_id=job_id, worker="test", lease_seconds=30)
        assert claim is not None
    points = [
        {"name": "val_acc", "step": s, "value": v, "epoch": s / 10, "wall_time": s / 2}
        for s, v in curve
    ]
    with session_scope() as session:
        record_progress(
            session=session,
            job_id=job_id,
            attempt=claim.attempt,
            points=points,
            step=curve[-1][0] if curve else 0,
            epoch=1.0,
            lease_seconds=30,
        )
        finish_job(session=session, job_id=job_id, attempt=claim.attempt, status=status)


def study_jobs(client: TestClient, study_id: str) -> list[dict]:
    return client.get("/v1/jobs", params={"tag": f"study:{study_id}", "limit": 500}).json()["data"]


def create_grid(client: TestClient, **extra: object) -> dict:
    body = {
        "name": "lr grid",
        "base": BASE,
        "space": {"optimizer.lr": [0.01, 0.1]},
        "seeds": 3,
        "objective": {"metric": "val_acc", "target": 0.85},
        **extra,
    }
    response = client.post("/v1/studies", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_grid_study_runs_every_configuration_per_seed_and_summarizes_them(
    client: TestClient, sent: list
) -> None:
    study = create_grid(client)
    assert study["status"] == "running" and study["budget"] == 2 and study["seeds"] == [0, 1, 2]
    assert study["objective"]["direction"] == "max"  # inferred from the metric's name
    run_round(sent, study["id"])
    jobs = study_jobs(client, study["id"])
    assert len(jobs) == 6
    assert sorted(m[1] for m in sent if m[0] == "job") == sorted(j["id"] for j in jobs)
    assert {(j["spec"]["optimizer"]["lr"], j["spec"]["seed"]) for j in jobs} == set(ACCURACY)
    assert all(j["tags"]["study"] == study["id"] for j in jobs)
    for job in jobs:
        final = ACCURACY[(job["spec"]["optimizer"]["lr"], job["spec"]["seed"])]
        # lr 0.1 passes the target 0.85 at step 10 on seeds 0 and 1, at step 20 on seed 2.
        first = 0.86 if job["spec"]["optimizer"]["lr"] == 0.1 and job["spec"]["seed"] < 2 else 0.5
        complete(job["id"], [(10, first), (20, final)])
    run_round(sent, study["id"])
    done = client.get(f"/v1/studies/{study['id']}").json()
    assert done["status"] == "succeeded"
    rows = {row["label"]: row for row in done["summary"]["rows"]}
    assert set(rows) == {"lr=0.01", "lr=0.1"}
    low, high = [ACCURACY[(0.01, s)] for s in range(3)], [ACCURACY[(0.1, s)] for s in range(3)]
    best = rows["lr=0.1"]
    assert (best["rank"], best["n"], best["seeds"]) == (1, 3, 3)
    assert best["mean"] == pytest.approx(sum(high) / 3)
    interval = scipy_stats.t.interval(0.95, 2, loc=sum(high) / 3, scale=scipy_stats.sem(high))
    assert (best["ci_low"], best["ci_high"]) == pytest.approx(interval)
    assert best["best"] == 0.93
    # Seeds 0 and 1 first pass 0.85 at step 10 (5 s), seed 2 at step 20: median step 10.
    assert best["reached"] == "3/3" and best["steps_to_target"] == 10
    assert best["time_to_target_s"] == pytest.approx(5.0)
    other = rows["lr=0.01"]
    assert other["rank"] == 2 and other["reached"] == "0/3" and other["steps_to_target"] is None
    welch = scipy_stats.ttest_ind(high, low, equal_var=False)
    assert other["vs_best"]["p_value"] == pytest.approx(welch.pvalue)
    assert other["vs_best"]["p_adjusted"] == pytest.approx(welch.pvalue)  # one comparison
    assert other["vs_best"]["difference"] == pytest.approx(sum(low) / 3 - sum(high) / 3)
    csv = client.get(f"/v1/studies/{study['id']}", params={"format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0].startswith("rank,label,state,n,mean")
    assert csv.text.splitlines()[1].startswith("1,lr=0.1,complete,3,")
    markdown = client.get(f"/v1/studies/{study['id']}", params={"format": "markdown"}).text
    assert "| 1 | lr=0.1 | 3/3 |" in markdown and "reached 0.85" in markdown
    bootstrap = client.get(f"/v1/studies/{study['id']}", params={"test": "bootstrap"}).json()
    vs = {r["label"]: r["vs_best"] for r in bootstrap["summary"]["rows"]}["lr=0.01"]
    assert vs["test"] == "bootstrap" and vs["ci_high"] < 0


def test_failed_and_diverged_seeds_are_counted_but_have_no_result(
    client: TestClient, sent: list
) -> None:
    study = create_grid(client, space={"optimizer.lr": [0.1]}, seeds=3)
    run_round(sent, study["id"])
    jobs = sorted(study_jobs(client, study["id"]), key=lambda j: j["spec"]["seed"])
    complete(jobs[0]["id"], [(20, 0.9)])
    complete(jobs[1]["id"], [(20, 0.7)], status=JobStatus.diverged)
    complete(jobs[2]["id"], [], status=JobStatus.failed)
    run_round(sent, study["id"])
    row = client.get(f"/v1/studies/{study['id']}").json()["summary"]["rows"][0]
    assert row["n"] == 1 and row["mean"] == 0.9 and row["std"] is None and row["ci_low"] is None
    assert row["statuses"] == {"succeeded": 1, "diverged": 1, "failed": 1}
    assert row["reached"] == "1/3" and row["steps_to_target"] is None  # 2 of 3 never reached


def test_driver_restart_continues_the_sampler_without_repeating(
    client: TestClient, sent: list
) -> None:
    """A random-sampler study, one configuration in flight at a time; between rounds the driver
    is "restarted" (a new token, as a worker does on start). Every configuration is asked once,
    each new one after the last finished, and the study ends after its budget."""
    body = {
        "base": BASE,
        "space": {"optimizer.lr": {"type": "float", "low": 0.001, "high": 1.0, "log": True}},
        "sampler": {"name": "tpe", "seed": 7, "args": {"n_startup_trials": 2}},
        "budget": 5,
        "max_concurrent": 1,
        "objective": {"metric": "val_acc"},
    }
    study = client.post("/v1/studies", json=body).json()
    seen: list[float] = []
    for _ in range(5):
        run_round(sent, study["id"])
        queued = [j for j in study_jobs(client, study["id"]) if j["status"] == "queued"]
        assert len(queued) == 1
        lr = queued[0]["spec"]["optimizer"]["lr"]
        assert 0.001 <= lr <= 1.0 and lr not in seen
        seen.append(lr)
        complete(queued[0]["id"], [(20, 1.0 - abs(math.log10(lr) + 1) / 3)])
        assert client.post(f"/v1/studies/{study['id']}/resume").status_code == 200
    run_round(sent, study["id"])
    done = client.get(f"/v1/studies/{study['id']}").json()
    assert done["status"] == "succeeded" and done["summary"]["configurations"] == 5
    assert len(study_jobs(client, study["id"])) == 5
    stale = [m for m in sent if m[0] == "drive" and m[1] == study["id"]][0][2]
    from worker.studies import drive

    assert drive(study["id"], stale) == "done"  # an old chain's message does nothing


@pytest.mark.parametrize("sampler", ["random", "cmaes", "nsga2"])
def test_optuna_samplers_ask_within_the_space(client: TestClient, sent: list, sampler: str) -> None:
    body = {
        "base": BASE,
        "space": {
            "optimizer.lr": {"type": "float", "low": 0.001, "high": 0.5},
            "max_steps": {"type": "int", "low": 5, "high": 30},
        },
        "sampler": {"name": sampler, "seed": 1},
        "budget": 4,
        "max_concurrent": 4,
        "objective": {"metric": "val_acc"},
    }
    study = client.post("/v1/studies", json=body).json()
    run_round(sent, study["id"])
    jobs = study_jobs(client, study["id"])
    assert len(jobs) == 4
    points = {(j["spec"]["optimizer"]["lr"], j["spec"]["max_steps"]) for j in jobs}
    assert len(points) == 4
    assert all(0.001 <= lr <= 0.5 and 5 <= steps <= 30 for lr, steps in points)


def test_median_pruner_stops_a_configuration_that_trails(client: TestClient, sent: list) -> None:
    body = {
        "base": BASE,
        "space": {"optimizer.lr": [0.1, 0.2, 0.3, 0.001]},
        "budget": 4,
        "max_concurrent": 4,
        "objective": {"metric": "val_acc"},
        "pruner": {"name": "median", "args": {"n_startup_trials": 3}},
    }
    study = client.post("/v1/studies", json=body).json()
    run_round(sent, study["id"])
    by_lr = {j["spec"]["optimizer"]["lr"]: j for j in study_jobs(client, study["id"])}
    for lr in (0.1, 0.2, 0.3):
        complete(by_lr[lr]["id"], [(10, 0.8), (20, 0.9)])
    # The slow one has reported step 10 only, far below the others' 0.8 there.
    with session_scope() as session:
        claim = claim_job(session=session, job_id=by_lr[0.001]["id"], worker="w", lease_seconds=30)
        assert claim is not None
        record_progress(
            session=session,
            job_id=by_lr[0.001]["id"],
            attempt=claim.attempt,
            points=[{"name": "val_acc", "step": 10, "value": 0.2, "epoch": 1.0, "wall_time": 1.0}],
            step=10,
            epoch=1.0,
            lease_seconds=30,
        )
    run_round(sent, study["id"])
    slow = client.get(f"/v1/jobs/{by_lr[0.001]['id']}").json()
    assert slow["cancel_requested"] is True
    rows = {
        r["label"]: r for r in client.get(f"/v1/studies/{study['id']}").json()["summary"]["rows"]
    }
    assert rows["lr=0.001"]["state"] == "pruned" and rows["lr=0.001"]["rank"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"base": BASE, "space": {"optimizer.lrr": [0.1]}}, "optimizer.lrr"),
        ({"base": BASE, "space": {"optimizer.lr": [0.1, -1.0]}}, "optimizer.lr"),
        (
            {"base": BASE, "space": {"optimizer.lr": {"type": "float", "low": 0.1, "high": 1}}},
            "space.optimizer.lr",
        ),
        (
            {"base": {**BASE, "optimizer": {"name": "nope"}}, "space": {"epochs": [1]}},
            "base.optimizer.name",
        ),
        ({"preset": "no_such_preset"}, "preset"),
        ({"base": BASE, "space": {"epochs": [1, 2]}, "budget": 3}, "budget"),
    ],
)
def test_invalid_study_is_422_with_the_field(
    client: TestClient, sent: list, body: dict, field: str
) -> None:
    response = client.post("/v1/studies", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert any(field in detail["field"] for detail in error["details"]), error
    assert not [m for m in sent if m[0] == "drive"]


def test_presets_are_listed_and_runnable_with_overrides(client: TestClient, sent: list) -> None:
    presets = {p["name"]: p for p in client.get("/v1/studies/presets").json()}
    assert {"mnist_showdown", "starting_recipe"} <= set(presets)
    response = client.post(
        "/v1/studies",
        json={
            "preset": "mnist_showdown",
            "seeds": 1,
            "overrides": {"epochs": 1, "data.args": {"subset": 100, "source": "bundled"}},
        },
    )
    assert response.status_code == 201, response.text
    study = response.json()
    assert study["preset"] == "mnist_showdown" and study["budget"] == 6
    assert study["base_spec"]["epochs"] == 1
    run_round(sent, study["id"])
    jobs = {j["tags"]["config"]: j for j in study_jobs(client, study["id"])}
    assert set(jobs) == {"Adam", "RMSprop", "SGD+momentum", "SGD", "Adagrad", "Adadelta"}
    adadelta = jobs["Adadelta"]["spec"]["optimizer"]
    assert adadelta["lr"] == 0.001 and adadelta["args"]["rho"] == 0.95
    assert jobs["Adam"]["spec"]["optimizer"]["args"]["eps"] == 1e-7
    assert (
        jobs["SGD"]["spec"]["optimizer"]["args"]["momentum"] == 0.0
    )  # args of the old name dropped
    for label, job in jobs.items():
        complete(job["id"], [(10, 0.5 + len(label) / 100)])
    run_round(sent, study["id"])
    markdown = client.get(f"/v1/studies/{study['id']}", params={"format": "markdown"}).text
    assert "| published |" in markdown.replace("published |", "published |")
    assert "| 0.9908 |" in markdown and "| 0.8375 |" in markdown
    assert "Published: 001" in markdown


def test_cancel_stops_the_study_and_its_unfinished_jobs(client: TestClient, sent: list) -> None:
    study = create_grid(client)
    run_round(sent, study["id"])
    jobs = study_jobs(client, study["id"])
    complete(jobs[0]["id"], [(20, 0.9)])
    assert client.post(f"/v1/studies/{study['id']}/cancel").json()["status"] == "canceled"
    statuses = sorted(j["status"] for j in study_jobs(client, study["id"]))
    assert statuses == ["canceled"] * 5 + ["succeeded"]
    assert client.post(f"/v1/studies/{study['id']}/resume").status_code == 409
    assert client.get("/v1/studies", params={"status": "canceled"}).json()["count"] == 1


def test_reads_answer_304_while_nothing_changed(client: TestClient, sent: list) -> None:
    study = create_grid(client)
    url = f"/v1/studies/{study['id']}"
    first = client.get(url)
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "no-cache"
    again = client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    run_round(sent, study["id"])
    changed = client.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    job_id = study_jobs(client, study["id"])[0]["id"]
    job_etag = client.get(f"/v1/jobs/{job_id}").headers["etag"]
    assert client.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": job_etag}).status_code == 304
    complete(job_id, [(20, 0.9)])
    assert client.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": job_etag}).status_code == 200
    metrics = client.get(f"/v1/jobs/{job_id}/metrics")
    assert (
        client.get(
            f"/v1/jobs/{job_id}/metrics", headers={"If-None-Match": f"W/{metrics.headers['etag']}"}
        ).status_code
        == 304
    )


def test_leaderboard_ranks_by_the_kept_summary(client: TestClient, sent: list) -> None:
    study = create_grid(client)
    run_round(sent, study["id"])
    for job in study_jobs(client, study["id"]):
        final = ACCURACY[(job["spec"]["optimizer"]["lr"], job["spec"]["seed"])]
        complete(job["id"], [(10, 0.99 if job["spec"]["seed"] == 2 else 0.1), (20, final)])
    best = client.get("/v1/leaderboard", params={"study": study["id"], "metric": "val_acc"}).json()
    assert best["order"] == "max" and best["count"] == 6
    assert [r["value"] for r in best["data"]][:3] == [0.99, 0.99, 0.93]  # best: the peak
    final = client.get(
        "/v1/leaderboard",
        params={"tag": f"study:{study['id']}", "metric": "val_acc", "at": "final", "limit": 2},
    ).json()
    assert [r["value"] for r in final["data"]] == [0.93, 0.91]
    assert final["data"][0]["optimizer"] == "sgd" and final["data"][0]["rank"] == 1
    lowest = client.get(
        "/v1/leaderboard", params={"study": study["id"], "metric": "val_acc", "order": "min"}
    ).json()
    assert lowest["data"][0]["value"] == 0.1
    assert client.get("/v1/leaderboard", params={"metric": "lr"}).status_code == 422


def test_prometheus_metrics_report_the_ledger(client: TestClient, sent: list) -> None:
    study = create_grid(client)
    run_round(sent, study["id"])
    client.get("/v1/studies")
    text = client.get("/metrics").text
    assert 'descent_jobs{status="queued"} 6.0' in text
    assert 'descent_jobs_waiting{queue="any"} 6.0' in text
    assert 'descent_studies{status="running"} 1.0' in text
    assert "http_request_duration_seconds" in text


def test_another_owners_study_and_its_jobs_stay_hidden(
    monkeypatch: pytest.MonkeyPatch, embedded_db: dict, sent: list
) -> None:
    from api.main import create_app
    from models.keys import create_key
    from models.settings import get_settings
    from models.tables import KeyRole

    monkeypatch.setenv("DESCENT_AUTH", "1")
    get_settings.cache_clear()
    secrets = {}
    with session_scope() as session:
        for owner, role in (("alice", KeyRole.user), ("bob", KeyRole.user), ("ops", KeyRole.admin)):
            secrets[owner] = {
                "Authorization": f"Bearer {create_key(session=session, owner=owner, role=role)[1]}"
            }
    client = TestClient(create_app())
    body = {"base": BASE, "space": {"optimizer.lr": [0.1]}, "objective": {"metric": "val_acc"}}
    assert client.post("/v1/studies", json=body).status_code == 401
    study = client.post("/v1/studies", json=body, headers=secrets["alice"]).json()
    assert study["owner"] == "alice"
    run_round(sent, study["id"])
    job_id = client.get(
        "/v1/jobs", params={"tag": f"study:{study['id']}"}, headers=secrets["alice"]
    ).json()["data"][0]["id"]
    complete(job_id, [(20, 0.9)])
    for method, url in (
        ("GET", f"/v1/studies/{study['id']}"),
        ("POST", f"/v1/studies/{study['id']}/resume"),
        ("POST", f"/v1/studies/{study['id']}/cancel"),
        ("GET", f"/v1/compare?jobs={job_id}"),
        ("GET", f"/v1/jobs/{job_id}/events"),
    ):
        assert client.request(method, url, headers=secrets["bob"]).status_code == 404, url
    assert client.get("/v1/studies", headers=secrets["bob"]).json()["count"] == 0
    board = client.get("/v1/leaderboard", params={"metric": "val_acc"}, headers=secrets["bob"])
    assert board.json()["count"] == 0
    seen = client.get("/v1/leaderboard", params={"metric": "val_acc"}, headers=secrets["ops"])
    assert [r["job_id"] for r in seen.json()["data"]] == [job_id]
    assert client.get(f"/v1/studies/{study['id']}", headers=secrets["ops"]).status_code == 200
    get_settings.cache_clear()
