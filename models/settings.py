"""One settings object read by the API, the worker, Alembic and the CLI.

Environment variables (no prefix): DATABASE_URL, REDIS_URL, DESCENT_DATA_DIR, PORT, ...
When DATABASE_URL / REDIS_URL are unset the embedded defaults are used: a SQLite file and a
SQLite-backed Celery transport, both under DESCENT_DATA_DIR.
"""

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, computed_field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    data_dir: Path = Field(
        Path(".descent"), validation_alias=AliasChoices("DESCENT_DATA_DIR", "data_dir")
    )
    database_url_env: str | None = Field(
        None, validation_alias=AliasChoices("DATABASE_URL", "database_url")
    )
    redis_url: str | None = Field(None, validation_alias=AliasChoices("REDIS_URL", "redis_url"))
    queue_prefix: str = Field(
        "descent", validation_alias=AliasChoices("DESCENT_QUEUE", "queue_prefix")
    )
    host: str = Field("127.0.0.1", validation_alias=AliasChoices("DESCENT_HOST", "host"))
    port: int = Field(8000, validation_alias=AliasChoices("PORT", "DESCENT_PORT", "port"))
    # API server processes on one listening socket, under uvicorn's supervisor
    # (`descent serve --processes`). 1: one uvicorn process.
    api_processes: int = Field(
        1, ge=1, le=64, validation_alias=AliasChoices("DESCENT_API_PROCESSES", "api_processes")
    )
    # uvicorn's per-request access log lines (on by default; docker-compose turns them off for
    # the API, whose request latency is in /metrics, since formatting a line per request costs
    # about a tenth of its job-read throughput).
    access_log: bool = Field(
        True, validation_alias=AliasChoices("DESCENT_ACCESS_LOG", "access_log")
    )
    max_body_bytes: int = Field(
        1_000_000, validation_alias=AliasChoices("DESCENT_MAX_BODY_BYTES", "max_body_bytes")
    )
    # API keys (`Authorization: Bearer …`). Unset: on in services mode (DATABASE_URL or REDIS_URL
    # set), off in the embedded single-user mode, which then serves 127.0.0.1 only.
    auth: bool | None = Field(None, validation_alias=AliasChoices("DESCENT_AUTH", "auth"))
    # Per-key limits; a key's own value (`descent keys create --max-…`) overrides these defaults.
    max_active_jobs: int = Field(
        1000, ge=1, validation_alias=AliasChoices("DESCENT_MAX_ACTIVE_JOBS", "max_active_jobs")
    )
    max_parameters: int = Field(
        1_000_000_000,
        ge=1,
        validation_alias=AliasChoices("DESCENT_MAX_PARAMETERS", "max_parameters"),
    )
    max_job_size: int = Field(
        10**13,
        ge=1,
        description="steps × parameters of one job",
        validation_alias=AliasChoices("DESCENT_MAX_JOB_SIZE", "max_job_size"),
    )
    requests_per_minute: int = Field(
        600,
        ge=1,
        validation_alias=AliasChoices("DESCENT_REQUESTS_PER_MINUTE", "requests_per_minute"),
    )
    # How often a running job writes its buffered metrics, renews its lease and reads the cancel
    # flag. A cancel takes effect within this many seconds.
    flush_seconds: float = Field(
        1.0, validation_alias=AliasChoices("DESCENT_FLUSH_SECONDS", "flush_seconds")
    )
    # Faults (worker/reaper.py, worker/heartbeat.py, worker/engine/checkpoint.py). A running job
    # holds a lease, renewed every third of it; a job whose lease ran out is requeued (its worker
    # is gone) and resumes from its last checkpoint. The lease bounds how long a dead worker's job
    # waits; it must exceed the longest stall of a live worker (a database blip, a GC pause).
    lease_seconds: float = Field(
        30.0, gt=0, validation_alias=AliasChoices("DESCENT_LEASE_SECONDS", "lease_seconds")
    )
    reap_seconds: float = Field(
        5.0, gt=0, validation_alias=AliasChoices("DESCENT_REAP_SECONDS", "reap_seconds")
    )
    # Requeues after a lost worker before the job is failed (a job that kills its worker every
    # time must not loop forever). A graceful shutdown (SIGTERM) hands the job back without
    # counting.
    max_restarts: int = Field(
        3, ge=0, validation_alias=AliasChoices("DESCENT_MAX_RESTARTS", "max_restarts")
    )
    # A queued job not claimed after this long, whose queue is empty in the broker, lost its
    # message: the reaper sends it again.
    lost_after_seconds: float = Field(
        60.0,
        gt=0,
        validation_alias=AliasChoices("DESCENT_LOST_AFTER_SECONDS", "lost_after_seconds"),
    )
    # Checkpoints: every `checkpoint_every` steps unless the spec says otherwise, and at least
    # every `checkpoint_seconds` of training (0: only by steps), and on SIGTERM.
    checkpoint_every: int = Field(
        1000, ge=1, validation_alias=AliasChoices("DESCENT_CHECKPOINT_EVERY", "checkpoint_every")
    )
    checkpoint_seconds: float = Field(
        300.0,
        ge=0,
        validation_alias=AliasChoices("DESCENT_CHECKPOINT_SECONDS", "checkpoint_seconds"),
    )
    checkpoint_dir_env: Path | None = Field(
        None, validation_alias=AliasChoices("DESCENT_CHECKPOINT_DIR", "checkpoint_dir")
    )
    # How long a worker keeps training while the database refuses its flushes (metrics stay
    # buffered and are retried with backoff); past this the job fails and is requeued later.
    flush_retry_seconds: float = Field(
        300.0,
        gt=0,
        validation_alias=AliasChoices("DESCENT_FLUSH_RETRY_SECONDS", "flush_retry_seconds"),
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def database_url(self) -> str:
        if self.database_url_env:
            return self.database_url_env
        return f"sqlite:///{(self.data_dir / 'descent.db').resolve()}"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def broker_url(self) -> str:
        if self.redis_url:
            return self.redis_url
        # kombu's SQLAlchemy transport on its own SQLite file: no server to run, and SQLite's
        # file locking makes it safe for the separate API and worker processes. A message that
        # is delivered twice is harmless: the worker claims jobs in the database (the ledger).
        return f"sqla+sqlite:///{(self.data_dir / 'broker.db').resolve()}"

    @property
    def checkpoint_dir(self) -> Path:
        """Shared by every worker that may resume a job (a volume or network file system when
        workers run on several machines)."""
        return self.checkpoint_dir_env or self.data_dir / "checkpoints"

    @property
    def embedded(self) -> bool:
        return self.redis_url is None

    @property
    def auth_enabled(self) -> bool:
        if self.auth is not None:
            return self.auth
        return self.redis_url is not None or self.database_url_env is not None

    def ensure_data_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
