"""`GET /v1/compare`: several jobs' series on one axis, downsampled on the server, and a table of
final and best values and time to target. Reads per-series summaries and rollups
(models/series.py), so its cost does not grow with the length of the series."""

import math
import re
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from api.deps import SessionDep, VisibleOwnerDep
from api.errors import ApiError
from models import series as series_queries
from models.tables import Job

router = APIRouter()

TARGET = re.compile(r"^(?P<metric>[a-z][a-z0-9_/]{0,63})(?P<op>>=|<=)(?P<value>[-+0-9.eE]+)$")


class Curve(BaseModel):
    x: list[float | None]
    y: list[float]
    steps: list[int]


class SeriesStats(BaseModel):
    count: int
    final: float
    final_step: int
    min: float
    min_step: int
    max: float
    max_step: int
    best: float | None = Field(
        description="max for accuracies, min for losses and errors, None when the name says neither"
    )


class TargetHit(BaseModel):
    reached: bool
    step: int | None
    time_s: float | None
    epoch: float | None


class JobColumn(BaseModel):
    id: str
    name: str | None
    status: str
    tags: dict[str, str]
    metrics: dict[str, SeriesStats]
    target: TargetHit | None


class Comparison(BaseModel):
    x: Literal["step", "epoch", "time"]
    max_points: int
    target: dict[str, float | str] | None
    jobs: list[JobColumn] = Field(description="the table: final, lowest and highest per series")
    series: dict[str, dict[str, Curve]] = Field(description="job id → series name → points")


def _best(name: str, low: float, high: float) -> float | None:
    if "acc" in name:
        return high
    if "loss" in name or "error" in name:
        return low
    return None


def _names(text: str, limit: int, what: str) -> list[str]:
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise ApiError(422, "validation_error", f"no {what} given")
    if len(names) > limit:
        raise ApiError(422, "validation_error", f"at most {limit} {what}, got {len(names)}")
    return names


@router.get("", response_model=Comparison)
def compare(
    session: SessionDep,
    owner: VisibleOwnerDep,
    jobs: Annotated[str, Query(max_length=4000, description="comma-separated job ids")],
    metrics: Annotated[
        str | None,
        Query(max_length=2000, description="comma-separated series names; default: all"),
    ] = None,
    x: Literal["step", "epoch", "time"] = "step",
    max_points: Annotated[int, Query(ge=4, le=10_000)] = 500,
    target: Annotated[
        str | None, Query(max_length=100, description="e.g. val_acc>=0.97 or val_loss<=0.1")
    ] = None,
) -> Comparison:
    job_ids = _names(jobs, 50, "jobs")
    rows = session.execute(
        select(Job.id, Job.name, Job.status, Job.tags, Job.owner).where(Job.id.in_(job_ids))
    ).all()
    found = {r.id: r for r in rows if owner is None or r.owner == owner}
    missing = [j for j in job_ids if j not in found]
    if missing:
        raise ApiError(404, "not_found", f"no job {', '.join(missing)}")
    wanted = _names(metrics, 20, "metrics") if metrics else None
    known = series_queries.summaries(session=session, job_ids=job_ids, names=wanted)
    names = wanted or sorted({name for _, name in known})
    goal = None
    if target is not None:
        match = TARGET.match(target.replace(" ", ""))
        if match is None or not math.isfinite(float(match["value"])):
            raise ApiError(422, "validation_error", f"target {target!r}: write metric>=value")
        goal = {
            "metric": match["metric"],
            "value": float(match["value"]),
            "mode": "max" if match["op"] == ">=" else "min",
        }
    curves = series_queries.read_series(
        session=session, job_ids=job_ids, names=names, max_points=max_points
    )
    hits = {}
    if goal is not None:
        keys = [(j, str(goal["metric"])) for j in job_ids]
        hits = series_queries.first_reaching(
            session=session,
            keys=keys,
            threshold=float(goal["value"]),
            mode=str(goal["mode"]),
        )
    axis = {"step": "steps", "epoch": "epochs", "time": "walls"}[x]
    out_series: dict[str, dict[str, Curve]] = {}
    for (job_id, name), points in curves.items():
        xs = getattr(points, axis)
        out_series.setdefault(job_id, {})[name] = Curve(
            x=points.epoch_list() if x == "epoch" else xs.tolist(),
            y=points.values.tolist(),
            steps=points.steps.tolist(),
        )
    columns = []
    for job_id in job_ids:
        row = found[job_id]
        stats = {
            name: SeriesStats(
                count=s.count,
                final=s.last_value,
                final_step=s.last_step,
                min=s.min_value,
                min_step=s.min_step,
                max=s.max_value,
                max_step=s.max_step,
                best=_best(name, s.min_value, s.max_value),
            )
            for (jid, name), s in known.items()
            if jid == job_id and name in names
        }
        hit = None
        if goal is not None:
            reached = hits.get((job_id, str(goal["metric"])))
            hit = TargetHit(
                reached=reached is not None,
                step=reached[0] if reached else None,
                time_s=reached[1] if reached else None,
                epoch=reached[2] if reached else None,
            )
        columns.append(
            JobColumn(
                id=job_id,
                name=row.name,
                status=row.status,
                tags=row.tags,
                metrics=stats,
                target=hit,
            )
        )
    return Comparison(x=x, max_points=max_points, target=goal, jobs=columns, series=out_series)
