"""The synthetic sequence tasks and inline points: shapes, labels and determinism."""

from pathlib import Path

import torch

from models.catalog.datasets import AddingProblemArgs, AssociativeRecallArgs, PointsArgs
from worker.datasets.sequences import load_adding_problem, load_associative_recall, load_points


def test_adding_problem_targets_are_the_sum_of_the_two_marked_values(tmp_path: Path) -> None:
    data = load_adding_problem(
        AddingProblemArgs(n_samples=64, length=20), seed=3, data_root=tmp_path
    )
    assert data.x.shape == (64, 20, 2) and data.y.shape == (64, 1) and data.kind == "regression"
    values, markers = data.x[..., 0], data.x[..., 1]
    assert torch.equal(markers.sum(dim=1), torch.full((64,), 2.0))
    assert bool((markers[:, :10].sum(dim=1) == 1).all())  # one marker in each half
    torch.testing.assert_close((values * markers).sum(dim=1, keepdim=True), data.y)
    again = load_adding_problem(
        AddingProblemArgs(n_samples=64, length=20), seed=3, data_root=tmp_path
    )
    assert torch.equal(again.x, data.x)


def test_associative_recall_label_is_the_value_stored_with_the_query(tmp_path: Path) -> None:
    args = AssociativeRecallArgs(n_samples=50, pairs=3, n_keys=5, n_values=4)
    data = load_associative_recall(args, seed=0, data_root=tmp_path)
    assert data.x.shape == (50, 7, 9) and data.kind == "classification" and data.num_outputs == 4
    tokens = data.x.argmax(dim=2)
    for row, label in zip(tokens.tolist(), data.y.tolist(), strict=True):
        keys, values, query = row[0:-1:2], row[1:-1:2], row[-1]
        assert len(set(keys)) == 3 and all(k < 5 for k in keys)
        assert values[keys.index(query)] - 5 == label


def test_points_are_the_given_rows(tmp_path: Path) -> None:
    data = load_points(PointsArgs(x=[[1.0], [2.0]], y=[[3.0], [5.0]]), seed=0, data_root=tmp_path)
    assert data.x.tolist() == [[1.0], [2.0]] and data.y.tolist() == [[3.0], [5.0]]
