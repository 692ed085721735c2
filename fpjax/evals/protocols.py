"""The paper's evaluation protocols (Tables 1-3) and the open-set / few-shot extension.

Every function here computes and returns plain rows (`report.make_row`); writing files is
`report.py`'s job. ManiFPT features are never computed here: they are read from the artifact
stores that `fpjax.artifact_job.compute_artifacts` writes (`artifact_store` runs it first when
a store is missing), so the tables stream over the same artifacts as the binary of that name and
never hold all images or all artifacts in RAM. Features reach the classifiers as lazy row views
(`RowSubset`), read in slices. One store per space holds one artifact array per estimator key:
every candidate (`fpjax.estimators.grid`) of every estimator asked, and the control 'input'
(φ(x) itself), from one k-NN search per batch.

Splits   `make_splits`: split i (of `num_splits` >= 1) has the seed split_seed + i; it draws the
         70/30 train/validation mask per model (`metrics.split_per_class`, the same mask for
         every method) and a 75/25 inner split of the training part, and seeds every classifier
         fit on that split. Results are mean ± std over the splits.
Selection `select_probe`, per space, estimator and split, reads only that split's training part:
         the linear probe is fit on the inner-train rows with early stopping on the inner-
         validation rows (the epoch of the lowest inner-validation loss, at most
         `selection['max_epochs']`, stopping after `selection['patience']` epochs without
         improvement) and scored by its inner-validation accuracy at that epoch; coordinate-wise:
         the estimator key among `estimators.grid(name)` (at the first l2), then the l2 among
         `selection['l2']` (ties: the earlier, default candidate). The reported fit uses the
         chosen key, l2 and epoch count on the whole training part, with no early stopping (the
         reported validation rows are never read before the prediction). The attributor uses
         the key the probe chose.
Table 1  per space × estimator (and the input control) × classifier, and every baseline; the
         probe and the attributor on the chosen key, per split; FDR is trace(S_B)/trace(S_W) of
         split 0's validation rows (its chosen key), from per-model moments streamed over the
         rows (artifacts for ManiFPT, `.features()` of split 0's fit for baselines).
Diff     `diff_rows`: paired bootstrap 95 % intervals (`metrics.paired_bootstrap`) of the best
         ManiFPT row minus the best baseline (best = highest reported mean accuracy of Table 1),
         of the best estimator minus the runner-up (overall, and per space and classifier),
         and of each estimator row minus its input control (same space, same classifier).
Table 2  cross-dataset: train on all images of one zoo, test on all images of the same recipes
         trained on another real dataset; each side's artifacts are measured against its own
         real manifold, in the same embedding (SL/SSL encoders are shared by both sides). No
         selection (there is no inner split of the other dataset): each estimator's default
         candidate, the probe's first l2 candidate, its epochs by the same early stopping on an
         inner split of the training zoo; one fit per split's seed.
Table 3  per space and estimator (the key split 0's selection chose), on a stratified sample of
         at most `max_rows` rows: artifacts are z-scored per coordinate, reduced by PCA to
         `pca_dim` dimensions, and, for each design knob (the zoo's tags), clustered by k-means
         with k = number of distinct values of the knob among the models it applies to (models
         tagged 'n/a' are left out for that knob); NMI between the clusters and the knob values.
Open set leave-one-model-out AUROC and few-shot enrolment accuracy of nearest-prototype
         attribution (`fpjax.attribution.openset`) per space and estimator (split 0's key) on a
         stratified sample of at most `max_per_model` rows per model; enrolment = the sample's
         split-0 train rows.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import shutil
import time

from absl import logging
import numpy as np

from fpjax import progress
from fpjax.errors import UserInputError
from fpjax.data.bad_inputs import BadInputs
from fpjax import fileio
from fpjax import store as store_lib
from fpjax import spaces as spaces_lib
from fpjax.evals import metrics
from fpjax.report import is_baseline, is_control, make_row, row_label
from fpjax.estimators import CONTROL  # the control estimator: the classifier on φ(x) itself
from fpjax.models.training import iter_slices

ENCODER_SPACES = spaces_lib.ENCODER_SPACES
MANIFPT_SPACES = spaces_lib.SPACE_NAMES
LABELLED_SPACES = ('sl',)          # its encoder is trained on the real labels
CLASSIFIERS = ('probe', 'attributor')
SLICE_ROWS = 4096                  # rows per read when streaming over a store
BEST = 'best'                      # attributor rows on the estimator the probe chose per split
# The inner-validation selection of the linear probe: l2 candidates (the first is the default),
# early stopping's epoch budget and patience, and `inner_fraction`, the inner-validation share
# of the training part; `cfg['selection']` overrides them.
SELECTION = dict(l2=(1e-4, 1e-2), max_epochs=100, patience=10, inner_fraction=0.25)


# ----------------------------------------------------------------------------- lazy rows

class RowSubset:
  """Rows `rows` (int indices into `base`) of an array-like `base`, read on demand.

  `base` needs len(), .shape, .dtype and [sorted int array] / [a:b] -> np.ndarray (an
  `ArtifactStore.artifact`, `SourceImages`, an ndarray). A view supports what the classifiers
  read: len(), .shape, .dtype, .ndim, slices [a:b] and int-array indexing (both -> np.ndarray;
  the base is always read in sorted order). `np.asarray(view)` reads every row: small sets only.
  """

  def __init__(self, base, rows=None):
    self.base = base
    self.rows = None if rows is None else np.asarray(rows, np.int64)
    n = len(base) if self.rows is None else len(self.rows)
    self.shape = (n,) + tuple(base.shape[1:])
    self.dtype = np.dtype(base.dtype)
    self.ndim = len(self.shape)

  def __len__(self) -> int:
    return self.shape[0]

  def _read(self, idx: np.ndarray) -> np.ndarray:
    if idx.size == 0:
      return np.zeros((0,) + self.shape[1:], self.dtype)
    if idx[-1] - idx[0] + 1 == idx.size:  # contiguous: one slice read
      return np.asarray(self.base[int(idx[0]):int(idx[-1]) + 1])
    return np.asarray(self.base[idx])

  def __getitem__(self, key):
    if isinstance(key, (int, np.integer)):
      return self[np.array([key])][0]
    if isinstance(key, slice):
      pos = np.arange(len(self))[key]
    else:
      pos = np.asarray(key)
      if pos.dtype == bool:
        pos = np.flatnonzero(pos)
    idx = pos if self.rows is None else self.rows[pos]
    if idx.size > 1 and np.any(np.diff(idx) < 0):
      order = np.argsort(idx, kind='stable')
      out = np.empty((len(idx),) + self.shape[1:], self.dtype)
      out[order] = self._read(idx[order])
      return out
    return self._read(idx)

  def take(self, positions) -> 'RowSubset':
    """A view of the rows at `positions` of this view."""
    positions = np.asarray(positions, np.int64)
    return RowSubset(self.base, positions if self.rows is None else self.rows[positions])

  def __array__(self, dtype=None, copy=None):
    out = self[:]
    return out if dtype is None else out.astype(dtype)


class SourceImages:
  """uint8 images [N, H, W, C] of `source` (an `fpjax.data.ImageFolderSource`), decoded when
  sliced (threads), never all at once: the baselines' view of a GM dataset.

  `files` (paths relative to source.root, e.g. an artifact store's rows) picks and orders the
  images; the map to the source's indices is built on first read, so a run without baselines
  never builds it (it costs a string per image).
  """

  def __init__(self, source, files=None, num_threads: int = 4):
    self.source = source
    self._files = files
    self._indices = np.arange(len(source)) if files is None else None
    self.shape = (len(source) if files is None else len(files),) + tuple(source.image_shape)
    self.dtype = np.dtype(np.uint8)
    self.ndim = 4
    self.num_threads = num_threads

  def __len__(self) -> int:
    return self.shape[0]

  @property
  def indices(self) -> np.ndarray:
    if self._indices is None:
      root = self.source.root
      where = {os.path.relpath(f, root): i for i, f in enumerate(self.source.files)}
      try:
        self._indices = np.array([where[f] for f in self._files], np.int64)
      except KeyError as e:
        raise UserInputError(f'{root}: file {e} of the artifact store is no longer there; '
                             'recompute the store') from None
    return self._indices

  def __getitem__(self, key) -> np.ndarray:
    idx = np.atleast_1d(self.indices[key])
    with concurrent.futures.ThreadPoolExecutor(self.num_threads) as pool:
      images = list(pool.map(lambda i: self.source[int(i)]['image'], idx))
    out = np.empty((len(idx),) + self.shape[1:], np.uint8)
    for j, a in enumerate(images):
      out[j] = a
    return out


def apply_in_slices(fn, x, rows: int = SLICE_ROWS) -> np.ndarray:
  """np.concatenate of fn(x[a:b]) over slices (predictions, small feature vectors)."""
  parts = [np.asarray(fn(xs)) for _, xs in iter_slices(x, rows)]
  return np.concatenate(parts) if parts else np.zeros((0,))


def class_moments(x, labels, num_classes: int, fn=None, rows: int = SLICE_ROWS):
  """Per-class count [K], mean and population variance [K, D] (float64) of fn(x) rows,
  streamed slice by slice and merged with Chan et al.'s pairwise update (stable)."""
  labels = np.asarray(labels)
  count = np.zeros(num_classes, np.float64)
  mean = m2 = None
  for a, xs in iter_slices(x, rows):
    f = np.asarray(fn(xs) if fn is not None else xs, np.float64).reshape(len(xs), -1)
    y = labels[a:a + len(xs)]
    if mean is None:
      mean = np.zeros((num_classes, f.shape[1]))
      m2 = np.zeros((num_classes, f.shape[1]))
    for c in np.unique(y):
      fc = f[y == c]
      nb, mb = len(fc), fc.mean(0)
      m2b = ((fc - mb) ** 2).sum(0)
      na = count[c]
      delta = mb - mean[c]
      tot = na + nb
      mean[c] += delta * (nb / tot)
      m2[c] += m2b + delta ** 2 * (na * nb / tot)
      count[c] = tot
  var = m2 / np.maximum(count, 1.0)[:, None]
  return count, mean, var


def streamed_fdr(x, labels, num_classes: int, fn=None) -> float:
  """trace(S_B)/trace(S_W) of fn(x) (`fpjax.stats.fdr_from_moments`), streamed over x."""
  from fpjax.stats import fdr_from_moments
  return fdr_from_moments(*class_moments(x, labels, num_classes, fn))


def stratified_sample(labels, per_class: int, seed: int = 0) -> np.ndarray:
  """Sorted row indices: at most `per_class` rows of each class, chosen at random (seeded)."""
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  out = []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    out.append(idx if len(idx) <= per_class else rng.choice(idx, per_class, replace=False))
  return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)


