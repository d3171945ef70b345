"""Starting the service's processes: the API, a worker, or both together (`descent up`).

These are the only CLI commands that import the server side; the rest of the CLI speaks HTTP.
"""

import ipaddress
import os
import signal
import subprocess
import sys
import time

from models.settings import get_settings


def migrate() -> None:
    from models.migrate import upgrade

    settings = get_settings()
    if settings.database_url.startswith("sqlite"):
        settings.ensure_data_dir()
    upgrade()


class UnsafeBind(SystemExit):
    """Auth is off and the address is reachable from other machines."""


def refuse_open_bind_without_auth(host: str) -> None:
    """With auth off (the embedded single-user mode) anyone who reaches the port owns the service,
    so it may listen on the loopback interface only."""
    if get_settings().auth_enabled:
        return
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UnsafeBind(
            f"refusing to listen on {host}: authentication is off (embedded single-user mode), "
            "so the API may bind to 127.0.0.1 only. Listen on 127.0.0.1 (DESCENT_HOST / --host), "
            "or turn authentication on with DESCENT_AUTH=1 and create a key with "
            "`descent keys create --owner NAME`."
        )


def serve(
    host: str | None = None,
    port: int | None = None,
    *,
    run_migrations: bool = True,
    processes: int | None = None,
) -> int:
    """The API in `processes` uvicorn processes (default DESCENT_API_PROCESSES, 1); returns the
    exit status. Migrations run once, here, before any server starts. With more than one,
    uvicorn's own supervisor runs them on one socket: it forwards SIGTERM / SIGINT, and replaces
    a server process that dies or stops answering its health check."""
    import uvicorn

    settings = get_settings()
    host, port = host or settings.host, port or settings.port
    processes = processes or settings.api_processes
    if not 1 <= processes <= 64:
        raise SystemExit(f"--processes must be between 1 and 64, not {processes}")
    refuse_open_bind_without_auth(host)
    if run_migrations:
        migrate()
    uvicorn.run(
        "api.main:app", host=host, port=port, workers=processes, access_log=settings.access_log
    )
    return 0


def worker(queues: str | None = None, loglevel: str = "info") -> None:
    """One Celery worker process, pool `solo`: the task runs in this process, one job at a time
    (one process per GPU). It listens on the gpu queue only when it has a CUDA device."""
    import torch

    from worker.celery_app import app, queue_names

    names = queues or ",".join(queue_names(gpu=torch.cuda.is_available()))
    app.worker_main(
        [
            "worker",
            "--pool=solo",
            "--concurrency=1",
            f"--queues={names}",
            f"--loglevel={loglevel}",
            f"--hostname=descent-{os.getpid()}@%h",
        ]
    )


def up(host: str | None = None, port: int | None = None) -> int:
    """Migrate, then run the API and one worker until Ctrl-C / SIGTERM; stop both on exit."""
    settings = get_settings()
    host, port = host or settings.host, port or settings.port
    refuse_open_bind_without_auth(host)
    migrate()
    python = [sys.executable, "-m", "client.cli"]
    children = [
        subprocess.Popen([*python, "serve", "--no-migrate", "--host", host, "--port", str(port)]),
        subprocess.Popen([*python, "worker"]),
    ]
    mode = "embedded (SQLite + SQLite broker)" if settings.embedded else "services"
    print(f"Descent is starting at http://{host}:{port}  (docs: /docs, mode: {mode})", flush=True)

    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not stopping and all(child.poll() is None for child in children):
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            child.kill()
    return 0 if stopping else 1
