"""Input pipeline: per-process shard -> batch -> prefetch -> global device arrays (grain).

Every process reads a disjoint shard of a random-access source in whole blocks: global batch b
is elements [b·B, (b+1)·B) of the (optionally shuffled) epoch order, B = batch_size, and process
p takes the contiguous block [b·B + p·L, b·B + (p+1)·L), L = B / process_count. Contiguous
blocks let each process write its own rows of an output array (the artifact store's chunks are
these blocks), and with the usual process-major device order the global array's rows are the
epoch order. grain batches and prefetches with its reader threads; `__iter__` assembles a
global `jax.Array` per field with `jax.make_array_from_process_local_data`, sharded over the
mesh axis 'data'; `local_batches()` yields this process's blocks as numpy arrays instead.

With `drop_remainder=False` the last batch is padded (repeating element 0) and a boolean 'valid'
field marks real elements, so every process yields the same number of equally shaped batches
(required for global arrays) and nothing is dropped. The position is a small JSON-serialisable
dict (`pipeline.get_state()` / `pipeline.set_state(state)`) counting batches *delivered to the
caller*, so device-side prefetch never makes a restored run skip data.

Bad files arrive as data, not exceptions: a source that can meet one (ImageFolderSource) yields
an 'error' field (the reason, '' when the element is fine) and a 'row' (its index), so nothing
raises inside grain's threads. `local_batches()` passes 'error' on for the caller to skip or
stop (fpjax.data.BadInputs); `__iter__` raises a BadInputError naming the file.
"""
from __future__ import annotations

import collections
import math
from typing import Any, Iterator

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from fpjax.errors import BadInputError


def _data_sharding(mesh) -> NamedSharding:
  if mesh is None:
    mesh = jax.make_mesh((jax.device_count(),), ('data',))
  if 'data' not in mesh.axis_names:
    raise ValueError(f"mesh needs an axis named 'data', has {mesh.axis_names}.")
  return NamedSharding(mesh, P('data'))


class _Indexer:
  """Maps a per-process element position to (source index, valid) for every epoch."""

  def __init__(self, n, process_index, process_count, local_batch, batches_per_epoch,
               shuffle_seed):
    self.n, self.pi, self.pc, self.lb = n, process_index, process_count, local_batch
    self.per_epoch = batches_per_epoch * local_batch
    self.seed = shuffle_seed
    self._perms = {}

  def order(self, epoch: int) -> np.ndarray:
    if self.seed is None:
      return np.arange(self.n)
    if epoch not in self._perms:  # one permutation per epoch, same on every process.
      self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
    return self._perms[epoch]

  def __call__(self, position: int) -> tuple[int, bool]:
    epoch, i = divmod(position, self.per_epoch)
    b, t = divmod(i, self.lb)
    j = (b * self.pc + self.pi) * self.lb + t  # this process's block of global batch b
    if j >= self.n:
      return 0, False
    return int(self.order(epoch)[j]), True


