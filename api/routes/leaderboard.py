"""`GET /v1/leaderboard`: jobs ranked by one series, from the per-series summary kept at each
flush (models/series.py) — never a scan of metric rows."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.deps import SessionDep, VisibleOwnerDep
from api.errors import ApiError
from models import series as series_queries

router = APIRouter()


class Standing(BaseModel):
    rank: int
    job_id: str
    name: str | None
    status: str
    tags: dict[str, str]
    optimizer: str | None
    value: float
    step: int
    spec_hash: str


class Leaderboard(BaseModel):
    metric: str
    order: Literal["max", "min"]
    at: Literal["final", "best"]
    data: list[Standing]
    count: int


@router.get("", response_model=Leaderboard)
def leaderboard(
    session: SessionDep,
    owner: VisibleOwnerDep,
    metric: Annotated[str, Query(pattern=r"^[a-z][a-z0-9_/]{0,63}$")] = "val_acc",
    order: Literal["max", "min"] | None = None,
    at: Literal["final", "best"] = "best",
    tag: Annotated[str | None, Query(max_length=330, description="key or key:value")] = None,
    study: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Leaderboard:
    if order is None:
        if "acc" in metric:
            order = "max"
        elif "loss" in metric or "error" in metric:
            order = "min"
        else:
            raise ApiError(422, "validation_error", f"say order=max or min for {metric!r}")
    standings = series_queries.leaderboard(
        session=session,
        metric=metric,
        order=order,
        at=at,
        owner=owner,
        tag=tag,
        study_id=study,
        limit=limit,
    )
    data = []
    for rank, standing in enumerate(standings, start=1):
        job: Any = standing.job
        optimizer = (job.resolved_spec.get("optimizer") or {}).get("name")
        data.append(
            Standing(
                rank=rank,
                job_id=job.id,
                name=job.name,
                status=job.status,
                tags=job.tags,
                optimizer=optimizer,
                value=standing.value,
                step=standing.step,
                spec_hash=job.spec_hash,
            )
        )
    return Leaderboard(metric=metric, order=order, at=at, data=data, count=len(data))
