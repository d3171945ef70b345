"""`descent serve --processes N`: N uvicorn servers on one socket under uvicorn's supervisor, on
the embedded SQLite database with auth off."""

import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from client.cli import app
from models.settings import Settings
from tests.conftest import ServiceProcess, free_port, wait_for_http


def children_of(pid: int) -> set[int]:
    """Live processes whose parent is `pid` (from /proc/*/stat; zombies left out)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")"
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError):
            continue
        if int(ppid) == pid and state != "Z":
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def servers(serve: ServiceProcess) -> set[int]:
    """The server processes that have logged their start and are alive."""
    started = re.findall(r"Started server process \[(\d+)\]", serve.output())
    return {int(pid) for pid in started if alive(int(pid))}


def wait_for_servers(
    serve: ServiceProcess, count: int, gone: int | None = None, timeout: float = 30
) -> set[int]:
    """`count` live servers, `gone` (a killed one, until it is reaped) not among them."""
    deadline = time.monotonic() + timeout
    while len(found := servers(serve)) < count or gone in found:
        assert time.monotonic() < deadline, serve.output()
        time.sleep(0.1)
    return found


@pytest.fixture
def two_servers(tmp_path: Path):
    """`descent serve --processes 2` on a free port, answering; yields (process, port, servers)."""
    port = free_port()
    env = {"DESCENT_DATA_DIR": str(tmp_path / "data"), "PORT": str(port), "DESCENT_AUTH": "0"}
    serve = ServiceProcess(["serve", "--processes", "2"], env, tmp_path / "serve.log")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz")
        running = wait_for_servers(serve, 2)
        assert running <= children_of(serve.process.pid), (running, serve.output())
        yield serve, port, running
    finally:
        leftover = children_of(serve.process.pid)
        serve.stop()
        for child in leftover:  # only after a failure above: the tests wait for them
            if alive(child):
                os.kill(child, signal.SIGKILL)


def wait_gone(serve: ServiceProcess, children: set[int], timeout: float = 10) -> float:
    started = time.monotonic()
    serve.process.wait(timeout=timeout)
    while any(alive(c) for c in children) and time.monotonic() - started < timeout:
        time.sleep(0.05)
    assert not [c for c in children if alive(c)], serve.output()
    return time.monotonic() - started


@pytest.mark.e2e
def test_two_processes_serve_and_stop_together_on_sigterm(two_servers) -> None:
    serve, port, children = two_servers
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        assert all(http.get("/healthz").status_code == 200 for _ in range(20))
    serve.process.send_signal(signal.SIGTERM)
    wait_gone(serve, children)
    assert serve.process.returncode == 0, serve.output()
    assert serve.output().count("Finished server process") == 2
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


@pytest.mark.e2e
def test_a_server_that_dies_is_replaced_and_the_api_keeps_answering(two_servers) -> None:
    serve, port, running = two_servers
    victim = min(running)
    os.kill(victim, signal.SIGKILL)
    replaced = wait_for_servers(serve, 2, gone=victim)
    assert len(replaced - running) == 1, serve.output()  # a new server took the victim's place
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        assert all(http.get("/healthz").status_code == 200 for _ in range(20))
    serve.process.send_signal(signal.SIGTERM)
    wait_gone(serve, replaced)
    assert serve.process.returncode == 0, serve.output()


def test_api_processes_setting_is_bounded(settings_env: dict, monkeypatch) -> None:
    assert Settings().api_processes == 1
    monkeypatch.setenv("DESCENT_API_PROCESSES", "4")
    assert Settings().api_processes == 4
    for refused in ("0", "65"):
        monkeypatch.setenv("DESCENT_API_PROCESSES", refused)
        with pytest.raises(ValidationError, match="DESCENT_API_PROCESSES"):
            Settings()


def test_serve_refuses_zero_processes() -> None:
    result = CliRunner().invoke(app, ["serve", "--processes", "0"], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "--processes" in result.output