# ----------------------------------------------------------------------------- GM datasets

@dataclasses.dataclass
class GMData:
  """A GM dataset on disk (one class per generative model) and the real source it imitates.

  Nothing here holds images: `source` decodes them on demand, the artifact stores hold the
  artifacts. `real` is any real source `fpjax.compute_artifacts` takes.
  """
  name: str
  path: str                        # zoo workdir or image-folder root, as compute_artifacts takes
  real: str
  class_names: list
  source: object                   # fpjax.data.ImageFolderSource of the generated images
  image_shape: tuple
  bank_size: int                   # images of the real source (the manifold's bank)
  tags: dict | None = None         # model name -> {knob: value} (zoo.json), None for folders


def load_gm(gm: str, real: str | None = None, *, name: str | None = None) -> GMData:
  """Opens a zoo workdir (has zoo.json) or an image-folder root `root/<model>/*.png`.

  `real` is any real source of `artifact_job.load_bank_images` (embedded name,
  'tfds:<name>[:<split>]', a .npy/.npz, an image folder); for a zoo it defaults to the zoo's
  own real dataset, and a different one is an error (artifacts would be measured against the
  wrong manifold). The generated images are listed, not read.
  """
  from fpjax import artifact_job
  if not isinstance(gm, str) or not os.path.isdir(gm):
    raise UserInputError(f'--gm {gm!r}: not a directory (expected a zoo workdir or an '
                         'image-folder root)')
  tags = None
  zoo_json = os.path.join(gm, 'zoo.json')
  if os.path.exists(zoo_json):
    meta = fileio.load_json(zoo_json)
    tags = {m['name']: dict(m['tags']) for m in meta['models']}
    if real is not None and real != meta['real']:
      raise UserInputError(f'{zoo_json}: the zoo was trained on real {meta["real"]!r}, '
                           f'not {real!r}')
    real = meta['real']
    name = name or f'zoo-{meta["preset"]}-{meta["real"]}'
  else:
    if real is None:
      raise UserInputError(f'{gm} has no zoo.json: give the real dataset (--real) it imitates')
    name = name or os.path.basename(os.path.normpath(gm))
  bank = artifact_job.load_bank_images(real)
  # Files the listing refuses (names, symlinks out of the folder) are left out quietly here:
  # the artifact job lists them in its bad_inputs.jsonl (or stops, under --on_bad_input=fail).
  quiet = BadInputs(gm, 'skip', write=False, echo=False)
  source = artifact_job.open_generated(gm, bank.shape[1:], quiet)
  return GMData(name, os.path.abspath(gm), real, list(source.class_names), source,
                tuple(bank.shape[1:]), len(bank), tags)


