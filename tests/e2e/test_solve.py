"""`task: solve` end to end on the real services: API → Redis → worker → PostgreSQL, with its
metrics read back beside a training job's on the same data."""

import httpx
import pytest

from tests.conftest import wait_for_status
from tests.e2e.test_services import stack  # noqa: F401 - the module-scoped API + worker

pytestmark = [pytest.mark.e2e, pytest.mark.services]

DATA_ARGS = {"n_samples": 256, "n_features": 6, "noise": 0.1}


def series(http: httpx.Client, job_id: str, names: str) -> dict:
    response = http.get(f"/v1/jobs/{job_id}/metrics", params={"names": names})
    assert response.status_code == 200
    return response.json()["series"]


def test_solve_job_and_training_job_land_in_the_same_tables(stack: dict) -> None:  # noqa: F811
    http = stack["http"]
    solve = {
        "name": "e2e-solve",
        "task": "solve",
        "solve": {
            "problem": {"name": "synthetic_regression", "args": DATA_ARGS},
            "methods": ["normal_inverse", "qr_householder", "gradient_descent"],
        },
    }
    # the same rows, all of them, full batch: train_loss at step k is the MSE before update k
    training = {
        "model": {"name": "linear"},
        "data": {
            "name": "synthetic_regression",
            "args": DATA_ARGS,
            "val_fraction": 0.0,
            "batch_size": 256,
        },
        "optimizer": {"name": "sgd", "lr": 0.1},
        "max_steps": 50,
    }
    solve_id = http.post("/v1/jobs", json=solve).json()["id"]
    train_id = http.post("/v1/jobs", json=training).json()["id"]
    solved = wait_for_status(http, solve_id, {"succeeded", "failed"})
    assert solved["status"] == "succeeded", solved["error"]

    summary = solved["summary"]
    assert solved["progress"]["step"] == solved["progress"]["total_steps"] == 3
    assert 1 < summary["condition_number"] < 10 and summary["shape"] == [256, 7]
    assert set(summary["methods"]) == {"normal_inverse", "qr_householder", "gradient_descent"}
    assert solved["spec"]["solve"]["methods"][0]["name"] == "normal_inverse"  # stored resolved
    assert "optimizer" not in solved["spec"]  # a solve spec stores only what it runs

    points = series(http, solve_id, "qr_householder/loss,gradient_descent/coef_error")
    assert points["qr_householder/loss"]["steps"] == [1]
    descent = points["gradient_descent/coef_error"]
    assert (
        descent["steps"][0] == 0
        and len(descent["steps"]) == summary["methods"]["gradient_descent"]["iterations"] + 1
    )
    assert descent["values"][-1] == pytest.approx(
        summary["methods"]["qr_householder"]["coef_error"], rel=1e-6
    )

    # QR's loss is the least-squares optimum on these rows: no training step gets below it
    trained = wait_for_status(http, train_id, {"succeeded", "failed"})
    assert trained["status"] == "succeeded", trained["error"]
    optimum = points["qr_householder/loss"]["values"][0]
    losses = series(http, train_id, "train_loss")["train_loss"]["values"]
    assert min(losses) >= optimum * (1 - 1e-4)
    assert losses[-1] < 2 * optimum  # and SGD gets close


def test_bad_solve_spec_is_refused_with_the_field(stack: dict) -> None:  # noqa: F811
    response = stack["http"].post(
        "/v1/jobs",
        json={"task": "solve", "solve": {"problem": {"name": "cg_example"}, "methods": ["ridge"]}},
    )
    assert response.status_code == 422
    fields = [d["field"] for d in response.json()["error"]["details"]]
    assert fields == ["solve.methods.0.name"]
