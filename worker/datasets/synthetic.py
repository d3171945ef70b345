"""Synthetic data sets with a known ground truth, fully determined by (args, seed).

Regression is a linear model with known weights plus Gaussian label noise, so solvers and
optimizers can be checked against the true parameters. Classification is scikit-learn's
`make_classification`, with its layout (informative, redundant and noise features, clusters
per class) derived from the requested number of features and classes.
"""

import math
from pathlib import Path

import torch
from sklearn.datasets import make_classification

from models.catalog.datasets import SyntheticClassificationArgs, SyntheticRegressionArgs
from worker.datasets.base import RawData


def regression_problem(
    args: SyntheticRegressionArgs, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features x ~ N(0, 1), targets y = x @ weight + bias + noise * N(0, 1); returns all four.

    Weights are drawn with variance 1/n_features so that the noise-free targets have about unit
    variance whatever the number of features; `noise` is then a noise-to-signal ratio.
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(args.n_samples, args.n_features, generator=generator)
    weight = torch.randn(args.n_features, args.n_targets, generator=generator)
    weight /= math.sqrt(args.n_features)
    bias = torch.randn(args.n_targets, generator=generator)
    noise = torch.randn(args.n_samples, args.n_targets, generator=generator)
    return x, x @ weight + bias + args.noise * noise, weight, bias


def load_regression(args: SyntheticRegressionArgs, *, seed: int, data_root: Path) -> RawData:
    x, y, _, _ = regression_problem(args, seed)
    source = (
        f"synthetic linear regression ({args.n_samples} samples, {args.n_features} features, "
        f"{args.n_targets} targets, noise std {args.noise}, seed {seed})"
    )
    return RawData(x, y, "regression", args.n_targets, source)


def classification_layout(n_features: int, n_classes: int) -> dict[str, int]:
    """make_classification's feature layout: half the features informative, half of the rest
    redundant (linear combinations), the remainder noise; two clusters per class where the
    informative features leave room (sklearn needs n_classes * clusters <= 2**n_informative).
    """
    needed = math.ceil(math.log2(n_classes))
    if needed > n_features:
        raise ValueError(
            f"synthetic_classification: {n_classes} classes need at least {needed} features "
            f"(n_classes <= 2**n_features), got n_features={n_features}"
        )
    n_informative = min(n_features, max(needed + 1, n_features // 2))
    clusters = 2 if 2 * n_classes <= 2**n_informative else 1
    return {
        "n_informative": n_informative,
        "n_redundant": (n_features - n_informative) // 2,
        "n_clusters_per_class": clusters,
    }


def load_classification(
    args: SyntheticClassificationArgs, *, seed: int, data_root: Path
) -> RawData:
    layout = classification_layout(args.n_features, args.n_classes)
    x, y = make_classification(
        n_samples=args.n_samples,
        n_features=args.n_features,
        n_classes=args.n_classes,
        class_sep=args.class_sep,
        random_state=seed,
        **layout,
    )
    source = (
        f"sklearn make_classification ({args.n_samples} samples, {args.n_features} features, "
        f"{args.n_classes} classes, class_sep {args.class_sep}, "
        f"{layout['n_informative']} informative, seed {seed})"
    )
    return RawData(
        torch.from_numpy(x).float(),
        torch.from_numpy(y).long(),
        "classification",
        args.n_classes,
        source,
    )
