"""`descent keys create | list | revoke`: server-side commands on the database, like `migrate`."""

import json

from typer.testing import CliRunner

from client.cli import app
from models.db import session_scope
from models.keys import verify_key


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_create_list_revoke(embedded_db: dict) -> None:
    code, out, err = run("keys", "create", "--owner", "alice", "--max-active-jobs", "3")
    assert code == 0, err
    secret = out.strip()
    assert secret.startswith("dsk_") and "shown once" in err
    with session_scope() as session:
        key = verify_key(session=session, key=secret)
        assert key is not None and key.owner == "alice" and key.max_active_jobs == 3
    code, out, _ = run("keys", "create", "--owner", "ops", "--role", "admin", "--name", "ci")
    assert code == 0

    code, out, _ = run("keys", "list", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["owner"], r["role"]) for r in rows] == [("alice", "user"), ("ops", "admin")]
    assert secret not in out and rows[0]["prefix"] == secret[:12]

    code, _, err = run("keys", "revoke", rows[0]["prefix"])
    assert code == 0 and "revoked" in err
    with session_scope() as session:
        assert verify_key(session=session, key=secret) is None
    _, out, _ = run("keys", "list", "--json")
    assert [json.loads(line)["owner"] for line in out.splitlines()] == ["ops"]
    _, out, _ = run("keys", "list", "--json", "--revoked", "--owner", "alice")
    assert json.loads(out)["revoked_at"] is not None


def test_refusals(embedded_db: dict) -> None:
    assert run("keys", "create", "--owner", "x", "--role", "boss")[0] == 2
    assert run("keys", "create", "--owner", "x", "--requests-per-minute", "0")[0] == 2
    assert run("keys", "create", "--owner", "o" * 65)[0] == 2
    code, _, err = run("keys", "revoke", "dsk_nothing")
    assert code == 1 and "no key" in err


def test_a_database_without_the_schema_is_explained(settings_env: dict) -> None:
    code, _, err = run("keys", "list")
    assert code == 3 and "descent migrate" in err
