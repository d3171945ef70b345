"""Deep ensembles through the worker's own path on the embedded ledger: training jobs keep their
weights, an ensemble job averages the members, and bad member sets fail with the reason."""

from pathlib import Path

import pytest
import torch

from models.db import session_scope
from models.ensembles import ensemble_problems
from models.queries import create_job, get_job
from models.spec import JobSpec
from worker.datasets import load_data
from worker.ensembles import predict, weights_path
from worker.nets import build_net

MEMBER = {
    "model": {"name": "mlp", "args": {"hidden": [16]}},
    "data": {"name": "digits", "split_seed": 7, "batch_size": 128},
    "optimizer": {"name": "adam", "lr": 0.01},
    "max_steps": 40,
}


def submit(spec: dict) -> str:
    with session_scope() as session:
        return create_job(
            session=session, spec=JobSpec.model_validate(spec), submitted=spec, owner="local"
        ).id


def run(spec: dict) -> dict:
    from worker.tasks import execute_job

    job_id = submit(spec)
    execute_job(job_id, worker="test")
    with session_scope() as session:
        job = get_job(session=session, job_id=job_id)
        assert job is not None
        return {"id": job.id, "status": job.status, "error": job.error, "summary": job.summary}


@pytest.fixture
def members(embedded_db: dict) -> list[dict]:
    jobs = [run({**MEMBER, "seed": seed}) for seed in (1, 2, 3)]
    assert all(job["status"] == "succeeded" for job in jobs), jobs
    return jobs


def test_training_jobs_keep_weights_that_load_safely(members: list[dict]) -> None:
    from models.settings import get_settings

    root = get_settings().data_dir
    for job in members:
        path = weights_path(root, job["id"])
        assert job["summary"]["weights"] == f"weights/{job['id']}.pt"
        state = torch.load(path, weights_only=True)  # tensors only: no pickled code
        assert set(state) == {"1.weight", "1.bias", "3.weight", "3.bias"}


def test_ensemble_averages_the_members_predictive_distributions(members: list[dict]) -> None:
    from models.settings import get_settings

    ensemble = run({"task": "ensemble", "ensemble": {"jobs": [j["id"] for j in members]}})
    assert ensemble["status"] == "succeeded", ensemble["error"]
    summary = ensemble["summary"]
    assert summary["members"] == [j["id"] for j in members] and summary["seeds"] == [1, 2, 3]

    # reference: the members' nets rebuilt by hand, their softmax outputs averaged
    root = get_settings().data_dir
    spec = JobSpec.model_validate({**MEMBER, "seed": 1})
    bundle = load_data(spec.data, seed=99, data_root=root)  # split_seed fixes the split
    probs = []
    for job in members:
        net = build_net(spec.model, bundle.input_shape, bundle.num_outputs)
        net.load_state_dict(torch.load(weights_path(root, job["id"]), weights_only=True))
        probs.append(predict(net, bundle.x_val))
    mean = torch.stack(probs).mean(dim=0)
    accuracy = (mean.argmax(dim=1) == bundle.y_val).float().mean().item()
    assert summary["final"]["val_acc"] == pytest.approx(accuracy, abs=1e-6)
    assert summary["validation_rows"] == len(bundle.y_val)
    # a one-member "ensemble" is that member: step 1 of the curve is member 1 alone
    first_member = members[0]["summary"]["final"]["val_acc"]
    assert summary["best"]["val_acc"] >= first_member - 1e-6
    # Jensen: the NLL of the averaged distribution is at most the members' average NLL
    nll = -mean.gather(1, bundle.y_val[:, None]).log().mean().item()
    member_nll = [-p.gather(1, bundle.y_val[:, None]).log().mean().item() for p in probs]
    assert summary["final"]["val_nll"] == pytest.approx(nll, rel=1e-5)
    assert nll <= sum(member_nll) / 3
    assert summary["final"]["val_mutual_information"] >= 0


def test_members_that_differ_in_more_than_seed_fail_the_ensemble(members: list[dict]) -> None:
    other = run({**MEMBER, "seed": 4, "optimizer": {"name": "sgd", "lr": 0.1}})
    ensemble = run({"task": "ensemble", "ensemble": {"jobs": [members[0]["id"], other["id"]]}})
    assert ensemble["status"] == "failed"
    assert "differs from job" in ensemble["error"] and "more than its seed" in ensemble["error"]


def test_member_checks_name_each_problem(embedded_db: dict) -> None:
    unsplit = {**MEMBER, "data": {"name": "digits"}}
    with session_scope() as session:
        jobs = [
            create_job(
                session=session,
                spec=JobSpec.model_validate({**unsplit, "seed": seed}),
                submitted={},
                owner="local",
            )
            for seed in (1, 2)
        ]
        for job in jobs:
            job.status = "succeeded"
        ids = [job.id for job in jobs]
        assert ensemble_problems(jobs, ids, "local") == [
            "members differ in seed but leave data.split_seed unset, so each holds out "
            "different validation rows: train them with one data.split_seed"
        ]
        assert ensemble_problems(jobs, ids, "someone-else") == [f"no job {i}" for i in ids]
        jobs[1].status = "running"
        assert ensemble_problems(jobs, ids, None) == [f"job {ids[1]} is running, not succeeded"]


def test_missing_weights_fail_with_the_path(members: list[dict], tmp_path: Path) -> None:
    from models.settings import get_settings

    weights_path(get_settings().data_dir, members[1]["id"]).unlink()
    ensemble = run({"task": "ensemble", "ensemble": {"jobs": [m["id"] for m in members]}})
    assert ensemble["status"] == "failed" and "no saved weights" in ensemble["error"]