def real_training_set(real: str):
  """(images, labels or None) of a real source: the encoders' training data.

  Labels: the embedded sets' digits, a TFDS dataset's 'label', a .npz's 'labels' entry, an
  image folder's class folders (when there are at least two); a .npy has none.
  """
  from fpjax import data as data_lib
  from fpjax import artifact_job
  if real in data_lib.REAL_NAMES:
    r = data_lib.load_real(real)
    return r.train_images, r.train_labels
  if real.startswith('tfds:'):
    name, _, split = real[len('tfds:'):].partition(':')
    images, labels = data_lib.load_tfds(name, split or 'train')
    return images, labels if len(np.unique(labels)) > 1 else None
  if real.endswith('.npz'):
    arrays = fileio.load_array(real)
    labels = arrays.get('labels')
    return artifact_job.load_bank_images(real), None if labels is None else np.asarray(labels)
  if os.path.isdir(real):
    s = data_lib.load_image_folder(real)
    return s.images, s.labels if len(s.class_names) > 1 else None
  return artifact_job.load_bank_images(real), None


# ----------------------------------------------------------------------------- spaces, stores

def _safe(name: str) -> str:
  """A folder name for a dataset or real-source name (which may be a path or 'tfds:x:y')."""
  out = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in name).strip('.')
  return out or '_'


def make_encoders(names, real: str, *, workdir: str, encoder_steps: dict | None = None,
                  seed: int = 0, zoo_reference: str | None = None) -> dict:
  """Space name -> None (a core space) or the path of its saved SL/SSL Encoder.

  Encoders are trained on the real source's images (SL with its labels) and saved once in
  `workdir/encoders/<kind>-<real>-steps<steps>-seed<seed>` (reused when present); the key holds
  what the encoder depends on, so other settings never reuse it. 'sl' is left out, with a
  one-line warning, when the real source has no labels. Process 0 writes; the others wait.

  zoo_reference: a zoo's `reference/` folder (fpjax.zoo.quality). Its SL encoder, which scores
  the zoo's realism, is copied instead of trained again when it was trained on the same real
  source with the same steps and seed: `train_encoder` is deterministic, so it is the encoder
  this function would train (the demo saves that training, about 35 s on 2 CPU cores).
  """
  import jax
  from fpjax import artifact_job
  from fpjax.models import encoders
  out, data = {}, None
  for n in names:
    if n in spaces_lib.SPACES:
      out[n] = None
      continue
    if n not in ENCODER_SPACES:
      raise UserInputError(f'unknown space {n!r}; expected some of {MANIFPT_SPACES}')
    steps = (encoder_steps or {}).get(n)
    path = os.path.join(workdir, 'encoders',
                        f'{n}-{_safe(real)}-steps{steps or "preset"}-seed{seed}')
    if os.path.exists(os.path.join(path, 'config.json')):
      logging.info('encoder %s: reusing %s', n, path)
      out[n] = path
      continue
    same = _zoo_reference_encoder(zoo_reference, n, real, steps, seed)
    if same:
      if jax.process_index() == 0:
        tmp = path + '.tmp'
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(same, tmp)
        os.replace(tmp, path)
      artifact_job.barrier(f'encoder {path}')
      logging.info('encoder %s: copied the zoo reference\'s %s', n, same)
      out[n] = path
      continue
    if data is None:
      data = real_training_set(real)
    images, labels = data
    if n in LABELLED_SPACES and labels is None:
      logging.warning("space '%s' skipped: the real source %r has no labels to train its "
                      'encoder on', n, real)
      continue
    t0 = time.time()
    enc = encoders.train_encoder(n, images, labels if n in LABELLED_SPACES else None,
                                 steps=steps, seed=seed)
    logging.info('encoder %s: trained on %d real images in %.1fs', n, len(images),
                 time.time() - t0)
    if jax.process_index() == 0:
      enc.save(path)
    artifact_job.barrier(f'encoder {path}')  # process 0 has written what the others read
    out[n] = path
  return out


