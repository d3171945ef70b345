"""ORM tables (SQLAlchemy 2.0). The database is the ledger: status, attempt and lease live here."""

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    requeued = "requeued"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"
    diverged = "diverged"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset(
    {JobStatus.succeeded, JobStatus.failed, JobStatus.canceled, JobStatus.diverged}
)
CLAIMABLE = frozenset({JobStatus.queued, JobStatus.requeued})


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), default="local")
    name: Mapped[str | None] = mapped_column(String(200))
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    spec: Mapped[dict[str, Any]]  # as submitted
    resolved_spec: Mapped[dict[str, Any]]  # with every default filled in: what actually ran
    spec_hash: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued, index=True)
    queue: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    restarts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # worker lost
    lease_until: Mapped[datetime | None]
    worker: Mapped[str | None] = mapped_column(String(200))
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    epoch: Mapped[float] = mapped_column(Float, default=0.0)
    total_epochs: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_jobs_created", "created_at", "id"),
        Index("ix_jobs_owner_status", "owner", "status"),  # a key's active jobs, at each submit
    )


class Metric(Base):
    """One point of one series. The primary key makes a repeated write a no-op.

    No foreign key to `jobs` (dropped in revision 0003): the per-row check halved COPY
    throughput on PostgreSQL (70,000 against 160,000 rows/s measured), and every write already
    goes through record_progress, which finds and locks the job row in the same transaction.
    """

    __tablename__ = "metrics"

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[float] = mapped_column(Float)
    epoch: Mapped[float | None] = mapped_column(Float)
    wall_time: Mapped[float] = mapped_column(Float, doc="seconds since the job started")


class KeyRole(enum.StrEnum):
    user = "user"  # sees and cancels its owner's jobs only
    admin = "admin"  # also lists, reads and cancels every owner's jobs


class ApiKey(Base):
    """An API key. Only the SHA-256 of the key is stored; the key itself is shown once.

    A limit left empty (NULL) follows the server's default in models.settings.
    """

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16), doc="the key's first characters, for display")
    role: Mapped[str] = mapped_column(String(16), default=KeyRole.user)
    max_active_jobs: Mapped[int | None] = mapped_column(Integer)
    max_parameters: Mapped[int | None] = mapped_column(BigInteger)
    max_job_size: Mapped[int | None] = mapped_column(BigInteger, doc="steps × parameters")
    requests_per_minute: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class StudyStatus(enum.StrEnum):
    running = "running"  # the driver asks the sampler for configurations and queues their jobs
    succeeded = "succeeded"  # the budget is spent and every trial job has finished
    failed = "failed"  # the driver could not go on (the error says why)
    canceled = "canceled"


class Study(Base):
    """A comparison over configurations × seeds. Its trials are ordinary jobs (StudyTrial).

    The sampler's whole state lives here and in the trial rows, so the driver (worker/studies.py)
    holds nothing between rounds and a restarted driver carries on where the last one stopped.
    """

    __tablename__ = "studies"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), default="local", index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    preset: Mapped[str | None] = mapped_column(String(64))
    base_spec: Mapped[dict[str, Any]]  # a JobSpec, as validated
    space: Mapped[dict[str, Any]]  # spec path → values or range (models/studies.py)
    sampler: Mapped[dict[str, Any]]  # {"name", "seed", "args"}
    objective: Mapped[dict[str, Any]]  # {"metric", "direction", "at", "target"}
    pruner: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    seeds: Mapped[list[int]] = mapped_column(JSON)
    budget: Mapped[int] = mapped_column(Integer, doc="configurations to try")
    max_concurrent: Mapped[int] = mapped_column(Integer, doc="configurations in flight at once")
    reference: Mapped[dict[str, Any] | None] = mapped_column(JSON, doc="published numbers")
    status: Mapped[str] = mapped_column(String(16), default=StudyStatus.running, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    sampler_state: Mapped[dict[str, Any]] = mapped_column(default=dict)  # optuna study attrs
    driver_token: Mapped[str | None] = mapped_column(String(36), doc="the live driver chain")
    driver_beat_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class StudyTrial(Base):
    """One job of a study: configuration `number` (one optuna trial) run with one seed."""

    __tablename__ = "study_trials"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer, doc="configuration, in the order asked")
    seed: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(200))
    config: Mapped[dict[str, Any]]  # spec path → value applied to the base spec
    params: Mapped[dict[str, Any]]  # the sampler's parameters (choices as indices)
    system_attrs: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the sampler's notes
    pruned: Mapped[bool] = mapped_column(default=False)
    enqueued: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_study_trials_study", "study_id", "number", "seed", unique=True),)


class MetricSummary(Base):
    """Last, lowest and highest point of one series, updated in the same transaction as each
    flush (models/series.py): leaderboards and compare tables read this, never metric rows."""

    __tablename__ = "metric_summaries"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    first_step: Mapped[int] = mapped_column(Integer)
    last_step: Mapped[int] = mapped_column(Integer)
    last_value: Mapped[float] = mapped_column(Float)
    last_wall: Mapped[float] = mapped_column(Float)
    min_step: Mapped[int] = mapped_column(Integer)
    min_value: Mapped[float] = mapped_column(Float)
    max_step: Mapped[int] = mapped_column(Integer)
    max_value: Mapped[float] = mapped_column(Float)


class MetricRollup(Base):
    """The lowest and highest point of a series within each bucket of `width` steps, at a few
    widths (64, 512, 4096, …): a long series is downsampled by reading a few hundred of these
    rows instead of every point (models/series.py)."""

    __tablename__ = "metric_rollups"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    width: Mapped[int] = mapped_column(Integer, primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True)
    min_step: Mapped[int] = mapped_column(Integer)
    min_value: Mapped[float] = mapped_column(Float)
    min_epoch: Mapped[float | None] = mapped_column(Float)
    min_wall: Mapped[float] = mapped_column(Float)
    max_step: Mapped[int] = mapped_column(Integer)
    max_value: Mapped[float] = mapped_column(Float)
    max_epoch: Mapped[float | None] = mapped_column(Float)
    max_wall: Mapped[float] = mapped_column(Float)
