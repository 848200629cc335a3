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
