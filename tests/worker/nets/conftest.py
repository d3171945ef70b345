"""Net tests run many tiny steps: one intra-op thread is faster than contending for two."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # type: ignore[no-untyped-def]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
