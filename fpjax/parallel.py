"""Device meshes, multi-host start-up and host -> global array helpers.

One mesh helper for the whole package: axis 'data' splits queries (and training
batches), axis 'bank' splits the rows of the real bank. The search also takes users' own
``jax.make_mesh`` meshes (Explicit or Auto axes, other names: fpjax.knn.placement.check_mesh).
"""
from __future__ import annotations

import jax
from jax.experimental import multihost_utils
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

DATA, BANK = "data", "bank"


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Starts JAX's distributed runtime when running on several hosts.

  With no arguments JAX auto-detects the cluster (TPU pods, SLURM, Open MPI, ...);
  on a single host with nothing to detect this is a no-op.
  """
  if jax.distributed.is_initialized():
    return
  if coordinator_address is None and num_processes is None and process_id is None:
    try:
      jax.distributed.initialize()
    except (ValueError, RuntimeError):
      pass  # nothing to auto-detect: a single-process run
    return
  if coordinator_address is None or num_processes is None or process_id is None:
    raise ValueError("multi-host needs all of coordinator_address, num_processes and process_id "
                     f"(got {coordinator_address!r}, {num_processes!r}, {process_id!r})")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


def make_mesh(data: int | None = None, bank: int | None = None,
              devices=None) -> jax.sharding.Mesh:
  """A ('data', 'bank') mesh over all devices (or the given ones).

  By default every device holds a slice of the bank (data = 1): memory per device
  falls with the number of devices and queries need no all-to-all.
  """
  n = len(devices) if devices is not None else jax.device_count()
  if data is None and bank is None:
    data = 1
  if data is None:
    data = n // bank
  if bank is None:
    bank = n // data
  if data * bank != n:
    raise ValueError(f"mesh data={data} x bank={bank} does not use the {n} devices")
  # Auto axes: shardings are placed by us (device_put, shard_map specs) and XLA
  # propagates the rest, which keeps host-side indexing of results simple.
  return jax.make_mesh((data, bank), (DATA, BANK),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2, devices=devices)


def data_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Batch-leading arrays split over every device of the mesh (both axes)."""
  return NamedSharding(mesh, P(tuple(mesh.axis_names)))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local: np.ndarray, mesh: jax.sharding.Mesh, spec: P | None = None) -> jax.Array:
  """Assembles a global array from each process's slice of the batch."""
  sharding = NamedSharding(mesh, spec if spec is not None else P(tuple(mesh.axis_names)))
  return jax.make_array_from_process_local_data(sharding, np.asarray(local))


def to_host(x) -> np.ndarray:
  """A numpy copy of x on every process, also when x spans several hosts."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def is_chief() -> bool:
  """Process 0 writes files and metrics; the others only compute."""
  return jax.process_index() == 0


def gather_processes(x) -> np.ndarray:
  """[P, ...]: every process's small host array x, in process order (a collective: every
  process calls it; local in a single process)."""
  x = np.asarray(x)
  if jax.process_count() == 1:
    return x[None]
  return np.asarray(multihost_utils.process_allgather(x))


def barrier(name: str) -> None:
  """Every JAX process waits here until all have arrived (a no-op in a single process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
