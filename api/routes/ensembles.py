"""Deep ensembles: finished training jobs that differ only by seed, evaluated as one ensemble.

POST /v1/ensembles checks the members here (models/ensembles.py, no torch) and submits a job of
`task: ensemble` through the same path as POST /v1/jobs (limits, ledger, queue). A worker runs it
(worker/ensembles.py): it loads each member's saved weights and averages their predictive
distributions. Its metrics (val_acc, val_nll, val_ece, … over the number of members) and summary
are read like any job's, at /v1/jobs/{id} and /v1/jobs/{id}/metrics.
"""

from fastapi import APIRouter, Response, status
from pydantic import Field

from api.deps import CurrentKey, SessionDep, VisibleOwnerDep
from api.errors import ApiError
from api.routes.jobs import submit_job
from api.schemas import JobPublic
from models import queries
from models.ensembles import ensemble_problems
from models.spec import EnsembleSpec, JobSpec, Tags

router = APIRouter()


class EnsembleCreate(EnsembleSpec):
    name: str | None = Field(None, max_length=200)
    tags: Tags = Field(default_factory=dict)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobPublic)
def create_ensemble(
    body: EnsembleCreate,
    session: SessionDep,
    key: CurrentKey,
    owner: VisibleOwnerDep,
    response: Response,
) -> JobPublic:
    members = [queries.get_job(session=session, job_id=job_id) for job_id in body.jobs]
    problems = ensemble_problems(members, body.jobs, owner)
    if problems:
        raise ApiError(422, "invalid_ensemble", "; ".join(problems))
    spec = JobSpec.model_validate(
        {"task": "ensemble", "ensemble": {"jobs": body.jobs}, "name": body.name, "tags": body.tags}
    )
    return submit_job(spec, session, key, response)
