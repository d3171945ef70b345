"""Submit, read, list and cancel jobs."""

from collections import namedtuple
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response, status
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentKey, JobId, SessionDep, VisibleOwnerDep
from api.errors import ApiError
from api.limits import check_job_limits
from api.queue import enqueue
from api.schemas import JobPublic, JobsPublic, Progress
from models import queries
from models.db import get_engine
from models.settings import get_settings
from models.spec import JobSpec
from models.tables import Job, JobStatus

router = APIRouter()


def job_public(job: Job | Any) -> JobPublic:
    """The job's public view, from an ORM Job or a row with the same column names."""
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


# GET /v1/jobs/{id}, the read that dashboards and clients poll: JobPublic's columns with one
# SELECT by primary key, no ORM (no identity map, no instance built and thrown away).
_JOB_COLUMNS = (
    *("id", "name", "owner", "tags", "status", "resolved_spec", "spec_hash", "attempt"),
    *("restarts", "worker", "cancel_requested", "step", "total_steps", "epoch", "total_epochs"),
    *("error", "summary", "created_at", "started_at", "finished_at"),
)
JobRow = namedtuple("JobRow", _JOB_COLUMNS)  # type: ignore[misc]
_READ_JOB = select(*(Job.__table__.c[name] for name in _JOB_COLUMNS)).where(
    Job.__table__.c.id == bindparam("job_id")
)
_READ_JOB_SQL = f"SELECT {', '.join(_JOB_COLUMNS)} FROM {Job.__tablename__} WHERE id = %s"


def fetch_job_row(connection: Connection, job_id: str) -> Any:
    """The job's row, or None. On psycopg the query goes to the driver itself: a SQLAlchemy
    result describes its 20 columns anew on every call (psycopg builds them in Python: about
    0.3 ms of the request's CPU). Errors become SQLAlchemy's, as its own execute makes them (a
    lost connection is invalidated; the API answers 503)."""
    dialect = connection.dialect
    if dialect.driver != "psycopg":
        return connection.execute(_READ_JOB, {"job_id": job_id}).first()
    driver = connection.connection.driver_connection
    try:
        values = driver.execute(_READ_JOB_SQL, (job_id,)).fetchone()  # type: ignore[union-attr]
    except dialect.loaded_dbapi.Error as exc:
        lost = dialect.is_disconnect(exc, driver, None)
        if lost:
            connection.invalidate(exc)
        raise DBAPIError.instance(
            _READ_JOB_SQL,
            (job_id,),
            exc,
            dialect.loaded_dbapi.Error,
            dialect=dialect,
            connection_invalidated=lost,
        ) from exc
    return None if values is None else JobRow(*values)


def read_job_json(job_id: str, owner: str | None) -> bytes:
    """The job as JSON, if `owner` may see it (as owned_job). Autocommit: a lone SELECT needs
    no BEGIN and no ROLLBACK round trip."""
    with get_engine().connect() as connection:
        row = fetch_job_row(connection.execution_options(isolation_level="AUTOCOMMIT"), job_id)
    if row is None or (owner is not None and row.owner != owner):
        raise ApiError(404, "not_found", f"no job {job_id}")
    return job_public(row).model_dump_json().encode()


@router.get("/{job_id}", response_model=JobPublic)
async def read_job(job_id: JobId, owner: VisibleOwnerDep) -> Response:
    """The hottest read (dashboards and clients poll it): the key and the rate limit are
    checked on the event loop (api.deps.current_key), the row is read in one worker thread, and
    the body is rendered once (a returned Response skips FastAPI's second validation pass)."""
    body = await run_in_threadpool(read_job_json, job_id, owner)
    return Response(body, media_type="application/json")


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(job_id: JobId, session: SessionDep, owner: VisibleOwnerDep) -> JobPublic:
    owned_job(session, owner, job_id)
    job = queries.request_cancel(session=session, job_id=job_id)
    session.commit()
    assert job is not None
    return job_public(job)