def _zoo_reference_encoder(reference: str | None, kind: str, real: str, steps: int | None,
                           seed: int) -> str | None:
  """The zoo reference's encoder folder of this kind when it is the encoder make_encoders would
  train (same real source, steps and seed; fpjax.zoo.quality stamps them), else None."""
  from fpjax.models import encoders
  if not reference:
    return None
  folder = os.path.join(reference, f'{kind}_encoder')
  stamp = os.path.join(folder, 'zoo_config.json')
  if not os.path.exists(stamp):
    return None
  if steps is None:
    steps = encoders.PRESETS['quick'][f'{kind}_steps']
  return folder if fileio.load_json(stamp) == {'real': real, 'seed': seed,
                                                    'steps': steps} else None


def estimator_keys(names) -> list:
  """The store's estimator keys for estimator names: every candidate of each name's grid, in
  the order given, then the control 'input' (always: every table has its control rows)."""
  from fpjax import estimators as est_lib
  return [e.key for e in est_lib.resolve([n for n in names if n != CONTROL] + [CONTROL])]


def store_dir(workdir: str, gm: GMData, space: str, encoder: str | None = None,
              names=('nn',)) -> str:
  """WORKDIR/artifacts/<gm name>/<space>/<names> (an encoder space: the encoder's folder name;
  names: the estimators joined by '+', the control last, e.g. 'nn+knn_mean+input'): another
  set of estimators is another store, never a refused one."""
  names = [n for n in names if n != CONTROL] + [CONTROL]
  return os.path.join(workdir, 'artifacts', _safe(gm.name),
                      space if encoder is None else os.path.basename(os.path.normpath(encoder)),
                      '+'.join(names))


def artifact_store(gm: GMData, space: str, workdir: str, *, encoder: str | None = None,
                   names=('nn',), artifact_kwargs: dict | None = None):
  """The complete artifact store of (gm, gm.real, space) holding every key of
  `estimator_keys(names)`: `artifact_job.compute_artifacts` runs first (it returns at once for
  a complete store of the same configuration, resumes a partial one and refuses one of another
  configuration)."""
  from fpjax import artifact_job
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
    from fpjax import estimators as est_lib
    return [e.key for e in est_lib.grid(name)]


# Features.in_memory_bytes of `open_features`: the demo's dataset (3,000 images, 11 arrays of
# 28x28 RGB artifacts, ~100 MB in all) is held whole; a dataset of ~100,000 images streams.
IN_MEMORY_BYTES = 1 << 30


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
  first_space, first = next(iter(stores.items()))
  files = first.files
  for s, st in stores.items():
    if list(st.class_names) != gm.class_names:
      raise UserInputError(f'artifact store of {gm.name} in {s}: models {st.class_names} '
                           f'differ from {gm.class_names}')
    if st.num_rows != first.num_rows or st.files != files:
      raise UserInputError(f'artifact stores of {gm.name} in {first_space} and {s} hold '
                           f'different images ({first.num_rows} vs {st.num_rows} rows); '
                           'remove the stale one')
  if os.path.realpath(first.gm_root) != os.path.realpath(gm.source.root):
    raise UserInputError(f'artifact store of {gm.name} in {first_space} was computed on '
                         f'{first.gm_root}, not {gm.source.root}; use another --workdir')
  return Features(gm, np.asarray(first.labels, np.int32), stores,
                  SourceImages(gm.source, files), names, in_memory_bytes)


# ----------------------------------------------------------------------------- splits

@dataclasses.dataclass(frozen=True)
class Split:
  """One train/validation split and the inner split of its training part (sorted row indices).

  `seed` (split_seed + index) draws both splits and seeds every classifier fit on this split.
  `inner_train` and `inner_val` partition `train`; `val` (the reported rows) is read only by the
  reported predictions.
  """
  index: int
  seed: int
  train: np.ndarray
  val: np.ndarray
  inner_train: np.ndarray
  inner_val: np.ndarray


def check_num_splits(num_splits) -> int:
  """num_splits as an int >= 1, else a UserInputError."""
  if (not isinstance(num_splits, (int, np.integer)) or isinstance(num_splits, bool)
      or num_splits < 1):
    raise UserInputError(f'--splits: need at least 1 train/validation split, got {num_splits!r}')
  return int(num_splits)


def make_splits(labels, num_splits, *, seed: int = 0, train_fraction: float = 0.7,
                inner_fraction: float = SELECTION['inner_fraction']) -> list:
  """`num_splits` (>= 1) splits of `labels`: split i uses seed `seed + i` (module docstring).

  The inner split (`fpjax.models.training.stratified_split` of the training part, seeded) names
  the rows the selection fits (`inner_train`) and stops early on (`inner_val`; select_probe
  hands them to the probe)."""
  from fpjax.models import training
  num_splits = check_num_splits(num_splits)
  labels = np.asarray(labels)
  out = []
  for i in range(int(num_splits)):
    s = seed + i
    mask = metrics.split_per_class(labels, train_fraction, s)
    train, val = np.flatnonzero(mask), np.flatnonzero(~mask)
    fit, stop = training.stratified_split(labels[train], inner_fraction,
                                          np.random.default_rng(s))
    out.append(Split(i, s, train, val, train[fit], train[stop]))
  return out


def split_config(splits) -> list:
  """What tables.json records of the splits: seeds and sizes."""
  return [dict(index=s.index, split_seed=s.seed, classifier_seed=s.seed, train=len(s.train),
               val=len(s.val), inner_train=len(s.inner_train), inner_val=len(s.inner_val))
          for s in splits]


# ----------------------------------------------------------------------------- classifiers

def _make_classifier(kind: str, cfg: dict, space: str | None = None):
  """A fresh classifier; the attributor is told the embedding space (spectra get an MLP)."""
  from fpjax.attribution import Attributor
  if kind == 'probe':
    return _probe(cfg)
  if kind == 'attributor':
    return Attributor(cfg.get('attributor_preset', 'quick'), space=space,
                      **cfg.get('attributor', {}))
  raise UserInputError(f'unknown classifier {kind!r}; expected one of {CLASSIFIERS}')


