"""Metric series of one job, incrementally readable (since_step) and downsampled (max_points)."""

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import MAX_STEP, JobId, SessionDep, VisibleOwnerDep
from api.routes.jobs import owned_job
from api.schemas import MetricsPublic, Series
from models import queries

router = APIRouter()


@router.get("/{job_id}/metrics", response_model=MetricsPublic)
def read_metrics(
    job_id: JobId,
    session: SessionDep,
    owner: VisibleOwnerDep,
    names: Annotated[
        str | None, Query(max_length=2000, description="comma-separated, e.g. train_loss,val_acc")
    ] = None,
    # bounded like the steps column (32-bit): PostgreSQL refuses a larger number (a 500)
    since_step: Annotated[
        int | None, Query(ge=0, le=MAX_STEP, description="only steps after this")
    ] = None,
    max_points: Annotated[int | None, Query(ge=2, le=100_000)] = None,
) -> MetricsPublic:
    job = owned_job(session, owner, job_id)
    wanted = [n.strip() for n in names.split(",") if n.strip()] if names else None
    series = queries.read_metrics(
        session=session, job_id=job_id, names=wanted, since_step=since_step, max_points=max_points
    )
    last_steps = [points[-1].step for points in series.values() if points]
    return MetricsPublic(
        job_id=job_id,
        status=job.status,
        series={
            name: Series(
                steps=[p.step for p in points],
                values=[p.value for p in points],
                epochs=[p.epoch for p in points],
                wall_times=[p.wall_time for p in points],
            )
            for name, points in series.items()
        },
        last_step=max(last_steps) if last_steps else since_step,
    )
