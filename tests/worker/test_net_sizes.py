"""The API's parameter counts (models/catalog/sizes.py, no torch) against the nets the worker
builds, and its data shapes against the loaded data."""

from pathlib import Path

import pytest

from models.catalog import NET_ARGS
from models.catalog.sizes import DATA_SHAPES, NET_SIZES, data_shape
from models.spec import JobSpec
from worker.datasets import DATASETS
from worker.nets import NETS

IMAGE, SEQUENCE, FLAT = (3, 12, 10), (9, 5), (1, 8, 8)
CASES = [
    ("linear", {}, FLAT),
    ("mlp", {}, FLAT),
    ("mlp", {"hidden": [7, 5], "norm": "batch", "dropout": 0.1}, FLAT),
    ("mlp", {"hidden": [6], "norm": "layer", "orthogonal": "cayley"}, (20,)),
    ("mlp", {"hidden": [6, 6], "spectral_norm": True}, (20,)),
    ("seed_cnn", {}, (1, 28, 28)),
    ("seed_cnn", {"filters": 5, "kernel_size": 5}, IMAGE),
    ("cnn", {}, IMAGE),
    ("cnn", {"channels": [4, 6, 8], "norm": "layer", "kernel_size": 5}, IMAGE),
    ("cnn", {"channels": [4], "norm": "none", "spectral_norm": True}, (1, 3, 3)),
    ("resnet", {}, IMAGE),
    ("resnet", {"width": 4, "blocks": [2, 1, 2, 1], "norm": "layer"}, (1, 3, 3)),
    ("resnet", {"width": 3, "blocks": [1, 2], "norm": "none"}, IMAGE),
    ("rnn", {}, SEQUENCE),
    ("rnn", {"cell": "gru", "hidden": 7, "layers": 3}, SEQUENCE),
    ("rnn", {"cell": "rnn", "hidden": 6, "layers": 2, "nonlinearity": "relu"}, SEQUENCE),
    ("rnn", {"cell": "rnn", "hidden": 6, "layers": 2, "orthogonal": "qr"}, SEQUENCE),
    ("transformer", {}, SEQUENCE),
    ("transformer", {"d_model": 12, "heads": 3, "layers": 3, "ff_mult": 2}, SEQUENCE),
    ("transformer", {"d_model": 8, "heads": 2, "layers": 1, "norm": "none"}, SEQUENCE),
]


@pytest.mark.parametrize(("name", "args", "shape"), CASES, ids=lambda v: str(v))
def test_estimate_equals_the_built_nets_parameters(name: str, args: dict, shape: tuple) -> None:
    spec = JobSpec.model_validate(
        {
            "model": {"name": name, "args": args},
            "data": {"name": "digits"},
            "optimizer": {"name": "sgd"},
        }
    )
    net = NETS[name](spec.model.args, shape, 3)
    built = sum(p.numel() for p in net.parameters())
    assert NET_SIZES[name](spec.model.args, shape, 3) == built


def test_every_net_is_checked_against_torch() -> None:
    assert {name for name, _, _ in CASES} == set(NET_ARGS)


@pytest.mark.parametrize(
    "data",
    [
        {"name": "digits"},
        {
            "name": "synthetic_regression",
            "args": {"n_samples": 30, "n_features": 4, "n_targets": 2},
        },
        {"name": "synthetic_classification", "args": {"n_samples": 30, "n_classes": 3}},
        {"name": "points", "args": {"x": [[1, 2], [2, 3], [4, 5]], "y": [[3], [5], [6]]}},
        {"name": "adding_problem", "args": {"n_samples": 10, "length": 7}},
        {"name": "associative_recall", "args": {"n_samples": 10, "pairs": 3, "n_keys": 5}},
    ],
    ids=lambda d: d["name"],
)
def test_data_shapes_match_the_loaders(data: dict, tmp_path: Path) -> None:
    spec = JobSpec.model_validate(
        {"model": {"name": "linear"}, "data": data, "optimizer": {"name": "sgd"}}
    )
    raw = DATASETS[data["name"]](spec.data.args, seed=0, data_root=tmp_path)
    shape = data_shape(spec.data)
    assert (len(raw.x), tuple(raw.x.shape[1:]), raw.num_outputs) == (
        shape.examples,
        shape.input_shape,
        shape.num_outputs,
    )


def test_every_data_set_is_checked_against_its_loader() -> None:
    # mnist is left out above (loading it takes seconds): (1, 28, 28), 10 classes, and at most
    # its 70,000 images or `subset`, which is an upper bound the limits may use.
    assert set(DATA_SHAPES) == set(DATASETS)
