"""The API's half of each catalog (models/catalog) and the worker's half name the same entries."""

import pytest

from models.catalog import DATASET_ARGS, NET_ARGS, OPTIMIZER_ARGS, SCHEDULE_ARGS
from worker.datasets import DATASETS
from worker.nets import NETS
from worker.strategies.optimizers import OPTIMIZERS
from worker.strategies.schedules import SCHEDULES


@pytest.mark.parametrize(
    ("schema", "implementation"),
    [
        (OPTIMIZER_ARGS, OPTIMIZERS),
        (SCHEDULE_ARGS, SCHEDULES),
        (NET_ARGS, NETS),
        (DATASET_ARGS, DATASETS),
    ],
    ids=["optimizers", "schedules", "nets", "datasets"],
)
def test_halves_name_the_same_entries(schema: dict, implementation: dict) -> None:
    assert set(schema) == set(implementation)
