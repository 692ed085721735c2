"""The paper's evaluation protocols (Tables 1-3) and the open-set / few-shot extension.

Every function here computes and returns plain rows (`report.make_row`); writing files is
`report.py`'s job. ManiFPT features are never computed here: they are read from the artifact
stores that `fpjax.fingerprinting.compute_artifacts` writes (`artifact_store` runs it first when
a store is missing), so the tables stream over the same artifacts as the binary of that name and
never hold all images or all artifacts in RAM. Features reach the classifiers as lazy row views
(`RowSubset`), read in slices.

Table 1  every baseline and every ManiFPT space on one GM dataset; 70/30 split per model
         (`metrics.split_per_class`, the same mask for every method); ManiFPT features are the
         store's artifacts, classified by the optax `LinearProbe` and by the paper's
         `Attributor`; accuracy is mean ± std over classifier seeds; FDR is trace(S_B)/trace(S_W)
         of the validation split, from per-model moments streamed over its rows (artifacts for
         ManiFPT, `.features()` of the seed-0 fit for baselines).
Table 2  cross-dataset: train on all images of one zoo, test on all images of the same recipes
         trained on another real dataset; each side's artifacts are measured against its own
         real manifold, in the same embedding (SL/SSL encoders are shared by both sides).
Table 3  per space, on a stratified sample of at most `max_rows` rows: artifacts are z-scored per
         coordinate, reduced by PCA to `pca_dim` dimensions, and, for each design knob (the
         zoo's tags), clustered by k-means with k = number of distinct values of the knob among
         the models it applies to (models tagged 'n/a' are left out for that knob); NMI between
         the clusters and the knob values of the images.
Open set leave-one-model-out AUROC and few-shot enrolment accuracy of nearest-prototype
         attribution (`fpjax.attribution.openset`) on a stratified sample of at most
         `max_per_model` rows per model; enrolment = the sample's Table 1 train rows.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import time

from absl import logging
import numpy as np

from fpjax import progress
from fpjax.artifact_io import UserInputError
from fpjax import spaces as spaces_lib
from fpjax.analysis import metrics
from fpjax.analysis.report import make_row
from fpjax.models.training import iter_slices

ENCODER_SPACES = spaces_lib.ENCODER_SPACES
MANIFPT_SPACES = spaces_lib.SPACE_NAMES
LABELLED_SPACES = ('sl',)          # its encoder is trained on the real labels
CLASSIFIERS = ('probe', 'attributor')
SLICE_ROWS = 4096                  # rows per read when streaming over a store


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

  `real` is any real source of `fingerprinting.load_bank_images` (embedded name,
  'tfds:<name>[:<split>]', a .npy/.npz, an image folder); for a zoo it defaults to the zoo's
  own real dataset, and a different one is an error (artifacts would be measured against the
  wrong manifold). The generated images are listed, not read.
  """
  from fpjax import artifact_io
  from fpjax import fingerprinting
  if not isinstance(gm, str) or not os.path.isdir(gm):
    raise UserInputError(f'--gm {gm!r}: not a directory (expected a zoo workdir or an '
                         'image-folder root)')
  tags = None
  zoo_json = os.path.join(gm, 'zoo.json')
  if os.path.exists(zoo_json):
    meta = artifact_io.load_json(zoo_json)
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
  bank = fingerprinting.load_bank_images(real)
  # Files the listing refuses (names, symlinks out of the folder) are left out quietly here:
  # the artifact job lists them in its bad_inputs.jsonl (or stops, under --on_bad_input=fail).
  quiet = artifact_io.BadInputs(gm, 'skip', write=False, echo=False)
  source = fingerprinting.open_generated(gm, bank.shape[1:], quiet)
  return GMData(name, os.path.abspath(gm), real, list(source.class_names), source,
                tuple(bank.shape[1:]), len(bank), tags)


def real_training_set(real: str):
  """(images, labels or None) of a real source: the encoders' training data.

  Labels: the embedded sets' digits, a TFDS dataset's 'label', a .npz's 'labels' entry, an
  image folder's class folders (when there are at least two); a .npy has none.
  """
  from fpjax import artifact_io
  from fpjax import data as data_lib
  from fpjax import fingerprinting
  if real in data_lib.REAL_NAMES:
    r = data_lib.load_real(real)
    return r.train_images, r.train_labels
  if real.startswith('tfds:'):
    name, _, split = real[len('tfds:'):].partition(':')
    images, labels = data_lib.load_tfds(name, split or 'train')
    return images, labels if len(np.unique(labels)) > 1 else None
  if real.endswith('.npz'):
    arrays = artifact_io.load_array(real)
    labels = arrays.get('labels')
    return fingerprinting.load_bank_images(real), None if labels is None else np.asarray(labels)
  if os.path.isdir(real):
    s = data_lib.load_image_folder(real)
    return s.images, s.labels if len(s.class_names) > 1 else None
  return fingerprinting.load_bank_images(real), None


