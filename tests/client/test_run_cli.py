"""`descent run`: every task a spec can have, in this process, through the CLI as a user types it.

The solve examples are the documents' hand-worked problems; the printed numbers are read back
from the table and checked against the document's results and numpy, not against a recording.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner, Result

from client.cli import app
from models.catalog.solvers import methods_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def descent_run(settings_env: dict, monkeypatch: pytest.MonkeyPatch):
    """`descent run …` with stdout a pipe of no declared width (the table must not be cut)."""
    monkeypatch.delenv("COLUMNS", raising=False)
    runner = CliRunner()

    def invoke(*args: str | Path) -> Result:
        return runner.invoke(app, ["run", *map(str, args)])

    return invoke


def table_rows(output: str) -> list[dict[str, str]]:
    """The rows of the printed results table, as {column header: cell text}."""
    lines = output.splitlines()
    header = next(line for line in lines if "┃" in line)
    names = [cell.strip() for cell in header.split("┃")]
    rows = [[cell.strip() for cell in line.split("│")] for line in lines if "│" in line]
    return [dict(zip(names, row, strict=True)) for row in rows]


def printed_vector(cell: str) -> list[float]:
    assert re.fullmatch(r"\[.*\]", cell), cell
    return [float(value) for value in cell[1:-1].split(",")]


def test_solve_prints_the_four_points_weights_for_every_method(descent_run) -> None:
    """002: (1,2), (2,3), (3,4), (4,5) lie on y = 1 + x, so every method prints [1, 1]."""
    result = descent_run(EXAMPLES / "solve_four_points.yaml")
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert [row["method"] for row in rows] == methods_for("least_squares")
    for row in rows:
        assert printed_vector(row["solution"]) == pytest.approx([1.0, 1.0], abs=1e-6), row
        assert float(row["coef error"]) < 1e-6 and float(row["residual"]) < 1e-6, row
        assert float(row["time ms"]) >= 0
    design = np.array([[1.0, 1.0], [1.0, 2.0], [1.0, 3.0], [1.0, 4.0]])
    kappa = np.linalg.cond(design)
    assert f"κ = {kappa:.3g} (normal equations: {kappa**2:.3g})" in result.stdout
    assert "solving" in result.stderr  # the progress bar, kept off stdout


def test_solve_json_has_the_hand_worked_line(descent_run) -> None:
    """002's two points (1,3), (2,5): a = 2, b = 1 from every method, in the JSON summary."""
    result = descent_run(EXAMPLES / "solve_002_hand.yaml", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "succeeded" and summary["task"] == "solve"
    assert len(summary["methods"]) == 10
    for label, row in summary["methods"].items():
        assert row["coef"] == pytest.approx([2.0, 1.0], abs=1e-6), label
    assert summary["condition_number"] == pytest.approx(np.linalg.cond([[1, 1], [2, 1]]))


def test_solve_power_iteration_prints_the_dominant_eigenpair(descent_run) -> None:
    """002: A = [[2, 1], [1, 2]] has λ = 3 with eigenvector [1, 1]/√2."""
    result = descent_run(EXAMPLES / "solve_power_iteration.yaml")
    assert result.exit_code == 0, result.output
    rows = {row["method"]: row for row in table_rows(result.stdout)}
    assert "power_iteration" in rows
    for row in rows.values():
        assert float(row["eigenvalue"]) == pytest.approx(3.0, abs=1e-8)
        vector = np.abs(printed_vector(row["eigenvector"]))  # up to sign
        assert vector == pytest.approx([2**-0.5, 2**-0.5], abs=1e-6)


def test_solve_ill_conditioned_shows_inversion_breaking_down(descent_run) -> None:
    """κ(X) = 1e10: the explicit inverse of XᵀX (κ² = 1e20) is measured worse than QR."""
    result = descent_run(EXAMPLES / "solve_ill_conditioned.yaml")
    assert result.exit_code == 0, result.output
    errors = {row["method"]: float(row["coef error"]) for row in table_rows(result.stdout)}
    assert errors["normal_inverse"] > 1e3 * errors["qr_householder"]
    assert "solution" not in table_rows(result.stdout)[0]  # 20 unknowns: too many to print


def test_lr_range_test_runs_and_prints_its_summary(descent_run, tmp_path: Path) -> None:
    spec = yaml.safe_load((EXAMPLES / "lr_range_test.yaml").read_text())
    spec["lr_range_test"].update(steps=12, stop_factor=None)
    path = tmp_path / "finder.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = descent_run(path)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "succeeded" and summary["steps"] == 12
    finder = summary["lr_range_test"]
    assert spec["lr_range_test"]["lr_min"] <= finder["suggested_lr"] <= 10.0
    assert f"suggested lr: {finder['suggested_lr']}" in result.stderr


def test_training_prints_its_summary(descent_run, tmp_path: Path) -> None:
    spec = json.loads((EXAMPLES / "minimal.json").read_text())
    path = tmp_path / "minimal.json"
    path.write_text(json.dumps({**spec, "max_steps": 5}))
    result = descent_run(path)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "succeeded" and summary["steps"] == 5
    assert "train_loss" in summary["final"] and "val_acc" in summary["final"]


def test_ensemble_needs_the_service(descent_run, tmp_path: Path) -> None:
    path = tmp_path / "ensemble.yaml"
    path.write_text(yaml.safe_dump({"task": "ensemble", "ensemble": {"jobs": ["a1", "b2"]}}))
    result = descent_run(path)
    assert result.exit_code == 2
    assert "descent submit" in result.stderr and result.stdout == ""
