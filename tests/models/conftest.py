"""One torch thread per model test: on a shared 2-core machine a second OpenMP thread mostly waits for a
busy core (a small S4D/SGConv forward took 0.30 s with 2 threads and 0.010 s with one, load average 11)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
