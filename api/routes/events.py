"""`GET /v1/jobs/{id}/events`: a server-sent-events stream of one job's progress.

Events: `progress` (status, step, epoch, fraction) when it changes; `metrics` (the points written
since the last event, by series) with the last step as the event id, so a client that reconnects
with Last-Event-ID misses nothing; `end` (final status, error, summary) when the job finishes,
after which the stream closes. The stream polls the ledger every `interval` seconds in a thread
(the database driver is synchronous); sse-starlette sends keep-alive comments in between.
"""

import json
import math
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from api.deps import MAX_STEP, JobId, SessionDep, VisibleOwnerDep
from api.routes.jobs import owned_job
from models import queries
from models.db import get_sessionmaker
from models.tables import JobStatus

router = APIRouter()
MAX_POINTS_PER_EVENT = 5000


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: a non-finite number is sent as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _event(data: Any, event: str, id: str | None = None) -> ServerSentEvent:
    return ServerSentEvent(
        data=json.dumps(_finite(data), separators=(",", ":")), event=event, id=id
    )


def _poll(job_id: str, since_step: int | None) -> tuple[dict[str, Any], dict[str, Any], int | None]:
    with get_sessionmaker()() as session:
        job = queries.get_job(session=session, job_id=job_id)
        assert job is not None
        state = {
            "status": job.status,
            "step": job.step,
            "total_steps": job.total_steps,
            "epoch": job.epoch,
            "fraction": job.step / job.total_steps if job.total_steps else None,
            "attempt": job.attempt,
        }
        series = queries.read_metrics(
            session=session, job_id=job_id, since_step=since_step, max_points=MAX_POINTS_PER_EVENT
        )
        points = {
            name: {"steps": [p.step for p in rows], "values": [p.value for p in rows]}
            for name, rows in series.items()
            if rows
        }
        last = max((rows[-1].step for rows in series.values() if rows), default=since_step)
        if JobStatus(job.status).finished:
            state["error"] = job.error
            state["summary"] = job.summary
        return state, points, last


# Left out of the OpenAPI document: OpenAPI has no way to describe an event stream, and tools
# that walk the document (schemathesis, tests/api/test_fuzz.py) would read a live one forever.
@router.get("/{job_id}/events", response_class=EventSourceResponse, include_in_schema=False)
async def job_events(
    job_id: JobId,
    session: SessionDep,
    owner: VisibleOwnerDep,
    interval: Annotated[float, Query(ge=0.1, le=30.0, description="seconds between polls")] = 1.0,
    since_step: Annotated[int | None, Query(ge=0, le=MAX_STEP)] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    owned_job(session, owner, job_id)
    session.close()  # the stream opens short sessions of its own
    if last_event_id is not None and last_event_id.isdigit():
        since_step = int(last_event_id)

    async def stream() -> AsyncIterator[ServerSentEvent]:
        import anyio

        cursor = since_step
        shown: dict[str, Any] | None = None
        while True:
            state, points, cursor_after = await run_in_threadpool(_poll, job_id, cursor)
            progress = {k: v for k, v in state.items() if k not in ("error", "summary")}
            if progress != shown:
                shown = progress
                yield _event(progress, "progress")
            if points:
                cursor = cursor_after
                yield _event({"series": points, "last_step": cursor}, "metrics", str(cursor))
            if JobStatus(state["status"]).finished:
                yield _event(state, "end")
                return
            await anyio.sleep(interval)

    return EventSourceResponse(stream())
