"""Data sources for training jobs: the spec's `data` section turned into tensors.

Each source is one module with a loader `(args, *, seed, data_root) -> RawData` that returns all
examples in a fixed order; `load_data` picks the loader by name and makes the seeded
train/validation split. Data sets are small enough to live in memory as tensors, which the
engine moves to the device once and batches by index.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from worker.datasets.base import Kind, RawData
from worker.datasets.digits import load_digits_data
from worker.datasets.mnist import load_mnist
from worker.datasets.pca import fit_pca
from worker.datasets.sequences import load_adding_problem, load_associative_recall, load_points
from worker.datasets.synthetic import load_classification, load_regression

__all__ = ["DATASETS", "DataBundle", "RawData", "load_data"]

DATASETS: dict[str, Callable[..., RawData]] = {
    "synthetic_regression": load_regression,
    "synthetic_classification": load_classification,
    "digits": load_digits_data,
    "mnist": load_mnist,
    "points": load_points,
    "adding_problem": load_adding_problem,
    "associative_recall": load_associative_recall,
}

_SPLIT_STREAM = 1  # keeps the split's random stream apart from the one a generator may use


class DataSpecLike(Protocol):
    """The parts of the spec's `data` section (models.spec.DataSpec) that loading reads."""

    name: str
    args: Any
    val_fraction: float


@dataclass(frozen=True)
class DataBundle:
    x_train: torch.Tensor  # float32, (n, *input_shape), on CPU
    y_train: torch.Tensor  # int64 class ids, or float32 (n, num_outputs) for regression
    x_val: torch.Tensor  # zero rows when val_fraction is 0
    y_val: torch.Tensor
    kind: Kind
    num_outputs: int  # classes, or regression targets
    source: str  # provenance, written into the job summary

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def load_data(data_spec: DataSpecLike, *, seed: int, data_root: Path) -> DataBundle:
    """Load the named data set and split it: a seeded permutation, the first
    round(n * val_fraction) examples for validation (at least one left for training)."""
    if data_spec.name not in DATASETS:
        raise ValueError(f"unknown data set {data_spec.name!r}; choose from {sorted(DATASETS)}")
    split_seed = getattr(data_spec, "split_seed", None)  # fixed across an ensemble's members
    seed = seed if split_seed is None else split_seed
    raw = DATASETS[data_spec.name](data_spec.args, seed=seed, data_root=Path(data_root))
    n = len(raw.x)
    n_val = min(round(n * data_spec.val_fraction), n - 1)
    order = torch.from_numpy(np.random.default_rng((seed, _SPLIT_STREAM)).permutation(n))
    val, train = order[:n_val], order[n_val:]
    x_train, x_val, source = raw.x[train], raw.x[val], raw.source
    components = getattr(data_spec, "pca", None)
    if components:
        x_train, x_val, explained = fit_pca(x_train, x_val, components)
        source += f"; PCA to {components} components fit on the training split ({explained:.1%})"
    return DataBundle(
        x_train=x_train,
        y_train=raw.y[train],
        x_val=x_val,
        y_val=raw.y[val],
        kind=raw.kind,
        num_outputs=raw.num_outputs,
        source=source,
    )
