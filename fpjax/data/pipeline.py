"""Input pipeline: per-process shard -> batch -> prefetch -> global device arrays (grain).

Every process reads a disjoint, strided shard of a random-access source (element j of the
(optionally shuffled) epoch order goes to process j % process_count), batches it with grain,
prefetches with grain's reader threads and assembles a global `jax.Array` per field with
`jax.make_array_from_process_local_data`, sharded over the mesh axis 'data'.

With `drop_remainder=False` the last batch is padded (repeating element 0) and a boolean 'valid'
field marks real elements, so every process yields the same number of equally shaped batches
(required for global arrays) and nothing is dropped. The position is a small JSON-serialisable
dict (`pipeline.get_state()` / `pipeline.set_state(state)`) counting batches *delivered to the
caller*, so device-side prefetch never makes a restored run skip data.
"""
from __future__ import annotations

import collections
import math
from typing import Any, Iterator

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P


def _data_sharding(mesh) -> NamedSharding:
  if mesh is None:
    mesh = jax.make_mesh((jax.device_count(),), ('data',))
  if 'data' not in mesh.axis_names:
    raise ValueError(f"mesh needs an axis named 'data', has {mesh.axis_names}.")
  return NamedSharding(mesh, P('data'))


class _Indexer:
  """Maps a per-process element position to (source index, valid) for every epoch."""

  def __init__(self, n, process_index, process_count, per_epoch, shuffle_seed):
    self.n, self.pi, self.pc = n, process_index, process_count
    self.per_epoch, self.seed = per_epoch, shuffle_seed
    self._perms = {}

  def order(self, epoch: int) -> np.ndarray:
    if self.seed is None:
      return np.arange(self.n)
    if epoch not in self._perms:  # one permutation per epoch, same on every process.
      self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
    return self._perms[epoch]

  def __call__(self, position: int) -> tuple[int, bool]:
    epoch, i = divmod(position, self.per_epoch)
    j = self.pi + i * self.pc
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
    per_process = math.ceil(n / self.process_count)
    if drop_remainder:
      # Only full global batches of real elements: the smallest shard sets the count.
      self.batches_per_epoch = (n // self.process_count) // self.local_batch_size
    else:
      self.batches_per_epoch = math.ceil(per_process / self.local_batch_size)
    if self.batches_per_epoch == 0:
      raise ValueError(f'{n} elements make no full batch of {batch_size}; '
                       'use drop_remainder=False.')
    self.num_epochs = num_epochs
    self.num_batches = self.batches_per_epoch * num_epochs
    self.drop_remainder = drop_remainder
    self.shuffle_seed = shuffle_seed
    self.prefetch = prefetch
    self.num_threads = num_threads
    self._indexer = _Indexer(n, self.process_index, self.process_count,
                             self.batches_per_epoch * self.local_batch_size, shuffle_seed)
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
    if self.drop_remainder:
      local.pop('valid')
    return {k: jax.make_array_from_process_local_data(self.sharding, np.asarray(v))
            for k, v in local.items()}

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