def _selection(cfg: dict) -> dict:
  given = dict((cfg or {}).get('selection', {}))
  unknown = set(given) - set(SELECTION)
  if unknown:
    raise UserInputError(f'selection: unknown options {sorted(unknown)}; known: '
                         f'{sorted(SELECTION)}')
  sel = dict(SELECTION, **given)
  sel['l2'] = tuple(sel['l2'])
  if not sel['l2']:
    raise UserInputError('selection: l2 needs at least one candidate')
  for name in ('max_epochs', 'patience'):
    if not isinstance(sel[name], (int, np.integer)) or sel[name] < 1:
      raise UserInputError(f'selection: {name} must be an integer >= 1, got {sel[name]!r}')
  return sel


def _probe(cfg: dict, l2: float | None = None, epochs: int | None = None):
  """A LinearProbe of cfg['probe'] at l2 (default: the first candidate).

  epochs given: exactly that many epochs (the reported fit, with the epoch count chosen on the
  inner split). None: early stopping on held-out rows of its own training rows (fit's
  `val_rows`, e.g. a split's `inner_val`; else `selection['inner_fraction']` per model drawn
  with the fit's seed), at most `max_epochs`, `patience` epochs without improvement;
  `history_['best_epoch']` is the epoch it kept.
  """
  from fpjax.attribution import LinearProbe
  kw = dict((cfg or {}).get('probe', {}))
  fixed = {'l2', 'epochs', 'val_fraction', 'patience'} & set(kw)
  if fixed:
    raise UserInputError(f'probe options {sorted(fixed)} are chosen on the inner validation '
                         "split: set cfg['selection'] instead")
  sel = _selection(cfg)
  l2 = sel['l2'][0] if l2 is None else l2
  if epochs is not None:
    return LinearProbe(l2=l2, epochs=int(epochs), val_fraction=0.0, patience=None, **kw)
  return LinearProbe(l2=l2, epochs=sel['max_epochs'], val_fraction=sel['inner_fraction'],
                     patience=sel['patience'], **kw)


def fit_predict(model, x_train, y_train, x_test, seed: int) -> np.ndarray:
  """Fits `model` (seeded) and predicts x_test; x_train / x_test may be lazy (`RowSubset`)."""
  # The classifiers take the seed at fit; a baseline took it at construction.
  model.fit(x_train, y_train, seed=seed) if _takes_seed(model) else model.fit(x_train, y_train)
  return apply_in_slices(model.predict, x_test)


def _takes_seed(model) -> bool:
  from fpjax.attribution import Attributor, LinearProbe
  return isinstance(model, (Attributor, LinearProbe))


def _check_baselines(baselines):
  from fpjax.baselines import BASELINES
  baselines = list(BASELINES) if baselines is None else list(baselines)
  for b in baselines:
    if b not in BASELINES:
      raise UserInputError(f'unknown baseline {b!r}; expected some of {sorted(BASELINES)}')
  return baselines


@dataclasses.dataclass
class Choice:
  """What `select_probe` chose for one (space, estimator, split)."""
  key: str
  l2: float
  epochs: int                  # the early-stopping epoch count on the inner split
  inner_accuracy: float        # the chosen candidate's accuracy on the inner validation rows
  fits: int                    # probe fits the selection ran


def select_probe(read, keys, labels, split: Split, cfg: dict | None = None) -> Choice:
  """Chooses the estimator key, the probe's l2 and its epochs on `split`'s inner split.

  read(key) -> lazy rows of that key's artifacts (all rows); only `split.train` is read: the
  probe fits `split.inner_train` and stops early on `split.inner_val` (`_probe`, module
  docstring). Coordinate-wise: len(keys) + len(l2) - 1 fits.
  """
  sel = _selection(cfg or {})
  y = np.asarray(labels)[split.train]
  scores = {}

  stop = np.searchsorted(split.train, split.inner_val)  # positions in the training part

  def score(c):
    if c not in scores:
      probe = _probe(cfg, c[1])
      probe.fit(read(c[0]).take(split.train), y, seed=split.seed, val_rows=stop)
      h = probe.history_
      scores[c] = (h['val_accuracy'][h['best_epoch']], h['best_epoch'] + 1)
    return scores[c][0]

  def best(candidates):  # max keeps the first of equal scores: the earlier (default) candidate
    return max(candidates, key=score)

  l2s = sel['l2']
  key = best([(k, l2s[0]) for k in keys])[0]
  c = best([(key, v) for v in l2s])
  return Choice(key, float(c[1]), int(scores[c][1]), float(scores[c][0]), len(scores))


# ----------------------------------------------------------------------------- Table 1