class Pipeline:
  """Iterable of batches {field: global jax.Array}; see module docstring."""

  def __init__(self, source, *, batch_size: int, mesh=None, shuffle_seed: int | None = None,
               num_epochs: int = 1, drop_remainder: bool = True, prefetch: int = 2,
               num_threads: int = 4, process_index: int | None = None,
               process_count: int | None = None):
    self.source = source
    self.process_index = jax.process_index() if process_index is None else process_index
    self.process_count = jax.process_count() if process_count is None else process_count
    self.sharding = _data_sharding(mesh)
    if batch_size % self.process_count:
      raise ValueError(f'batch_size {batch_size} is not divisible by process_count '
                       f'{self.process_count}.')
    self.batch_size = batch_size
    self.local_batch_size = batch_size // self.process_count
    n = len(source)
    if n == 0:
      raise ValueError('source is empty.')
    if drop_remainder:
      self.batches_per_epoch = n // batch_size  # only full global batches of real elements
    else:
      self.batches_per_epoch = math.ceil(n / batch_size)
    if self.batches_per_epoch == 0:
      raise ValueError(f'{n} elements make no full batch of {batch_size}; '
                       'use drop_remainder=False.')
    self.num_epochs = num_epochs
    self.num_batches = self.batches_per_epoch * num_epochs
    self.drop_remainder = drop_remainder
    self.shuffle_seed = shuffle_seed
    self.prefetch = prefetch
    self.num_threads = num_threads
    self._indexer = _Indexer(n, self.process_index, self.process_count, self.local_batch_size,
                             self.batches_per_epoch, shuffle_seed)
    self._next_batch = 0

  # -- state
  def get_state(self) -> dict[str, Any]:
    return {'next_batch': self._next_batch, 'num_batches': self.num_batches,
            'batch_size': self.batch_size, 'shuffle_seed': self.shuffle_seed,
            'num_elements': len(self.source), 'process_count': self.process_count}

  def set_state(self, state: dict[str, Any]) -> None:
    mine = self.get_state()
    for key in ('num_batches', 'batch_size', 'shuffle_seed', 'num_elements', 'process_count'):
      if state.get(key) != mine[key]:
        raise ValueError(f'pipeline state has {key}={state.get(key)!r}, this pipeline has '
                         f'{mine[key]!r}; cannot resume.')
    nb = int(state['next_batch'])
    if not 0 <= nb <= self.num_batches:
      raise ValueError(f'pipeline state next_batch={nb} outside [0, {self.num_batches}].')
    self._next_batch = nb

  def __len__(self) -> int:
    return self.num_batches

  # -- iteration
  def _element(self, position: int) -> dict[str, Any]:
    idx, valid = self._indexer(position)
    ex = dict(self.source[idx])
    ex['valid'] = np.bool_(valid)
    return ex

  def _local_batches(self, start: int):
    lb = self.local_batch_size
    ds = grain.MapDataset.range(self.num_batches * lb).map(self._element).batch(lb)
    ds = ds[start:]
    options = grain.ReadOptions(num_threads=self.num_threads,
                                prefetch_buffer_size=max(1, self.prefetch * 2))
    return iter(ds.to_iter_dataset(options))

  def _to_global(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    errors = local.pop('error', None)
    if errors is not None and (errors != '').any():
      t = int(np.flatnonzero(errors != '')[0])
      raise BadInputError(self.path_of(int(local['row'][t])), str(errors[t]))
    if self.drop_remainder:
      local.pop('valid')
    return {k: jax.make_array_from_process_local_data(self.sharding, np.asarray(v))
            for k, v in local.items()}

  def path_of(self, index: int) -> str:
    """The file behind source element `index` (for messages), or a description of it."""
    files = getattr(self.source, 'files', None)
    return files[index] if files is not None else f'{type(self.source).__name__}[{index}]'

  def local_batches(self) -> Iterator[dict[str, np.ndarray]]:
    """This process's blocks as numpy arrays (with 'valid' and, from a source that can meet bad
    files, 'error'); no device transfer, no collective. Counts delivered batches like
    `__iter__`."""
    for batch in self._local_batches(self._next_batch):
      self._next_batch += 1
      yield batch

  def __iter__(self) -> Iterator[dict[str, jax.Array]]:
    local = self._local_batches(self._next_batch)
    queue = collections.deque()
    # Device prefetch: transfers are asynchronous, keep `prefetch` batches in flight.
    for batch in local:
      queue.append(self._to_global(batch))
      if len(queue) > self.prefetch:
        self._next_batch += 1
        yield queue.popleft()
    while queue:
      self._next_batch += 1
      yield queue.popleft()


def make_pipeline(source, *, batch_size: int, **kwargs) -> Pipeline:
  """Builds a `Pipeline` (see its arguments) over any source with len() and [i]."""
  return Pipeline(source, batch_size=batch_size, **kwargs)
