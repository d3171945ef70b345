"""Which finished jobs make a deep ensemble: read by the API (to refuse at once) and by the worker
(which decides). Torch-free, like the rest of models/.

Members must be succeeded training jobs of the ensemble's owner whose specs differ only by seed,
on a classification data set, with `data.split_seed` fixed so that every member holds out the
same validation rows (each job's split otherwise follows its own seed, and one member's
validation rows would be another's training rows).
"""

from typing import Any

from models.catalog.datasets import REGRESSION_DATA
from models.tables import Job, JobStatus

# What may differ between members: the seed, and labels or settings that do not change a run.
FREE_FIELDS = frozenset({"seed", "name", "tags", "checkpoint_every"})


def run_identity(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k not in FREE_FIELDS}


def ensemble_problems(members: list[Job | None], ids: list[str], owner: str | None) -> list[str]:
    """Why these jobs cannot be evaluated as one ensemble; empty when they can. `owner` None:
    an admin, who may combine any owner's jobs."""
    problems = []
    found: list[Job] = []
    for job_id, job in zip(ids, members, strict=True):
        if job is None or (owner is not None and job.owner != owner):
            problems.append(f"no job {job_id}")
        elif job.status != JobStatus.succeeded:
            problems.append(f"job {job_id} is {job.status}, not succeeded")
        elif job.resolved_spec.get("task", "train") != "train":
            problems.append(f"job {job_id} is a {job.resolved_spec['task']} job, not training")
        else:
            found.append(job)
    if problems or not found:
        return problems
    first = found[0].resolved_spec
    for job in found[1:]:
        if run_identity(job.resolved_spec) != run_identity(first):
            problems.append(
                f"job {job.id} differs from job {found[0].id} in more than its seed: "
                "an ensemble's members share one spec"
            )
    data = first.get("data") or {}
    if data.get("name") in REGRESSION_DATA:
        problems.append(f"data set {data.get('name')!r} is regression: ensembles need classes")
    if data.get("split_seed") is None and len({job.resolved_spec["seed"] for job in found}) > 1:
        problems.append(
            "members differ in seed but leave data.split_seed unset, so each holds out "
            "different validation rows: train them with one data.split_seed"
        )
    if not data.get("val_fraction"):
        problems.append("members hold out no validation rows (data.val_fraction is 0)")
    return problems