def table1(feats: Features, splits, *, baselines=None, classifiers=CLASSIFIERS,
           attributor_estimators=None, cfg: dict | None = None,
           baseline_cfg: dict | None = None) -> dict:
  """Attribution accuracy and FDR of every baseline and every (space, estimator, classifier).

  splits: `make_splits`'s list. attributor_estimators: the estimators the attributor runs on
  (None: every one of the space's `feats.names(space)`; one the space lacks is skipped); BEST ('best') is, per split, the estimator (not the
  control) whose chosen probe scored highest on that split's inner validation rows.
  Returns {'rows', 'splits', 'y_true' [per split: validation labels], 'predictions'
  {row_label: [per split: predictions of the validation rows]}, 'choices' {(space, estimator,
  split index): Choice}, 'cost' {part: (wall s, process CPU s)} for 'selection', each
  classifier and 'baselines', 'selection_fits'}.
  """
  from fpjax.baselines import BASELINES
  cfg = cfg or {}
  baselines = _check_baselines(baselines)
  for kind in classifiers:
    if kind not in CLASSIFIERS:
      raise UserInputError(f'unknown classifier {kind!r}; expected one of {CLASSIFIERS}')
  every = {n for s in feats.stores for n in feats.names(s)} | {BEST}
  for n in attributor_estimators or ():
    if n not in every:
      raise UserInputError(f'attributor estimator {n!r} is not among the estimators asked '
                           f'{sorted(every)}')
  gm, labels = feats.gm, feats.labels
  k = len(gm.class_names)
  y_true = [labels[sp.val] for sp in splits]
  rows, preds, choices = [], {}, {}
  # The attributor's estimators in a space: those asked that the space's store holds ('best':
  # among the space's manifold estimators).
  att = lambda sname: [n for n in (feats.names(sname) if attributor_estimators is None
                                   else attributor_estimators)
                       if n in feats.names(sname)
                       or (n == BEST and feats.names(sname) != [CONTROL])]
  steps = sum(len(feats.names(s)) + len(feats.names(s) if kind == 'probe' else att(s))
              for s in feats.stores for kind in classifiers)
  prog = progress.Progress(steps + len(baselines), unit='steps', desc=f'Table 1 ({gm.name})',
                           log_every_s=0)
  # Wall and process-CPU seconds per part (selection, each classifier, baselines).
  cost = {}

  def spent(part, wall0, cpu0):
    w, c = cost.get(part, (0.0, 0.0))
    cost[part] = (w + time.time() - wall0, c + time.process_time() - cpu0)

  def add_row(part, fit_predict_split, fdr, **fields):
    """One Table 1 row, ManiFPT or baseline alike: fit_predict_split(split) -> predictions of
    its validation rows, for every split; fdr() after the fits (split 0's validation rows)."""
    t0, c0 = time.time(), time.process_time()
    pr = [fit_predict_split(sp) for sp in splits]
    accs = [metrics.accuracy(labels[sp.val], p) for sp, p in zip(splits, pr)]
    mean, std = metrics.mean_std(accs)
    row = make_row(table='1', dataset=gm.name, accuracy_mean=mean, accuracy_std=std,
                   accuracies=accs, num_splits=len(splits), fdr=fdr(),
                   num_train=len(splits[0].train), num_test=len(splits[0].val),
                   seconds=time.time() - t0, **fields)
    rows.append(row)
    preds[row_label(row)] = pr
    spent(part, t0, c0)
    prog.update(1, note=f'{row_label(row)}: {100 * mean:.1f} ± {100 * std:.1f}%')

  for sname in feats.stores:
    names = feats.names(sname)
    read = lambda key, sname=sname: feats.artifacts(sname, key)
    for name in names:
      t0, c0 = time.time(), time.process_time()
      for sp in splits:
        choices[(sname, name, sp.index)] = select_probe(read, feats.keys(name), labels, sp, cfg)
      spent('selection', t0, c0)
      ch = [choices[(sname, name, sp.index)] for sp in splits]
      prog.update(1, note=f'{sname} {name}: chose {[c.key for c in ch]}, l2 '
                  f'{[c.l2 for c in ch]}, epochs {[c.epochs for c in ch]} '
                  f'({sum(c.fits for c in ch)} fits, {time.time() - t0:.1f}s)')

    def chosen(name, sp):
      if name != BEST:
        return choices[(sname, name, sp.index)]
      best = max((n for n in names if n != CONTROL),
                 key=lambda n: choices[(sname, n, sp.index)].inner_accuracy)
      return choices[(sname, best, sp.index)]

    fdr_cache = {}

    def fdr_of(key):
      if key not in fdr_cache:
        fdr_cache[key] = streamed_fdr(read(key).take(splits[0].val), y_true[0], k)
      return fdr_cache[key]

    for kind in classifiers:
      for name in (names if kind == 'probe' else att(sname)):
        ch = [chosen(name, sp) for sp in splits]

        def fit_split(sp, kind=kind, ch=ch):
          c = ch[sp.index]
          x = read(c.key)
          model = (_probe(cfg, c.l2, c.epochs) if kind == 'probe'
                   else _make_classifier(kind, cfg, sname))
          return fit_predict(model, x.take(sp.train), labels[sp.train], x.take(sp.val), sp.seed)
        add_row(kind, fit_split, lambda ch=ch: fdr_of(ch[0].key), method='ManiFPT',
                space=sname, estimator=name, classifier=kind,
                estimator_params=[c.key for c in ch],
                probe_l2=[c.l2 for c in ch] if kind == 'probe' else None)
  images = feats.image_rows() if baselines else None
  for b in baselines:
    bcfg = (baseline_cfg or {}).get(b, {})
    first = []                       # split 0's fitted baseline: its features give the FDR

    def fit_split(sp, b=b, bcfg=bcfg, first=first):
      model = BASELINES[b](seed=sp.seed, **bcfg)
      first.append(model)
      return fit_predict(model, images.take(sp.train), labels[sp.train], images.take(sp.val),
                         sp.seed)
    add_row('baselines', fit_split,
            lambda first=first: streamed_fdr(images.take(splits[0].val), y_true[0], k,
                                             fn=first[0].features),
            method=b, classifier='own')
  return {'rows': rows, 'splits': splits, 'y_true': y_true, 'predictions': preds,
          'choices': choices, 'cost': cost,
          'selection_fits': sum(c.fits for c in choices.values())}


def choices_config(choices) -> list:
  """What tables.json records of the selection: one entry per (space, estimator, split)."""
  return [dict(space=s, estimator=n, split=i, key=c.key, l2=c.l2, epochs=c.epochs,
               inner_val_accuracy=c.inner_accuracy, fits=c.fits)
          for (s, n, i), c in choices.items()]


