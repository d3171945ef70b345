"""Response bodies. The request body of POST /v1/jobs is models.spec.JobSpec itself."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class Progress(BaseModel):
    step: int
    total_steps: int | None
    epoch: float
    total_epochs: float | None
    fraction: float | None = Field(description="step / total_steps")


class JobPublic(BaseModel):
    id: str
    name: str | None
    owner: str
    tags: dict[str, Any]
    status: str
    spec: dict[str, Any] = Field(description="the spec with every default filled in")
    spec_hash: str
    attempt: int = Field(description="claims so far; each one fences off the one before")
    restarts: int = Field(0, description="requeues after a lost worker (lease expired)")
    worker: str | None
    cancel_requested: bool
    progress: Progress
    error: str | None
    summary: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int
    next_cursor: str | None


class Series(BaseModel):
    steps: list[int]
    values: list[float | None]
    epochs: list[float | None]
    wall_times: list[float]


class MetricsPublic(BaseModel):
    job_id: str
    status: str
    series: dict[str, Series]
    last_step: int | None = Field(description="pass as since_step to read only newer points")


class ErrorDetail(BaseModel):
    field: str
    message: str
    type: str


class ErrorInfo(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] = []


class ErrorBody(BaseModel):
    error: ErrorInfo
