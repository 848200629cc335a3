"""Shared fixtures: tiny models and tokenizer built in code (no Hub access)."""

import pytest
import torch

from tiny_models import tiny_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models train much faster on one thread than on two contended ones (use with `pytest.mark.usefixtures`
    or an autouse fixture of the module)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