def diff_rows(t1: dict, *, num_resamples: int = 2000, seed: int = 0) -> list:
  """Table 'diff': paired bootstrap 95 % intervals of accuracy differences on the same
  validation rows of every split (best = highest mean accuracy over the splits, as reported):

    - the best ManiFPT row (not a control) minus the best baseline;
    - the best ManiFPT row minus the best ManiFPT row of another estimator (the runner-up
      estimator), and per space and classifier the best estimator row minus the runner-up
      (pairs already listed are not repeated; the attributor's 'best' row takes no part);
    - each estimator row minus its input control (same space, same classifier).
  """
  rows = [r for r in t1['rows'] if r['table'] == '1']
  mani = [r for r in rows if not is_baseline(r) and not is_control(r)]
  base = [r for r in rows if is_baseline(r)]
  pairs = []
  best = lambda rr: max(rr, key=lambda r: r['accuracy_mean'])
  if mani and base:
    pairs.append((best(mani), best(base)))
  named = [r for r in mani if r['estimator'] != BEST]
  if named:
    top = best(mani)
    others = [r for r in named if r['estimator'] != top['estimator']]
    if others:
      pairs.append((top, best(others)))
    for group in dict.fromkeys((r['space'], r['classifier']) for r in named):
      rr = sorted((r for r in named if (r['space'], r['classifier']) == group),
                  key=lambda r: -r['accuracy_mean'])
      if len(rr) > 1 and (rr[0], rr[1]) not in pairs:
        pairs.append((rr[0], rr[1]))
  for r in mani:
    pairs += [(r, c) for c in rows if c['estimator'] == CONTROL and c['space'] == r['space']
              and c['classifier'] == r['classifier']]
  out = []
  for a, b in pairs:
    la, lb = row_label(a), row_label(b)
    res = metrics.paired_bootstrap(t1['y_true'], t1['predictions'][la], t1['predictions'][lb],
                                   num_resamples=num_resamples, seed=seed)
    out.append(make_row(table='diff', method=f'{la} vs {lb}', dataset=a['dataset'], a=la, b=lb,
                        num_splits=len(t1['y_true']), num_test=len(t1['y_true'][0]), **res))
  return out


# ----------------------------------------------------------------------------- Table 2

def _common_rows(src: Features, tgt: Features):
  """Models present in both (by name); per side the rows of those models and their new labels."""
  common = [c for c in src.gm.class_names if c in set(tgt.gm.class_names)]
  if len(common) < 2:
    raise UserInputError(f'cross-dataset needs >= 2 models present in both {src.gm.name} and '
                         f'{tgt.gm.name}; common: {common}')
  idx = {c: i for i, c in enumerate(common)}

  def relabel(f: Features):
    new = np.array([idx.get(c, -1) for c in f.gm.class_names], np.int32)[f.labels]
    rows = np.flatnonzero(new >= 0)
    return rows, new[rows]
  return common, relabel(src), relabel(tgt)


def table2(src: Features, tgt: Features, splits, *, baselines=(),
           classifiers=CLASSIFIERS, cfg: dict | None = None,
           baseline_cfg: dict | None = None) -> list:
  """Train on every image of `src`, test on every image of `tgt` (models matched by name).

  Both sides must have stores of the same spaces (ManiFPT rows) from the same encoders; the
  estimators are those both sides' Features hold (with the control), each at its default
  candidate (no inner split of the other dataset to choose on), the probe at the selection's
  first l2 with its epochs by early stopping on an inner split of `src` (`_probe`).
  splits: `make_splits`'s list; no split is drawn here (all of `src` trains, all of `tgt`
  tests): one fit per split's classifier seed.
  """
  seeds = [sp.seed for sp in splits]
  from fpjax.baselines import BASELINES
  cfg = cfg or {}
  baselines = _check_baselines(baselines)
  common, (rs, ys), (rt, yt) = _common_rows(src, tgt)
  dataset = f'{src.gm.name} -> {tgt.gm.name}'
  spaces = [s for s in src.stores if s in tgt.stores]
  rows = []
  prog = progress.Progress(sum(len(src.names(s)) for s in spaces) * len(classifiers)
                           + len(baselines), unit='steps', desc=f'Table 2 ({dataset})',
                           log_every_s=0)

  def scored(make, x_src, x_tgt):
    accs = [metrics.accuracy(yt, fit_predict(make(s), x_src, ys, x_tgt, s)) for s in seeds]
    return accs, *metrics.mean_std(accs)

  for sname in spaces:
    for name in [n for n in src.names(sname) if n in tgt.names(sname)]:
      key = src.keys(name)[0]
      a_src = src.artifacts(sname, key).take(rs)
      a_tgt = tgt.artifacts(sname, key).take(rt)
      fdr = streamed_fdr(a_tgt, yt, len(common))
      for kind in classifiers:
        t0 = time.time()
        accs, mean, std = scored(lambda s, kind=kind: _make_classifier(kind, cfg, sname), a_src,
                                 a_tgt)
        row = make_row(table='2', method='ManiFPT', space=sname, estimator=name,
                       classifier=kind, dataset=dataset, accuracy_mean=mean, accuracy_std=std,
                       accuracies=accs, num_splits=len(seeds), fdr=fdr, num_train=len(rs),
                       num_test=len(rt), seconds=time.time() - t0)
        rows.append(row)
        prog.update(1, note=f'{row_label(row)}: {100 * mean:.1f}%')
  for b in baselines:
    t0 = time.time()
    bcfg = (baseline_cfg or {}).get(b, {})
    accs, mean, std = scored(lambda s, b=b: BASELINES[b](seed=s, **bcfg),
                             src.image_rows().take(rs), tgt.image_rows().take(rt))
    rows.append(make_row(table='2', method=b, classifier='own', dataset=dataset,
                         accuracy_mean=mean, accuracy_std=std, accuracies=accs,
                         num_splits=len(seeds), num_train=len(rs), num_test=len(rt),
                         seconds=time.time() - t0))
    prog.update(1, note=f'{b}: {100 * mean:.1f}%')
  return rows


# ----------------------------------------------------------------------------- Table 3

def cluster_features(x, *, pca_dim: int = 32, seed: int = 0) -> np.ndarray:
  """z-score per coordinate (constant -> 0), then PCA to min(pca_dim, D, N - 1) dimensions."""
  from sklearn.decomposition import PCA
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  std = x.std(0)
  z = (x - x.mean(0)) / np.where(std > 1e-12, std, 1.0)
  dim = max(1, min(pca_dim, z.shape[1], z.shape[0] - 1))
  return PCA(dim, random_state=seed).fit_transform(z)


