"""The little the job's processes exchange: small host arrays gathered in process order, and
barriers. In a single process both are local (no collective runs)."""
from __future__ import annotations

import jax
from jax.experimental import multihost_utils
import numpy as np


def gather(x) -> np.ndarray:
  """[P, ...]: every process's x, in process order (a collective: all processes call it)."""
  x = np.asarray(x)
  if jax.process_count() == 1:
    return x[None]
  return np.asarray(multihost_utils.process_allgather(x))


def barrier(name: str) -> None:
  """Every JAX process waits here until all have arrived (a no-op in a single process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
