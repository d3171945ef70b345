"""scikit-learn's bundled handwritten digits: 1,797 images of 8x8 pixels, 10 classes.

Small enough to train on in seconds on a CPU, and needs no download: the default data set for
quick comparisons and tests.
"""

import functools
from pathlib import Path

import torch
from sklearn.datasets import load_digits

from models.catalog.base import NoArgs
from worker.datasets.base import RawData


@functools.lru_cache(maxsize=1)
def _digits() -> RawData:
    bunch = load_digits()
    # Pixel intensities are 0..16 in this data set.
    x = torch.from_numpy(bunch.images).float().div_(16.0).unsqueeze(1)
    y = torch.from_numpy(bunch.target).long()
    source = f"scikit-learn bundled digits ({len(y)} images, 8x8)"
    return RawData(x, y, "classification", 10, source)


def load_digits_data(args: NoArgs, *, seed: int, data_root: Path) -> RawData:
    """Images as (n, 1, 8, 8) floats in [0, 1]; the order is fixed, `seed` is unused."""
    return _digits()
