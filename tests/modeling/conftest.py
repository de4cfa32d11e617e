"""Shared fixtures of the modeling tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """Run each test on one intra-op thread, then restore the setting.

    The inputs are tiny, so threads buy nothing, while on a busy 2-core machine OpenMP threads
    competing with other processes make these tests several times slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