# ----------------------------------------------------------------------------- spaces, stores

def _safe(name: str) -> str:
  """A folder name for a dataset or real-source name (which may be a path or 'tfds:x:y')."""
  out = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in name).strip('.')
  return out or '_'


def make_encoders(names, real: str, *, workdir: str, encoder_steps: dict | None = None,
                  seed: int = 0) -> dict:
  """Space name -> None (a core space) or the path of its saved SL/SSL Encoder.

  Encoders are trained on the real source's images (SL with its labels) and saved once in
  `workdir/encoders/<kind>-<real>-steps<steps>-seed<seed>` (reused when present); the key holds
  what the encoder depends on, so other settings never reuse it. 'sl' is left out, with a
  one-line warning, when the real source has no labels. Process 0 writes; the others wait.
  """
  import jax
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
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f'encoder {path}')
    out[n] = path
  return out


def store_dir(workdir: str, gm: GMData, space: str, encoder: str | None = None) -> str:
  """WORKDIR/artifacts/<gm name>/<space> (an encoder space: the encoder's folder name)."""
  return os.path.join(workdir, 'artifacts', _safe(gm.name),
                      space if encoder is None else os.path.basename(os.path.normpath(encoder)))


def artifact_store(gm: GMData, space: str, workdir: str, *, encoder: str | None = None,
                   artifact_kwargs: dict | None = None):
  """The complete artifact store of (gm, gm.real, space): `fingerprinting.compute_artifacts`
  runs first (it returns at once for a complete store of the same configuration, resumes a
  partial one and refuses one of another configuration)."""
  from fpjax import artifact_io
  from fpjax import fingerprinting
  d = store_dir(workdir, gm, space, encoder)
  kwargs = dict(artifact_kwargs or {})
  if encoder is not None:
    kwargs['encoder'] = encoder
  t0 = time.time()
  fresh = not artifact_io.is_complete(d)
  fingerprinting.compute_artifacts(gm.real, gm.path, d, space=space, **kwargs)
  store = artifact_io.ArtifactStore.open(d)
  logging.info('artifacts of %s in %s: %s store %s (%d rows) in %.1fs', gm.name, space,
               'computed' if fresh else 'reused', d, store.num_rows, time.time() - t0)
  return store


@dataclasses.dataclass
class Features:
  """What the tables read for one GM dataset: its rows (the stores' rows, one per image that
  was read; bad files skipped by compute_artifacts are absent everywhere), their labels, the
  artifact stores per space and the images of the same rows for the baselines."""
  gm: GMData
  labels: np.ndarray               # int32 [N]
  stores: dict                     # space -> ArtifactStore (rows aligned)
  images: object                   # SourceImages of the same rows

  @property
  def num_rows(self) -> int:
    return len(self.labels)

  def artifacts(self, space) -> RowSubset:
    return RowSubset(self.stores[space].artifact)


def open_features(gm: GMData, encoders: dict, workdir: str, *,
                  artifact_kwargs: dict | None = None) -> Features:
  """Computes (or reuses) one store per space and checks they hold the same rows."""
  stores = {s: artifact_store(gm, s, workdir, encoder=e, artifact_kwargs=artifact_kwargs)
            for s, e in encoders.items()}
  if not stores:
    return Features(gm, gm.source.labels.astype(np.int32), {}, SourceImages(gm.source))
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
                  SourceImages(gm.source, files))


# ----------------------------------------------------------------------------- classifiers

def _make_classifier(kind: str, cfg: dict):
  from fpjax.attribution import Attributor, LinearProbe
  if kind == 'probe':
    return LinearProbe(**cfg.get('probe', {}))
  if kind == 'attributor':
    return Attributor(cfg.get('attributor_preset', 'quick'), **cfg.get('attributor', {}))
  raise UserInputError(f'unknown classifier {kind!r}; expected one of {CLASSIFIERS}')