def knob_names(tags: dict) -> list:
  """The design knobs of a zoo: its models' tag names, in the zoo's order (one source of truth:
  the recipes' tags, as zoo.json records them)."""
  return list(dict.fromkeys(k for t in tags.values() for k in t))


def knob_nmi(features, labels, class_names, tags, *, knobs=None, seed: int = 0) -> dict:
  """{knob: NMI or None}: k-means (k = distinct knob values) vs each image's knob value.

  knobs: default `knob_names(tags)`. Images of models whose knob is 'n/a' (or missing) are left
  out; a knob with < 2 values there gives None. 'model' is added: k-means with k = number of
  models vs model identity.
  """
  from sklearn.cluster import KMeans
  knobs = knob_names(tags) if knobs is None else knobs
  names = np.asarray(class_names, object)[np.asarray(labels)]
  out = {}
  for knob in knobs:
    vals = np.array([tags[n].get(knob, 'n/a') for n in names], object)
    keep = vals != 'n/a'
    uniq = np.unique(vals[keep]) if keep.any() else []
    if len(uniq) < 2:
      out[knob] = None
      continue
    km = KMeans(len(uniq), n_init=10, random_state=seed).fit(features[keep])
    out[knob] = metrics.nmi(vals[keep].astype(str), km.labels_)
  km = KMeans(len(class_names), n_init=10, random_state=seed).fit(features)
  out['model'] = metrics.nmi(np.asarray(labels), km.labels_)
  return out


def split0_keys(feats: Features, choices: dict | None) -> dict:
  """{(space, estimator): key} that Table 3 and the open set read: the key split 0's selection
  chose (`table1`'s choices), else the estimator's default candidate."""
  return {(s, n): (choices[(s, n, 0)].key if choices and (s, n, 0) in choices
                   else feats.keys(n)[0])
          for s in feats.stores for n in feats.names(s)}


def table3(feats: Features, *, choices: dict | None = None, pca_dim: int = 32,
           max_rows: int = 20000, seed: int = 0) -> list:
  """Per space and estimator (`split0_keys`): NMI between k-means clusters of the artifacts and
  each design knob, on a stratified sample of at most `max_rows` rows (all rows when fewer)."""
  gm = feats.gm
  if not gm.tags:
    raise ValueError(f'{gm.name}: Table 3 needs design-knob tags (a zoo with zoo.json)')
  from threadpoolctl import threadpool_limits
  sample = stratified_sample(feats.labels, max(1, max_rows // len(gm.class_names)), seed)
  rows = []
  for (sname, name), key in split0_keys(feats, choices).items():
    t0 = time.time()
    art = feats.artifacts(sname, key)[sample]
    # One BLAS/OpenMP thread: next to JAX's own thread pool, sklearn's threads oversubscribe
    # the cores (measured 8x slower PCA on 2 busy cores) and gain nothing at this size.
    with threadpool_limits(1):
      x = cluster_features(art, pca_dim=pca_dim, seed=seed)
      del art
      nmi = knob_nmi(x, feats.labels[sample], gm.class_names, gm.tags, seed=seed)
    rows.append(make_row(table='3', method='ManiFPT', space=sname, estimator=name,
                         estimator_params=[key], dataset=gm.name, nmi=nmi,
                         num_test=len(sample), seconds=time.time() - t0))
  return rows


# ----------------------------------------------------------------------------- open set

def fit_free_baselines(baselines, baseline_cfg) -> dict:
  """{name: baseline} of the baselines whose features need no training (hand-crafted, Marra19).

  CNN baselines learn their features from the known models, so a model left out of the
  open-set protocol would have been seen in training: they are left out.
  """
  from fpjax.baselines import BASELINES
  out = {}
  for b in (list(BASELINES) if baselines is None else baselines):
    m = BASELINES[b](**(baseline_cfg or {}).get(b, {}))
    if getattr(m, 'FIT_FREE_FEATURES', False):
      out[b] = m
  return out


def openset(feats: Features, train_mask, *, choices: dict | None = None, baselines=(),
            baseline_cfg=None, shots: int = 10, max_per_model: int = 500,
            seed: int = 0) -> list:
  """Leave-one-model-out AUROC and few-shot enrolment accuracy of each space's and estimator's
  artifacts (`split0_keys`) and of the fit-free baselines' features, on a stratified sample of
  at most `max_per_model` rows per model (the protocols compare every row with every
  prototype: held in RAM). train_mask: split 0's training rows (the enrolment rows)."""
  from fpjax.attribution import openset as os_lib
  sample = stratified_sample(feats.labels, max_per_model, seed)
  y, train = feats.labels[sample], np.asarray(train_mask)[sample]
  sets = {('ManiFPT', s, n, key): (lambda s=s, key=key: feats.artifacts(s, key)[sample])
          for (s, n), key in split0_keys(feats, choices).items()}
  images = feats.image_rows().take(sample)
  for b, m in fit_free_baselines(baselines, baseline_cfg).items():
    sets[(b, None, None, None)] = lambda m=m: apply_in_slices(m.features, images)
  rows = []
  for (method, space, name, key), read in sets.items():
    x = read()
    au = os_lib.leave_one_model_out_auroc(x, y, seed=seed, train_mask=train)
    fs = os_lib.few_shot_accuracy(x, y, shots=shots, seed=seed, train_mask=train)
    rows.append(make_row(table='openset', method=method, space=space, estimator=name,
                         estimator_params=None if key is None else [key],
                         classifier='prototype', dataset=feats.gm.name, auroc=au['auroc'],
                         few_shot_accuracy=fs['accuracy'],
                         few_shot_new_model_accuracy=fs['new_model_accuracy'],
                         num_train=int(train.sum()), num_test=int((~train).sum())))
  return rows
