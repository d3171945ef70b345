"""`--key` on every command that talks to the API, against the real API in-process with auth
on; and `--help` on every command and subcommand of `descent`."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from client import remote
from client.api import Descent
from client.cli import app
from models.db import session_scope
from models.keys import create_key
from models.tables import KeyRole

MINIMAL = {"model": {"name": "mlp"}, "data": {"name": "digits"}, "optimizer": {"name": "adam"}}


def commands() -> list[tuple[tuple[str, ...], Any]]:
    """Every command of the CLI, groups included, by its path: `()` is `descent` itself."""
    found = []

    def walk(command: Any, path: tuple[str, ...]) -> None:
        found.append((path, command))
        for name, sub in getattr(command, "commands", {}).items():  # a group's
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


def api_commands() -> set[tuple[str, ...]]:
    """The commands that talk to the API: those client/remote.py defines."""
    return {
        path
        for path, command in commands()
        if command.callback is not None and command.callback.__module__ == remote.__name__
    }


@pytest.mark.parametrize(
    "path", [path for path, _ in commands()], ids=lambda path: " ".join(("descent", *path))
)
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"}, prog_name="descent")

    assert result.exit_code == 0, result.output
    assert f"Usage: descent {' '.join(path)}".strip() in result.stdout


def test_every_api_command_takes_url_and_key() -> None:
    by_path = dict(commands())
    assert len(api_commands()) >= 10
    for path in api_commands():
        options = {opt: param for param in by_path[path].params for opt in param.opts}
        assert options["--url"].envvar == "DESCENT_URL", path
        assert options["--key"].envvar == "DESCENT_API_KEY", path


def new_key(owner: str) -> str:
    with session_scope() as session:
        _, secret = create_key(session=session, owner=owner, role=KeyRole.user)
    return secret


@pytest.fixture
def keyed_server(embedded_db: dict, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The API app with auth on (DESCENT_AUTH=1), no key in the environment; a study's driver
    is not started."""
    from api.main import create_app
    from models.settings import get_settings

    monkeypatch.setenv("DESCENT_AUTH", "1")
    monkeypatch.delenv("DESCENT_API_KEY", raising=False)
    monkeypatch.delenv("DESCENT_URL", raising=False)
    monkeypatch.setattr("api.routes.studies.send_driver", lambda study_id, token: None)
    get_settings.cache_clear()
    with TestClient(create_app()) as http:
        yield http
    get_settings.cache_clear()


@pytest.fixture
def keys_seen(keyed_server: TestClient, monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The key each command handed to the client (and the client then sends)."""
    seen: list[str | None] = []

    def connect(url: str, key: str | None) -> Descent:
        seen.append(key)
        return Descent(http=keyed_server, key=key or "")

    monkeypatch.setattr(remote, "connect", connect)
    return seen


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})


@pytest.fixture
def alice(keyed_server: TestClient) -> str:
    return new_key("alice")


@pytest.fixture
def command_lines(keyed_server: TestClient, alice: str, tmp_path: Path) -> dict[tuple, list]:
    """A command line for each API command, on alice's jobs and study."""
    owned = Descent(http=keyed_server, key=alice)
    first, second = owned.submit(MINIMAL).id, owned.submit(MINIMAL).id
    study = owned.create_study({"preset": "mnist_showdown", "seeds": 1}).id
    spec = tmp_path / "spec.yaml"
    spec.write_text("model: {name: mlp}\ndata: {name: digits}\noptimizer: {name: adam}\n")
    return {
        ("submit",): [str(spec)],
        ("status",): [first],
        ("list",): [],
        ("cancel",): [second],
        ("metrics",): [first],
        ("compare",): [first, second],
        ("export",): [first],
        ("study", "create"): ["--preset", "mnist_showdown", "--seeds", "1"],
        ("study", "summary"): [study],
        ("study", "list"): [],
    }


def test_every_api_command_needs_the_key_and_works_with_it(
    keys_seen: list, alice: str, command_lines: dict[tuple, list]
) -> None:
    assert set(command_lines) == api_commands()  # a new command gets a line here
    for path, args in command_lines.items():
        keys_seen.clear()
        without = invoke(*path, *args)
        with_key = invoke(*path, *args, "--key", alice)

        assert without.exit_code == 3, (path, without.output)
        assert "error 401 unauthorized: missing API key" in without.stderr, path
        assert "pass --key KEY or set DESCENT_API_KEY" in without.stderr, path
        assert with_key.exit_code == 0, (path, with_key.output)
        assert keys_seen == [None, alice], path


def test_the_key_comes_from_the_environment_too(keys_seen: list, alice: str) -> None:
    listed = invoke("list", env={"DESCENT_API_KEY": alice})

    assert listed.exit_code == 0, listed.output
    assert keys_seen == [alice]


def test_a_wrong_key_is_refused_with_a_message(
    keys_seen: list, alice: str, keyed_server: TestClient
) -> None:
    job_id = Descent(http=keyed_server, key=alice).submit(MINIMAL).id
    bob = new_key("bob")

    wrong = invoke("status", job_id, "--key", "dsk_not-a-key")
    not_his = invoke("status", job_id, "--key", bob)

    assert wrong.exit_code == 3
    assert "error 401 unauthorized: invalid or revoked API key" in wrong.stderr
    assert "the key given (--key or $DESCENT_API_KEY) is not valid here" in wrong.stderr
    assert not_his.exit_code == 3 and "404 not_found" in not_his.stderr  # alice's job