def fit_and_score(make, x_train, y_train, x_test, y_test, seeds) -> dict:
  """Fits a fresh model per seed; returns per-seed accuracies and seed-0 predictions.

  x_train / x_test may be lazy (`RowSubset`): the model reads them in slices.
  """
  accs, pred0 = [], None
  for s in seeds:
    model = make(s)
    # The classifiers take the seed at fit; a baseline took it at construction.
    model.fit(x_train, y_train, seed=s) if _takes_seed(model) else model.fit(x_train, y_train)
    pred = apply_in_slices(model.predict, x_test)
    accs.append(metrics.accuracy(y_test, pred))
    if pred0 is None:
      pred0, model0 = pred, model
  mean, std = metrics.mean_std(accs)
  return {'accuracies': accs, 'accuracy_mean': mean, 'accuracy_std': std, 'pred': pred0,
          'model': model0}


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


# ----------------------------------------------------------------------------- Table 1

def table1(feats: Features, *, seeds=(0, 1, 2), baselines=None, classifiers=CLASSIFIERS,
           split_seed: int = 0, cfg: dict | None = None, baseline_cfg: dict | None = None) -> dict:
  """Attribution accuracy and FDR of every baseline and ManiFPT space on one GM dataset.

  Returns {'rows', 'train_mask', 'predictions' {(method, space, classifier): seed-0
  predictions on the validation split}}.
  """
  from fpjax.baselines import BASELINES
  cfg = cfg or {}
  baselines = _check_baselines(baselines)
  gm, labels = feats.gm, feats.labels
  k = len(gm.class_names)
  train = metrics.split_per_class(labels, 0.7, split_seed)
  tr, va = np.flatnonzero(train), np.flatnonzero(~train)
  y_tr, y_va = labels[tr], labels[va]
  rows, preds = [], {}
  prog = progress.Progress(len(feats.stores) * (1 + len(classifiers)) + len(baselines),
                           unit='steps', desc=f'Table 1 ({gm.name})', log_every_s=0)
  for sname in feats.stores:
    t0 = time.time()
    x = feats.artifacts(sname)
    x_tr, x_va = x.take(tr), x.take(va)
    fdr = streamed_fdr(x_va, y_va, k)
    prog.update(1, note=f'{sname} artifacts {x.shape[1:]}, FDR in {time.time() - t0:.1f}s')
    for kind in classifiers:
      t0 = time.time()
      r = fit_and_score(lambda s, kind=kind: _make_classifier(kind, cfg), x_tr, y_tr, x_va, y_va,
                        seeds)
      preds[('ManiFPT', sname, kind)] = r['pred']
      rows.append(make_row(table='1', method='ManiFPT', space=sname, classifier=kind,
                           dataset=gm.name, accuracy_mean=r['accuracy_mean'],
                           accuracy_std=r['accuracy_std'], accuracies=r['accuracies'],
                           num_seeds=len(seeds), fdr=fdr, num_train=len(tr), num_test=len(va),
                           seconds=time.time() - t0))
      prog.update(1, note=f'ManiFPT {sname} {kind}: {100 * r["accuracy_mean"]:.1f} ± '
                f'{100 * r["accuracy_std"]:.1f}%')
  images = RowSubset(feats.images)
  for b in baselines:
    t0 = time.time()
    bcfg = (baseline_cfg or {}).get(b, {})
    im_va = images.take(va)
    r = fit_and_score(lambda s, b=b: BASELINES[b](seed=s, **bcfg), images.take(tr), y_tr,
                      im_va, y_va, seeds)
    preds[(b, None, 'own')] = r['pred']
    rows.append(make_row(table='1', method=b, classifier='own', dataset=gm.name,
                         accuracy_mean=r['accuracy_mean'], accuracy_std=r['accuracy_std'],
                         accuracies=r['accuracies'], num_seeds=len(seeds),
                         fdr=streamed_fdr(im_va, y_va, k, fn=r['model'].features),
                         num_train=len(tr), num_test=len(va), seconds=time.time() - t0))
    prog.update(1, note=f'{b}: {100 * r["accuracy_mean"]:.1f} ± {100 * r["accuracy_std"]:.1f}%')
  return {'rows': rows, 'train_mask': train, 'predictions': preds}


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


