"""Static checks of the deployment files (docker-compose.yml, Dockerfile, .ci/run).

No Docker engine is needed: these read the files and assert the properties the rest of the system
relies on (migrations before the API, one solo-pool worker per GPU, the pinned torch build, CI
that refuses to skip service tests).
"""

import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
CI_RUN = ROOT / ".ci" / "run"

DESCENT_SERVICES = ("migrate", "api", "worker", "flower")


# --- helpers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def _services(compose: dict) -> dict:
    return compose["services"]


def _command(service: dict) -> list[str]:
    cmd = service.get("command")
    assert cmd, "service has no explicit command"
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


def _depends_on(service: dict) -> dict[str, str]:
    """depends_on as {service: condition}; the short list form means service_started."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continued instruction"
    return instructions


def _worker_pool_ok(cmd: list[str]) -> None:
    """The worker must run Celery's solo pool with one process: one job per GPU at a time."""
    joined = " ".join(cmd)
    pools = re.findall(r"(?:--pool[= ]|-P ?)(\S+)", joined)
    if cmd[:2] == ["descent", "worker"]:
        # `descent worker` has --pool solo --concurrency 1 built in; it must not be overridden.
        assert all(p == "solo" for p in pools), f"worker pool overridden: {joined}"
    else:
        assert "celery" in cmd and "worker" in cmd, f"unexpected worker command: {joined}"
        assert pools == ["solo"], f"celery worker without --pool solo: {joined}"
        assert re.search(r"(--concurrency[= ]|-c ?)1\b", joined), f"concurrency not 1: {joined}"


# --- docker-compose.yml -------------------------------------------------------------------------


def test_compose_has_the_services(compose):
    services = _services(compose)
    for name in ("redis", "postgres", *DESCENT_SERVICES):
        assert name in services, f"docker-compose.yml lacks service {name!r}"
    assert services["redis"]["image"].startswith("redis:7")
    assert services["postgres"]["image"].startswith("postgres:16")


def test_backing_services_have_healthchecks(compose):
    services = _services(compose)
    pg_test = " ".join(map(str, services["postgres"]["healthcheck"]["test"]))
    assert "pg_isready" in pg_test
    redis_test = " ".join(map(str, services["redis"]["healthcheck"]["test"]))
    assert "redis-cli" in redis_test and "ping" in redis_test
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["postgres"]["volumes"])


def test_migrate_runs_alembic_once_postgres_is_healthy(compose):
    migrate = _services(compose)["migrate"]
    assert _command(migrate) == ["alembic", "upgrade", "head"]
    assert _depends_on(migrate).get("postgres") == "service_healthy"
    assert migrate.get("restart", "no") == "no", "a one-shot migration must not restart"


def test_api_starts_after_migrations_and_broker(compose):
    api = _services(compose)["api"]
    assert _command(api) == ["descent", "serve"]
    deps = _depends_on(api)
    assert deps.get("migrate") == "service_completed_successfully"
    assert deps.get("redis") == "service_healthy"
    assert any(str(p).split(":")[-1] == "8000" for p in api["ports"]), api["ports"]
    # Inside a container the API must listen on all interfaces to be reachable.
    assert _environment(api).get("DESCENT_HOST", "0.0.0.0") == "0.0.0.0"


def test_descent_services_share_settings_that_match_the_backing_services(compose):
    services = _services(compose)
    pg_env = _environment(services["postgres"])
    expected_db = (
        f"postgresql+psycopg://{pg_env['POSTGRES_USER']}:{pg_env['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{pg_env['POSTGRES_DB']}"
    )
    for name in DESCENT_SERVICES:
        env = _environment(services[name])
        assert env.get("DATABASE_URL") == expected_db, f"{name}: DATABASE_URL"
        redis_url = env.get("REDIS_URL", "")
        assert re.fullmatch(r"redis://redis:6379/\d+", redis_url), f"{name}: REDIS_URL"
        assert env.get("DESCENT_DATA_DIR") == "/data", f"{name}: DESCENT_DATA_DIR"


def test_api_and_worker_share_the_data_volume(compose):
    services = _services(compose)

    def data_volume(service: dict) -> str:
        mounts = [str(v) for v in service.get("volumes", []) if str(v).split(":")[1] == "/data"]
        assert mounts, "no volume at /data"
        return mounts[0].split(":")[0]

    assert data_volume(services["api"]) == data_volume(services["worker"])
    assert data_volume(services["api"]) in (compose.get("volumes") or {})


def test_worker_reserves_one_gpu_and_runs_the_solo_pool(compose):
    worker = _services(compose)["worker"]
    _worker_pool_ok(_command(worker))
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    gpu = [d for d in devices if d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])]
    assert len(gpu) == 1, devices
    # One GPU per worker process: either count 1 or a single pinned device id.
    assert gpu[0].get("count") == 1 or len(gpu[0].get("device_ids", [])) == 1, gpu[0]
    deps = _depends_on(worker)
    assert deps.get("migrate") == "service_completed_successfully"
    assert deps.get("redis") == "service_healthy"


