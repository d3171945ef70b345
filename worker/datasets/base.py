"""What every loader returns: all examples of one data set, before the train/validation split."""

from dataclasses import dataclass
from typing import Literal

import torch

Kind = Literal["classification", "regression"]


@dataclass(frozen=True)
class RawData:
    x: torch.Tensor  # float32, (n, *input_shape)
    y: torch.Tensor  # int64 (n,) for classification, float32 (n, num_outputs) for regression
    kind: Kind
    num_outputs: int  # classes, or regression targets
    source: str  # provenance, for the job summary