def table2(src: Features, tgt: Features, *, seeds=(0, 1, 2), baselines=(),
           classifiers=CLASSIFIERS, cfg: dict | None = None,
           baseline_cfg: dict | None = None) -> list:
  """Train on every image of `src`, test on every image of `tgt` (models matched by name).

  Both sides must have stores of the same spaces (ManiFPT rows) from the same encoders.
  """
  from fpjax.baselines import BASELINES
  cfg = cfg or {}
  baselines = _check_baselines(baselines)
  common, (rs, ys), (rt, yt) = _common_rows(src, tgt)
  dataset = f'{src.gm.name} -> {tgt.gm.name}'
  spaces = [s for s in src.stores if s in tgt.stores]
  rows = []
  prog = progress.Progress(len(spaces) * len(classifiers) + len(baselines), unit='steps',
                           desc=f'Table 2 ({dataset})', log_every_s=0)
  for sname in spaces:
    a_src = src.artifacts(sname).take(rs)
    a_tgt = tgt.artifacts(sname).take(rt)
    fdr = streamed_fdr(a_tgt, yt, len(common))
    for kind in classifiers:
      t0 = time.time()
      r = fit_and_score(lambda s, kind=kind: _make_classifier(kind, cfg), a_src, ys, a_tgt, yt,
                        seeds)
      rows.append(make_row(table='2', method='ManiFPT', space=sname, classifier=kind,
                           dataset=dataset, accuracy_mean=r['accuracy_mean'],
                           accuracy_std=r['accuracy_std'], accuracies=r['accuracies'],
                           num_seeds=len(seeds), fdr=fdr, num_train=len(rs), num_test=len(rt),
                           seconds=time.time() - t0))
      prog.update(1, note=f'ManiFPT {sname} {kind}: {100 * r["accuracy_mean"]:.1f}%')
  for b in baselines:
    t0 = time.time()
    bcfg = (baseline_cfg or {}).get(b, {})
    r = fit_and_score(lambda s, b=b: BASELINES[b](seed=s, **bcfg),
                      RowSubset(src.images).take(rs), ys, RowSubset(tgt.images).take(rt), yt,
                      seeds)
    rows.append(make_row(table='2', method=b, classifier='own', dataset=dataset,
                         accuracy_mean=r['accuracy_mean'], accuracy_std=r['accuracy_std'],
                         accuracies=r['accuracies'], num_seeds=len(seeds),
                         num_train=len(rs), num_test=len(rt), seconds=time.time() - t0))
    prog.update(1, note=f'{b}: {100 * r["accuracy_mean"]:.1f}%')
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


def table3(feats: Features, *, pca_dim: int = 32, max_rows: int = 20000, seed: int = 0) -> list:
  """Per space: NMI between k-means clusters of the artifacts and each design knob, on a
  stratified sample of at most `max_rows` rows (all rows when there are fewer)."""
  gm = feats.gm
  if not gm.tags:
    raise ValueError(f'{gm.name}: Table 3 needs design-knob tags (a zoo with zoo.json)')
  from threadpoolctl import threadpool_limits
  sample = stratified_sample(feats.labels, max(1, max_rows // len(gm.class_names)), seed)
  rows = []
  for sname in feats.stores:
    t0 = time.time()
    art = feats.artifacts(sname)[sample]
    # One BLAS/OpenMP thread: next to JAX's own thread pool, sklearn's threads oversubscribe
    # the cores (measured 8x slower PCA on 2 busy cores) and gain nothing at this size.
    with threadpool_limits(1):
      x = cluster_features(art, pca_dim=pca_dim, seed=seed)
      del art
      nmi = knob_nmi(x, feats.labels[sample], gm.class_names, gm.tags, seed=seed)
    rows.append(make_row(table='3', method='ManiFPT', space=sname, dataset=gm.name, nmi=nmi,
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


def openset(feats: Features, train_mask, *, baselines=(), baseline_cfg=None, shots: int = 10,
            max_per_model: int = 500, seed: int = 0) -> list:
  """Leave-one-model-out AUROC and few-shot enrolment accuracy of each space's artifacts and
  of the fit-free baselines' features, on a stratified sample of at most `max_per_model` rows
  per model (the protocols compare every row with every prototype: held in RAM)."""
  from fpjax.attribution import openset as os_lib
  sample = stratified_sample(feats.labels, max_per_model, seed)
  y, train = feats.labels[sample], np.asarray(train_mask)[sample]
  sets = {('ManiFPT', s): (lambda s=s: feats.artifacts(s)[sample]) for s in feats.stores}
  images = RowSubset(feats.images).take(sample)
  for b, m in fit_free_baselines(baselines, baseline_cfg).items():
    sets[(b, None)] = lambda m=m: apply_in_slices(m.features, images)
  rows = []
  for (method, space), read in sets.items():
    x = read()
    au = os_lib.leave_one_model_out_auroc(x, y, seed=seed, train_mask=train)
    fs = os_lib.few_shot_accuracy(x, y, shots=shots, seed=seed, train_mask=train)
    rows.append(make_row(table='openset', method=method, space=space, classifier='prototype',
                         dataset=feats.gm.name, auroc=au['auroc'],
                         few_shot_accuracy=fs['accuracy'],
                         few_shot_new_model_accuracy=fs['new_model_accuracy'],
                         num_train=int(train.sum()), num_test=int((~train).sum())))
  return rows