def test_gpu_worker_image_is_a_cuda_build(compose):
    build = _services(compose)["worker"]["build"]
    variant = str(build["args"]["TORCH_VARIANT"])
    # Either literal (cu128) or an env default such as ${TORCH_VARIANT:-cu128}.
    assert re.search(r"\bcu\d+\b", variant), f"GPU worker would get a non-CUDA torch: {variant}"


def test_optional_cpu_worker_is_behind_a_profile(compose):
    services = _services(compose)
    cpu_workers = [s for n, s in services.items() if n != "worker" and "worker" in n and "cpu" in n]
    assert cpu_workers, "no CPU worker service"
    for svc in cpu_workers:
        assert svc.get("profiles"), "the CPU worker must be opt-in (profiles)"
        assert "devices" not in str(svc.get("deploy", "")), "the CPU worker reserves a GPU"
        _worker_pool_ok(_command(svc))
        assert str(svc.get("build", {}).get("args", {}).get("TORCH_VARIANT", "cpu")) == "cpu"


def test_flower_serves_the_celery_app_on_5555(compose):
    flower = _services(compose)["flower"]
    cmd = _command(flower)
    assert cmd[0] == "celery" and "flower" in cmd
    assert "worker.celery_app" in cmd
    assert any("5555" in str(p) for p in flower["ports"])


# --- Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_pins_torch_per_variant_before_the_source():
    instructions = _dockerfile_instructions()
    keywords = [k for k, _ in instructions]
    assert instructions[0][0] == "FROM" and instructions[0][1].startswith("python:3.11-slim")
    assert ("ARG", "TORCH_VARIANT=cpu") in instructions

    torch_runs = [i for i, (k, a) in enumerate(instructions) if k == "RUN" and "torch==" in a]
    assert len(torch_runs) == 1, "torch must be installed in exactly one RUN"
    torch_at = torch_runs[0]
    torch_args = instructions[torch_at][1]
    assert re.search(r"torch==2\.13\.0(\s|$)", torch_args), torch_args
    assert "download.pytorch.org/whl/${TORCH_VARIANT}" in torch_args

    # Cache-friendly: the torch layer comes before any project file is copied.
    first_copy = keywords.index("COPY")
    assert torch_at < first_copy
    # The project is installed after its source is copied, without re-resolving torch.
    install = [
        i
        for i, (k, a) in enumerate(instructions)
        if k == "RUN" and "pip install" in a and re.search(r"\s-e\s+\.|\s\.(\s|$)", a + " ")
    ]
    assert install and all(i > first_copy for i in install)
    assert "--no-deps" in instructions[install[-1]][1]
    # Flower lives in the image only.
    assert any(k == "RUN" and "flower" in a for k, a in instructions)


def test_dockerfile_runtime_settings():
    instructions = _dockerfile_instructions()
    text = "\n".join(f"{k} {a}" for k, a in instructions)
    users = [a for k, a in instructions if k == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    assert re.search(r"DESCENT_HOST=0\.0\.0\.0", text)
    assert re.search(r"DESCENT_DATA_DIR=/data", text)
    assert ("EXPOSE", "8000") in instructions
    healthchecks = [a for k, a in instructions if k == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "urllib" in healthchecks[0] and "/healthz" in healthchecks[0]
    cmd = [a for k, a in instructions if k == "CMD"]
    assert cmd and cmd[-1].replace(" ", "") == '["descent","serve"]'
    # Migrations run from the image's working directory, so alembic.ini must be in it.
    assert any(k == "COPY" and a.split()[0] == "alembic.ini" for k, a in instructions)


def test_dockerignore_keeps_local_state_out_of_the_context():
    entries = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".git", ".venv", ".descent"):
        assert needed in entries, f".dockerignore lacks {needed}"


# --- .ci/run ------------------------------------------------------------------------------------


def test_ci_run_is_an_executable_strict_bash_script():
    assert CI_RUN.is_file()
    assert os.access(CI_RUN, os.X_OK), ".ci/run must be executable"
    text = CI_RUN.read_text()
    assert text.splitlines()[0] in ("#!/usr/bin/env bash", "#!/bin/bash")
    assert re.search(r"^set -euo pipefail$", text, re.M)


def test_ci_run_requires_services_and_runs_the_tests():
    lines = [ln.strip() for ln in CI_RUN.read_text().splitlines() if not ln.strip().startswith("#")]
    export_at = next(i for i, ln in enumerate(lines) if ln == "export REQUIRE_SERVICES=1")
    test_at = next(i for i, ln in enumerate(lines) if ln == "make test")
    assert export_at < test_at, "REQUIRE_SERVICES=1 must be exported before make test"
    body = "\n".join(lines)
    # It starts the services it needs and waits for them.
    assert "pg_ctlcluster" in body and "pg_isready" in body
    assert "redis-server" in body and "redis-cli" in body
    # Lint runs (when the Makefile has it) before the tests.
    lint_at = next(i for i, ln in enumerate(lines) if ln == "make lint")
    assert lint_at < test_at
