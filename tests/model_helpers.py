"""Shared by the neural-model tests: real daily series of a few products, one torch thread."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mqstream.models.dataset import demand_series, load_transactions
from mqstream.models.pageviews import simulate_views


@pytest.fixture(scope="module")
def torch_one_thread():
    """Batches of a few items: one thread is faster than two and immune to a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def real_series(items: np.ndarray, start: int, days: int):
    """(series, simulated views, first priced column, first price) of ``items`` over ``days``."""
    s = demand_series(load_transactions(), items=items, start_day=start, end_day=start + days - 1)
    first = np.argmax(s.price > 0, axis=1)
    item_price = s.price[np.arange(len(items)), first]
    return s, simulate_views(s.items, s.units, s.start_day), first, item_price
