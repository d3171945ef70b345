"""Shared fixtures: isolated settings, real PostgreSQL/Redis, and real service processes.

Tests that need PostgreSQL or Redis skip with a reason when the service is down, unless
REQUIRE_SERVICES=1 (CI), where a missing service is a failure.
"""

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SETTINGS_ENV = (
    "DATABASE_URL",
    "REDIS_URL",
    "DESCENT_DATA_DIR",
    "DESCENT_QUEUE",
    "DESCENT_FLUSH_SECONDS",
    "PORT",
    "DESCENT_PORT",
    "DESCENT_HOST",
    "DESCENT_API_PROCESSES",
    "DESCENT_ACCESS_LOG",
    "DESCENT_AUTH",
    "DESCENT_MAX_ACTIVE_JOBS",
    "DESCENT_MAX_PARAMETERS",
    "DESCENT_MAX_JOB_SIZE",
    "DESCENT_REQUESTS_PER_MINUTE",
    "DESCENT_LEASE_SECONDS",
    "DESCENT_REAP_SECONDS",
    "DESCENT_MAX_RESTARTS",
    "DESCENT_LOST_AFTER_SECONDS",
    "DESCENT_CHECKPOINT_EVERY",
    "DESCENT_CHECKPOINT_SECONDS",
    "DESCENT_CHECKPOINT_DIR",
    "DESCENT_FLUSH_RETRY_SECONDS",
)


def require_services() -> bool:
    return os.environ.get("REQUIRE_SERVICES") == "1"


def service_missing(reason: str) -> None:
    if require_services():
        pytest.fail(f"{reason} (REQUIRE_SERVICES=1: a missing service is a failure)")
    pytest.skip(reason)


def reset_caches() -> None:
    """Settings, engines and the broker producer are cached per process; tests change them."""
    from api.queue import producer
    from models.db import get_engine, get_sessionmaker
    from models.settings import get_settings

    if get_engine.cache_info().currsize:
        get_engine().dispose()
    for cached in (get_settings, get_engine, get_sessionmaker, producer):
        cached.cache_clear()


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A clean environment with its own data dir: the embedded default (SQLite)."""
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
    env = {"DESCENT_DATA_DIR": str(tmp_path / "data")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_caches()
    yield env
    reset_caches()


@pytest.fixture
def embedded_db(settings_env: dict[str, str]) -> dict[str, str]:
    """The embedded SQLite database, migrated."""
    from models.migrate import upgrade

    upgrade()
    return settings_env


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    import psycopg

    name = f"descent_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        service_missing(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    yield f"{url}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_queue() -> Iterator[str]:
    """A queue prefix of this session's own on the real Redis; its keys are deleted at the end."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_missing(f"Redis is not reachable at {REDIS_URL}: {exc}")
    prefix = f"descent-test-{uuid.uuid4().hex[:8]}"
    yield prefix
    for key in client.scan_iter(f"*{prefix}*"):
        client.delete(key)
    client.close()


@pytest.fixture
def services_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, postgres_url: str, redis_queue: str
) -> Iterator[dict[str, str]]:
    """Settings pointing at the real PostgreSQL and Redis, schema migrated."""
    from models.migrate import upgrade

    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
    env = {
        "DATABASE_URL": postgres_url,
        "REDIS_URL": REDIS_URL,
        "DESCENT_QUEUE": redis_queue,
        "DESCENT_DATA_DIR": str(tmp_path / "data"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_caches()
    upgrade()
    yield env
    reset_caches()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    """A `descent …` command in a subprocess, its output kept in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        full_env = {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV}
        full_env.update(env)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "client.cli", *args],
            cwd=ROOT,
            env=full_env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text()

    def wait_for_log(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not seen in {self.log}:\n{self.output()[-3000:]}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def wait_for_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def wait_for_status(http: httpx.Client, job_id: str, wanted: set[str], timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in wanted:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} is {job.get('status')}, not {wanted}: {job}")
