"""Where the bank lives: the mesh and its axes, and the bank's rows on the devices or host.

A mesh for the search has a query axis ('data' by default) and a bank axis ('bank'): any
``jax.make_mesh`` mesh, with Auto or Explicit axis types and any axis names, named by the
`data_axis` / `bank_axis` arguments (``MeshAxes``). Other axes must have size 1.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from fpjax import parallel
from fpjax.errors import UserInputError
from fpjax.knn import autotune as autotune_lib


class MeshAxes(NamedTuple):
  """The names of a mesh's query axis (`data`) and bank axis (`bank`)."""
  data: str = parallel.DATA
  bank: str = parallel.BANK


def check_mesh(mesh, data_axis: str = parallel.DATA, bank_axis: str = parallel.BANK) -> MeshAxes:
  """The MeshAxes of `mesh` (a jax.sharding.Mesh), or a UserInputError that says what to pass.

  Accepted: the two named axes exist and differ, every other axis has size 1, and the axis
  types are all Auto or all Explicit (mixed types are refused).
  """
  if not isinstance(mesh, jax.sharding.Mesh):
    raise UserInputError(f"mesh must be a jax.sharding.Mesh (e.g. from jax.make_mesh); got "
                         f"{type(mesh).__name__}")
  names = tuple(mesh.axis_names)
  shape = dict(mesh.shape)
  for what, axis in (("data_axis", data_axis), ("bank_axis", bank_axis)):
    if axis not in names:
      raise UserInputError(f"mesh axes are {list(names)}: pass data_axis= and bank_axis= to name "
                           f"the query and bank axes ({what}={axis!r} is not one of them)")
  if data_axis == bank_axis:
    raise UserInputError(f"data_axis and bank_axis must be two different mesh axes; both are "
                         f"{data_axis!r}")
  extra = [a for a in names if a not in (data_axis, bank_axis) and shape[a] != 1]
  if extra:
    raise UserInputError(f"mesh axes {extra} are not data_axis={data_axis!r} or "
                         f"bank_axis={bank_axis!r} and have size > 1; the search uses two axes")
  types = set(getattr(mesh, "axis_types", ()) or ())
  if len(types) > 1 or (types and types.pop() not in (AxisType.Auto, AxisType.Explicit)):
    raise UserInputError(f"mesh axis types {list(mesh.axis_types)}: use all Auto or all Explicit")
  return MeshAxes(data_axis, bank_axis)


def is_explicit(mesh) -> bool:
  """Whether the mesh's axes are Explicit (arrays then carry their sharding in their type)."""
  return AxisType.Explicit in tuple(getattr(mesh, "axis_types", ()) or ())


def auto_mesh(mesh) -> jax.sharding.Mesh:
  """The same devices and axis names with Auto axis types: the eager Manifold places and indexes
  arrays on the host side, which Explicit sharding types refuse for gathers and updates."""
  if not is_explicit(mesh):
    return mesh
  return jax.sharding.Mesh(mesh.devices, mesh.axis_names,
                           axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def round_up(x: int, m: int) -> int:
  """The smallest multiple of m that is >= x."""
  return -(-x // m) * m


def sample_rows(n: int, max_rows: int, seed: int) -> np.ndarray:
  """Sorted row numbers of a seeded sample of at most `max_rows` of n rows (all when n fits)."""
  if n <= max_rows:
    return np.arange(n)
  return np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))


class BankPlacement:
  """Where the bank's rows live while the kernel runs.

  Resident: one padded array sharded over the bank axis (each device holds its slice only, so
  a bank that fits the devices together never has to fit one device whole). Streamed: a slice
  over `device_bank_bytes` stays in host RAM and goes to the devices one chunk at a time; every
  chunk has the same shape, so one compiled kernel serves them all. The reduced search's rows
  (x̂, ‖x − μ‖²) follow the bank: on the devices or on the host.
  """

  def __init__(self, flat: np.ndarray, mesh, tile: int, device_bank_bytes: int | None,
               axes: MeshAxes = MeshAxes()):
    n, dim = flat.shape
    self.mesh, self.axes = mesh, axes
    self.size = n
    nb = mesh.shape[axes.bank]
    per_shard = -(-n // nb)
    row_bytes = 4 * dim
    if device_bank_bytes is not None and per_shard * row_bytes > device_bank_bytes:
      chunk_per_shard = max(8, device_bank_bytes // row_bytes)
      self.tile = min(tile, round_up(chunk_per_shard, 8))
      self.chunk_rows = nb * (chunk_per_shard // self.tile * self.tile or self.tile)
      self.host_bank, self.bank = flat, None
    else:
      self.tile = min(tile, round_up(per_shard, 8))
      unit = autotune_lib.slice_unit(mesh.devices.flat[0], per_shard, self.tile)
      self.chunk_rows = nb * round_up(per_shard, unit)
      self.host_bank, self.bank = None, self.put(flat, 0)
    self.search_rows = self.host_search_rows = None  # set by set_search_rows

  @property
  def streamed(self) -> bool:
    """Whether the bank stays in host RAM and goes to the devices chunk by chunk."""
    return self.bank is None

  @property
  def slice_rows(self) -> int:
    """Rows of one device's slice in each kernel call."""
    return self.chunk_rows // self.mesh.shape[self.axes.bank]

  def put(self, rows, start, fill=0.0):
    """Pads rows [start, start + chunk_rows) of a host array and shards them over the bank
    axis."""
    chunk = rows[start:start + self.chunk_rows]
    pad = self.chunk_rows - chunk.shape[0]
    if pad:
      chunk = np.concatenate([chunk, np.full((pad,) + chunk.shape[1:], fill, chunk.dtype)])
    spec = P(self.axes.bank, *([None] * (chunk.ndim - 1)))
    return jax.device_put(chunk, NamedSharding(self.mesh, spec))

  def bank_chunks(self):
    """(bank chunk on the devices, its first global row, its real rows), in order."""
    if not self.streamed:
      yield self.bank, 0, self.size
      return
    for start in range(0, self.size, self.chunk_rows):
      yield self.put(self.host_bank, start), start, min(self.chunk_rows, self.size - start)

  def set_search_rows(self, chunks):
    """Keeps the reduced search's (x̂, ‖x − μ‖²): one device chunk, or host copies of every
    chunk without their padding rows (chunks are re-padded, ‖x − μ‖² = inf, when sent)."""
    if not self.streamed:
      (self.search_rows,) = chunks
    else:
      self.host_search_rows = tuple(np.concatenate(a) for a in zip(*chunks))

  def chunks(self, reduced: bool):
    """(bank, search rows or None, first global row, real rows) for each kernel call."""
    if not self.streamed:
      yield self.bank, self.search_rows if reduced else None, 0, self.size
      return
    for bank, start, n_valid in self.bank_chunks():
      rows = None
      if reduced:
        hat, norm2 = self.host_search_rows
        rows = (self.put(hat, start), self.put(norm2, start, np.inf))
      yield bank, rows, start, n_valid

  def rows(self, index) -> np.ndarray:
    """Host copies of bank rows (any integer index array)."""
    if self.streamed:
      return self.host_bank[index]
    return parallel.to_host(self.bank[index])
