"""The schema half of every catalog: each spec name and the pydantic model of its `args`.

The worker holds the other half (a torch builder per name, in worker/strategies, nets,
datasets). tests/worker/test_catalog_halves.py asserts the two halves have the same names.
"""

from models.catalog.datasets import DATASET_ARGS
from models.catalog.nets import NET_ARGS
from models.catalog.optimizers import OPTIMIZER_ARGS
from models.catalog.schedules import SCHEDULE_ARGS

__all__ = ["DATASET_ARGS", "NET_ARGS", "OPTIMIZER_ARGS", "SCHEDULE_ARGS"]
