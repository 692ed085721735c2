"""What the tables read of a GM dataset: its artifact stores (one per space, every estimator
key in it) as lazy rows (`Features`), computed by `fpjax.artifact_job.compute_artifacts` first
when missing. Nothing here projects images itself.
"""
from __future__ import annotations

import dataclasses
import os
import time

from absl import logging
import numpy as np

from fpjax import artifact_job
from fpjax import estimators as est_lib
from fpjax import store as store_lib
from fpjax.errors import UserInputError
from fpjax.estimators import CONTROL  # the control estimator: the classifier on φ(x) itself
from fpjax.evals.encoders import safe_name
from fpjax.evals.gm_data import GMData, SourceImages
from fpjax.store.rows import RowSubset

# Features.in_memory_bytes of `open_features`: the demo's dataset (3,000 images, 11 arrays of
# 28x28 RGB artifacts, ~100 MB in all) is held whole; a dataset of ~100,000 images streams.
IN_MEMORY_BYTES = 1 << 30


def estimator_keys(names) -> list:
  """The store's estimator keys for estimator names: every candidate of each name's grid, in
  the order given, then the control 'input' (always: every table has its control rows)."""
  return [e.key for e in est_lib.resolve([n for n in names if n != CONTROL] + [CONTROL])]


def store_dir(workdir: str, gm: GMData, space: str, encoder: str | None = None,
              names=('nn',)) -> str:
  """WORKDIR/artifacts/<gm name>/<space>/<names> (an encoder space: the encoder's folder name;
  names: the estimators joined by '+', the control last, e.g. 'nn+knn_mean+input'): another
  set of estimators is another store, never a refused one."""
  names = [n for n in names if n != CONTROL] + [CONTROL]
  return os.path.join(workdir, 'artifacts', safe_name(gm.name),
                      space if encoder is None else os.path.basename(os.path.normpath(encoder)),
                      '+'.join(names))


def artifact_store(gm: GMData, space: str, workdir: str, *, encoder: str | None = None,
                   names=('nn',), artifact_kwargs: dict | None = None):
  """The complete artifact store of (gm, gm.real, space) holding every key of
  `estimator_keys(names)`: `artifact_job.compute_artifacts` runs first (it returns at once for
  a complete store of the same configuration, resumes a partial one and refuses one of another
  configuration)."""
  d = store_dir(workdir, gm, space, encoder, names)
  kwargs = dict(artifact_kwargs or {})
  if encoder is not None:
    kwargs['encoder'] = encoder
  t0 = time.time()
  fresh = not store_lib.is_complete(d)
  artifact_job.compute_artifacts(gm.real, gm.path, d, space=space,
                                 estimators=estimator_keys(names), **kwargs)
  store = store_lib.ArtifactStore.open(d)
  logging.info('artifacts of %s in %s: %s store %s (%d rows, estimators %s) in %.1fs', gm.name,
               space, 'computed' if fresh else 'reused', d, store.num_rows,
               ','.join(store.estimators), time.time() - t0)
  return store


@dataclasses.dataclass
class Features:
  """What the tables read for one GM dataset: its rows (the stores' rows, one per image that
  was read; bad files skipped by compute_artifacts are absent everywhere), their labels, the
  artifact stores per space (each holding every estimator key), the estimator names asked (the
  control 'input' last) and the images of the same rows for the baselines."""
  gm: GMData
  labels: np.ndarray               # int32 [N]
  stores: dict                     # space -> ArtifactStore (rows aligned)
  images: object                   # SourceImages of the same rows
  estimators: dict = dataclasses.field(default_factory=dict)   # space -> names, control last
  # Arrays (one estimator key's artifacts, the decoded images) are read whole into RAM the
  # first time they are asked for while their total stays within this many bytes (0: never):
  # every probe fit, selection fit and baseline epoch then reads memory instead of the store
  # or the PNG decoder. Larger datasets stay streamed.
  in_memory_bytes: int = 0
  _memory: dict = dataclasses.field(default_factory=dict, repr=False)

  @property
  def num_rows(self) -> int:
    return len(self.labels)

  def names(self, space: str) -> list:
    """The estimator names of `space`'s store (the control last)."""
    return list(self.estimators.get(space, ('nn', CONTROL)))

  def _held(self, what, base):
    """`base` (an array-like) as an in-memory array when it fits the budget, else itself."""
    if what in self._memory:
      return self._memory[what]
    size = len(base) * int(np.prod(base.shape[1:])) * np.dtype(base.dtype).itemsize
    used = sum(a.nbytes for a in self._memory.values())
    if used + size > self.in_memory_bytes:
      return base
    self._memory[what] = np.asarray(base[0:len(base)])
    return self._memory[what]

  def artifacts(self, space: str, key: str) -> RowSubset:
    """The artifacts of estimator `key` in `space` (all rows; lazy, or held in RAM within
    `in_memory_bytes`)."""
    return RowSubset(self._held(('artifacts', space, key), self.stores[space].artifacts(key)))

  def image_rows(self) -> RowSubset:
    """The generated images of the rows, uint8 (decoded on demand, or held in RAM within
    `in_memory_bytes`): the baselines' input."""
    return RowSubset(self._held(('images',), self.images))

  def keys(self, name: str) -> list:
    """The candidate keys of estimator `name` (its grid; the control: ['input'])."""
    return [e.key for e in est_lib.grid(name)]


def open_features(gm: GMData, encoders: dict, workdir: str, *, estimators=('nn',),
                  artifact_kwargs: dict | None = None,
                  in_memory_bytes: int = IN_MEMORY_BYTES) -> Features:
  """Computes (or reuses) one store per space holding every candidate of `estimators` (names,
  or {space: names}; a space left out: nn) and the control, and checks the stores hold the same
  rows."""
  per_space = estimators if isinstance(estimators, dict) else {s: estimators for s in encoders}
  names = {s: tuple(n for n in dict.fromkeys(per_space.get(s, ('nn',))) if n != CONTROL)
              + (CONTROL,) for s in encoders}
  stores = {s: artifact_store(gm, s, workdir, encoder=e, names=names[s],
                              artifact_kwargs=artifact_kwargs)
            for s, e in encoders.items()}
  if not stores:
    return Features(gm, gm.source.labels.astype(np.int32), {}, SourceImages(gm.source), names,
                    in_memory_bytes)
  _check_same_rows(gm, stores)
  first = next(iter(stores.values()))
  return Features(gm, np.asarray(first.labels, np.int32), stores,
                  SourceImages(gm.source, first.files), names, in_memory_bytes)


def _check_same_rows(gm: GMData, stores: dict) -> None:
  """Every space's store holds the models and images of the first one, computed on gm."""
  first_space, first = next(iter(stores.items()))
  for s, st in stores.items():
    if list(st.class_names) != gm.class_names:
      raise UserInputError(f'artifact store of {gm.name} in {s}: models {st.class_names} '
                           f'differ from {gm.class_names}')
    if st.num_rows != first.num_rows or st.files != first.files:
      raise UserInputError(f'artifact stores of {gm.name} in {first_space} and {s} hold '
                           f'different images ({first.num_rows} vs {st.num_rows} rows); '
                           'remove the stale one')
  if os.path.realpath(first.gm_root) != os.path.realpath(gm.source.root):
    raise UserInputError(f'artifact store of {gm.name} in {first_space} was computed on '
                         f'{first.gm_root}, not {gm.source.root}; use another --workdir')
