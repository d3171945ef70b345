"""Submit, read, list and cancel jobs."""

from typing import Annotated

from fastapi import APIRouter, Body, Query, Response, status

from api.deps import CurrentKey, JobId, SessionDep, VisibleOwnerDep
from api.errors import ApiError
from api.limits import check_job_limits
from api.queue import enqueue
from api.schemas import JobPublic, JobsPublic, Progress
from models import queries
from models.settings import get_settings
from models.spec import JobSpec
from models.tables import Job, JobStatus

router = APIRouter()


def job_public(job: Job) -> JobPublic:
    fraction = job.step / job.total_steps if job.total_steps else None
    return JobPublic(
        id=job.id,
        name=job.name,
        owner=job.owner,
        tags=job.tags,
        status=job.status,
        spec=job.resolved_spec,
        spec_hash=job.spec_hash,
        attempt=job.attempt,
        restarts=job.restarts,
        worker=job.worker,
        cancel_requested=job.cancel_requested,
        progress=Progress(
            step=job.step,
            total_steps=job.total_steps,
            epoch=job.epoch,
            total_epochs=job.total_epochs,
            fraction=fraction,
        ),
        error=job.error,
        summary=job.summary,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def owned_job(session: SessionDep, owner: str | None, job_id: str) -> Job:
    """The job, if `owner` may see it (None: an admin, who sees every job). Another owner's job
    answers 404 exactly as a missing one, so ids cannot be probed."""
    job = queries.get_job(session=session, job_id=job_id)
    if job is None or (owner is not None and job.owner != owner):
        raise ApiError(404, "not_found", f"no job {job_id}")
    return job


# Shown in /docs, and the fuzzer's first valid submissions (benchmarks/fuzz.py).
SPEC_EXAMPLES = {
    "minimal": {
        "summary": "everything else defaults",
        "value": {
            "model": {"name": "mlp"},
            "data": {"name": "digits"},
            "optimizer": {"name": "adam"},
        },
    },
    "tuned": {
        "summary": "a short run with a schedule and clipping",
        "value": {
            "name": "digits-adamw",
            "tags": {"study": "demo"},
            "model": {"name": "mlp", "args": {"hidden": [64]}},
            "data": {"name": "digits", "batch_size": 32},
            "optimizer": {"name": "adamw", "lr": 0.003},
            "schedule": {"name": "cosine", "warmup_steps": 20},
            "clipping": {"mode": "norm", "max_norm": 1.0},
            "max_steps": 200,
            "seed": 1,
        },
    },
}

# OpenAPI links: where a submitted job's id goes next (clients and the fuzzer's stateful phase
# follow them). The operation ids are FastAPI's defaults for the routes below.
JOB_LINKS = {
    name: {"operationId": operation, "parameters": {"job_id": "$response.body#/id"}}
    for name, operation in (
        ("ReadJob", "read_job_v1_jobs__job_id__get"),
        ("CancelJob", "cancel_job_v1_jobs__job_id__cancel_post"),
        ("ReadMetrics", "read_metrics_v1_jobs__job_id__metrics_get"),
    )
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobPublic,
    responses={201: {"description": "the job, queued", "links": JOB_LINKS}},
)
def submit_job(
    spec: Annotated[JobSpec, Body(openapi_examples=SPEC_EXAMPLES)],
    session: SessionDep,
    key: CurrentKey,
    response: Response,
) -> JobPublic:
    check_job_limits(session=session, key=key, spec=spec, settings=get_settings())
    submitted = spec.model_dump(mode="json", exclude_unset=True)
    job = queries.create_job(session=session, spec=spec, submitted=submitted, owner=key.owner)
    session.commit()
    try:
        enqueue(job.id, job.queue)
    except Exception as exc:  # noqa: BLE001 - the broker's own errors vary by transport
        queries.fail_unstarted_job(session=session, job_id=job.id, error=f"not queued: {exc}")
        session.commit()
        raise ApiError(
            503,
            "broker_unavailable",
            f"the job could not be queued: {exc}",
            headers={"Retry-After": "5"},
        ) from exc
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_public(job)


@router.get("", response_model=JobsPublic)
def list_jobs(
    session: SessionDep,
    owner: VisibleOwnerDep,
    status: JobStatus | None = None,
    tag: Annotated[str | None, Query(max_length=330, description="key or key:value")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> JobsPublic:
    try:
        jobs, next_cursor = queries.list_jobs(
            session=session, owner=owner, status=status, tag=tag, limit=limit, cursor=cursor
        )
    except ValueError as exc:
        raise ApiError(422, "bad_cursor", str(exc)) from exc
    return JobsPublic(data=[job_public(j) for j in jobs], count=len(jobs), next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobPublic)
def read_job(job_id: JobId, session: SessionDep, owner: VisibleOwnerDep) -> JobPublic:
    return job_public(owned_job(session, owner, job_id))


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(job_id: JobId, session: SessionDep, owner: VisibleOwnerDep) -> JobPublic:
    owned_job(session, owner, job_id)
    job = queries.request_cancel(session=session, job_id=job_id)
    session.commit()
    assert job is not None
    return job_public(job)
