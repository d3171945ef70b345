"""Starting the service's processes: the API, a worker, or both together (`descent up`).

These are the only CLI commands that import the server side; the rest of the CLI speaks HTTP.
"""

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import traceback

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
    exit status. Migrations run once, here, before any server starts."""
    import uvicorn

    settings = get_settings()
    host, port = host or settings.host, port or settings.port
    processes = processes or settings.api_processes
    if not 1 <= processes <= 64:
        raise SystemExit(f"--processes must be between 1 and 64, not {processes}")
    refuse_open_bind_without_auth(host)
    if run_migrations:
        migrate()
    if processes == 1:
        uvicorn.run("api.main:app", host=host, port=port)
        return 0
    return serve_processes(host, port, processes)


def _listening_socket(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)  # proto IPPROTO_TCP: see serve_processes
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(2048)
    return sock


def _die_with_parent() -> None:
    """Linux: this process gets SIGTERM when its parent dies, even by SIGKILL."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM))


def serve_processes(host: str, port: int, processes: int, stop_timeout: float = 15) -> int:
    """`processes` uvicorn servers in forked processes that accept on one listening socket made
    here; this process only supervises them. Returns 0 after SIGTERM / SIGINT, 1 if a server
    exited on its own (the others are then stopped too: nothing is left half-running).

    Why not `uvicorn --workers`: uvicorn binds that socket itself with proto 0, so asyncio
    never sets TCP_NODELAY on the connections it accepts (it does so only when the listening
    socket's proto is IPPROTO_TCP), and on a reused keep-alive connection every response then
    waits ~40 ms for the client's delayed ACK (uvicorn#3149): p99 above 40 ms at any load.
    benchmarks/job_read_load.py measures both (`--plain-workers`)."""
    import uvicorn

    from models.db import get_engine, get_sessionmaker

    sock = _listening_socket(host, port)
    # The migration's pooled connection must not be shared by the children.
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()

    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    children: set[int] = set()
    # Blocked while forking, so that a child never runs this process's handler.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:  # a server: uvicorn installs its own SIGINT / SIGTERM handlers
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
            status = 1
            try:
                _die_with_parent()
                if os.getppid() == parent:  # else the parent died before prctl
                    server = uvicorn.Server(uvicorn.Config("api.main:app"))
                    server.run(sockets=[sock])
                    status = 0 if server.started else 3
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        children.add(pid)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    sock.close()
    print(
        f"Descent API at http://{host}:{port} in {processes} processes "
        f"(pids {' '.join(map(str, sorted(children)))})",
        flush=True,
    )

    crashed = False
    while children and not stopping:
        pid, _ = os.waitpid(-1, os.WNOHANG)
        if pid:
            children.discard(pid)
            crashed = True
            break
        time.sleep(0.2)
    # SIGTERM, also for Ctrl-C: the terminal already sent the servers SIGINT, and a second
    # SIGINT would make uvicorn drop its open connections instead of finishing them.
    for pid in children:  # not reaped yet, so the pid is still this child's
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + stop_timeout
    while children and time.monotonic() < deadline:
        pid, _ = os.waitpid(-1, os.WNOHANG)
        if pid:
            children.discard(pid)
        else:
            time.sleep(0.05)
    for pid in children:  # past the deadline
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return 1 if crashed else 0


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
