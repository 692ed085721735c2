"""The paper's evaluation protocols (Tables 1-3) and the open-set / few-shot extension.

Every function here computes and returns plain rows (dicts); writing files is `report.py`'s job.

Table 1  every baseline and every ManiFPT space on one GM dataset; 70/30 split per model
         (`metrics.split_per_class`, the same mask for every method); ManiFPT features are the
         artifacts `Manifold.from_images(real.train_images, space).project(images).artifact`,
         classified by the optax `LinearProbe` and by the paper's `Attributor`; accuracy is
         mean ± std over classifier seeds; FDR is computed on the validation split (artifacts
         for ManiFPT, `.features()` of the seed-0 fit for baselines).
Table 2  cross-dataset: train on all images of one zoo, test on all images of the same recipes
         trained on another real dataset; each side's artifacts are measured against its own
         real manifold, in the same embedding (SL/SSL encoders are shared by both sides).
Table 3  per space, artifacts are z-scored per coordinate, reduced by PCA to `pca_dim`
         dimensions, and, for each design knob, clustered by k-means with k = number of distinct
         values of the knob among the models it applies to (models tagged 'n/a' are left out
         for that knob); NMI between the clusters and the knob values of the images.
Open set leave-one-model-out AUROC and few-shot enrolment accuracy of nearest-prototype
         attribution (`fpjax.attribution.openset`), enrolment = the Table 1 train split.
"""
from __future__ import annotations

import dataclasses
import os
import time

from absl import logging
import numpy as np

from fpjax import progress
from fpjax.analysis import metrics

KNOBS = ('upsampling', 'normalization', 'nonlinearity', 'loss', 'family', 'sampler')
MANIFPT_SPACES = ('rgb', 'freq', 'dct', 'sl', 'ssl')
CLASSIFIERS = ('probe', 'attributor')


@dataclasses.dataclass
class GMDataset:
  """Generated images, one class per generative model, and the real data they imitate."""
  name: str
  images: np.ndarray               # uint8 [N, H, W, C]
  labels: np.ndarray               # int32 [N], index into class_names
  class_names: list
  real: object                     # fpjax.data.RealData: its train_images are the bank
  tags: dict | None = None         # model name -> {knob: value} (zoo.json), None for folders


def load_gm(gm: str, real=None, *, name: str | None = None) -> GMDataset:
  """Reads a zoo workdir (has zoo.json) or an image-folder root `root/<model>/*.png`.

  `real` is a real-dataset name (`fpjax.data.load_real`) or a RealData; for a zoo it defaults
  to the zoo's own real dataset, and a different one is an error (artifacts would be measured
  against the wrong manifold).
  """
  from fpjax import data as data_lib
  from fpjax import zoo as zoo_lib
  if not os.path.isdir(gm):
    raise ValueError(f'--gm {gm!r}: not a directory (expected a zoo workdir or an '
                     'image-folder root)')
  tags = None
  if os.path.exists(os.path.join(gm, 'zoo.json')):
    images, meta = zoo_lib.load_zoo(gm)
    tags = {m['name']: dict(m['tags']) for m in meta['models']}
    real_name = real if isinstance(real, str) or real is None else real.name
    if real_name is not None and real_name != meta['real']:
      raise ValueError(f'{gm}/zoo.json: the zoo was trained on real {meta["real"]!r}, '
                       f'not {real_name!r}')
    real = real if real is not None and not isinstance(real, str) else meta['real']
    name = name or f'zoo-{meta["preset"]}-{meta["real"]}'
  else:
    if real is None:
      raise ValueError(f'{gm} has no zoo.json: give the real dataset (--real) it imitates')
    images = data_lib.load_image_folder(gm)
    name = name or os.path.basename(os.path.normpath(gm))
  if isinstance(real, str):
    real = data_lib.load_real(real)
  if images.images.shape[1:3] != real.train_images.shape[1:3]:
    raise ValueError(f'{gm}: images are {images.images.shape[1:]} but real {real.name!r} is '
                     f'{real.train_images.shape[1:]}; the manifold needs the same size')
  if images.images.shape[3] != real.train_images.shape[3]:
    raise ValueError(f'{gm}: images have {images.images.shape[3]} channels, real {real.name!r} '
                     f'{real.train_images.shape[3]}')
  return GMDataset(name, images.images, images.labels.astype(np.int32), list(images.class_names),
                   real, tags)


# ----------------------------------------------------------------------------- spaces, artifacts

def make_spaces(names, real, *, workdir: str | None = None, encoder_steps: dict | None = None,
                seed: int = 0) -> dict:
  """Space name -> what `Manifold.from_images` takes: 'rgb'|'freq'|'dct' or a trained Encoder.

  SL/SSL encoders are trained on `real.train_images` (SL with its digit labels) and cached in
  `workdir/encoders/<kind>-<real>-steps<steps>-seed<seed>` (reloaded when present).
  """
  from fpjax.models import encoders
  out = {}
  for n in names:
    if n in ('rgb', 'freq', 'dct'):
      out[n] = n
    elif n in ('sl', 'ssl'):
      steps = (encoder_steps or {}).get(n)
      # The cache key holds what the encoder depends on, so other settings never reuse it.
      key = f'{n}-{real.name}-steps{steps or "preset"}-seed{seed}'
      path = os.path.join(workdir, 'encoders', key) if workdir else None
      if path and os.path.exists(os.path.join(path, 'config.json')):
        out[n] = encoders.load_encoder(path)
        logging.info('encoder %s: reloaded from %s', n, path)
        continue
      t0 = time.time()
      out[n] = encoders.train_encoder(n, real.train_images,
                                      real.train_labels if n == 'sl' else None,
                                      steps=steps, seed=seed)
      logging.info('encoder %s: trained on %d real images in %.1fs', n, len(real.train_images),
                   time.time() - t0)
      if path:
        import jax
        if jax.process_index() == 0:
          out[n].save(path)
    else:
      raise ValueError(f'unknown space {n!r}; expected some of {MANIFPT_SPACES}')
  return out


def compute_artifacts(space, real_images, images) -> tuple[np.ndarray, np.ndarray]:
  """(artifact [N, *emb], distance [N]) of `images` against the manifold of `real_images`."""
  from fpjax.manifold import Manifold
  proj = Manifold.from_images(real_images, space).project(images)
  return np.asarray(proj.artifact, np.float32), np.asarray(proj.distance, np.float32)[:, 0]


# ----------------------------------------------------------------------------- classifiers

def _make_classifier(kind: str, cfg: dict):
  from fpjax.attribution import Attributor, LinearProbe
  if kind == 'probe':
    return LinearProbe(**cfg.get('probe', {}))
  if kind == 'attributor':
    return Attributor(cfg.get('attributor_preset', 'quick'), **cfg.get('attributor', {}))
  raise ValueError(f'unknown classifier {kind!r}; expected one of {CLASSIFIERS}')


def fit_and_score(make, x_train, y_train, x_test, y_test, seeds) -> dict:
  """Fits a fresh model per seed; returns per-seed accuracies and seed-0 predictions."""
  accs, pred0 = [], None
  for s in seeds:
    model = make(s)
    model.fit(x_train, y_train, seed=s) if _takes_seed(model) else model.fit(x_train, y_train)
    pred = np.asarray(model.predict(x_test))
    accs.append(metrics.accuracy(y_test, pred))
    if pred0 is None:
      pred0, model0 = pred, model
  mean, std = metrics.mean_std(accs)
  return {'accuracies': accs, 'accuracy_mean': mean, 'accuracy_std': std, 'pred': pred0,
          'model': model0}


def _takes_seed(model) -> bool:
  from fpjax.attribution import Attributor, LinearProbe
  return isinstance(model, (Attributor, LinearProbe))


def _row(**kw) -> dict:
  """One machine-readable result row; every row has the same keys (None where not applicable)."""
  row = dict(table=None, method=None, space=None, classifier=None, dataset=None,
             accuracy_mean=None, accuracy_std=None, accuracies=None, num_seeds=None, fdr=None,
             nmi=None, auroc=None, few_shot_accuracy=None, few_shot_new_model_accuracy=None,
             num_train=None, num_test=None, seconds=None)
  unknown = set(kw) - set(row)
  if unknown:
    raise ValueError(f'unknown row fields {sorted(unknown)}')
  row.update(kw)
  return row


# ----------------------------------------------------------------------------- Table 1

def table1(gm: GMDataset, spaces: dict, *, seeds=(0, 1, 2), baselines=None, classifiers=CLASSIFIERS,
           split_seed: int = 0, cfg: dict | None = None, baseline_cfg: dict | None = None) -> dict:
  """Attribution accuracy and FDR of every baseline and ManiFPT space on one GM dataset.

  Returns {'rows', 'train_mask', 'artifacts' {space: (artifact, distance)}, 'predictions'
  {(method, space, classifier): seed-0 predictions on the validation split}}.
  """
  from fpjax.baselines import BASELINES
  cfg = cfg or {}
  baselines = list(BASELINES) if baselines is None else list(baselines)
  for b in baselines:
    if b not in BASELINES:
      raise ValueError(f'unknown baseline {b!r}; expected some of {sorted(BASELINES)}')
  train = metrics.split_per_class(gm.labels, 0.7, split_seed)
  y_tr, y_va = gm.labels[train], gm.labels[~train]
  rows, arts, preds = [], {}, {}
  prog = progress.Progress(len(spaces) * (1 + len(classifiers)) + len(baselines), unit='steps',
                           desc=f'Table 1 ({gm.name})', log_every_s=0)
  for sname, space in spaces.items():
    t0 = time.time()
    art, dist = compute_artifacts(space, gm.real.train_images, gm.images)
    arts[sname] = (art, dist)
    fdr = metrics.fisher_discriminant_ratio(art[~train], y_va)
    prog.update(1, note=f'{sname} artifacts {art.shape[1:]} in {time.time() - t0:.1f}s')
    for kind in classifiers:
      t0 = time.time()
      r = fit_and_score(lambda s, kind=kind: _make_classifier(kind, cfg), art[train], y_tr,
                        art[~train], y_va, seeds)
      preds[('ManiFPT', sname, kind)] = r['pred']
      rows.append(_row(table='1', method='ManiFPT', space=sname, classifier=kind, dataset=gm.name,
                       accuracy_mean=r['accuracy_mean'], accuracy_std=r['accuracy_std'],
                       accuracies=r['accuracies'], num_seeds=len(seeds), fdr=fdr,
                       num_train=int(train.sum()), num_test=int((~train).sum()),
                       seconds=time.time() - t0))
      prog.update(1, note=f'ManiFPT {sname} {kind}: {100 * r["accuracy_mean"]:.1f} ± '
                f'{100 * r["accuracy_std"]:.1f}%')
  for b in baselines:
    t0 = time.time()
    bcfg = (baseline_cfg or {}).get(b, {})
    r = fit_and_score(lambda s, b=b: BASELINES[b](seed=s, **bcfg), gm.images[train], y_tr,
                      gm.images[~train], y_va, seeds)
    feats = np.asarray(r['model'].features(gm.images[~train]))
    preds[(b, None, 'own')] = r['pred']
    rows.append(_row(table='1', method=b, space=None, classifier='own', dataset=gm.name,
                     accuracy_mean=r['accuracy_mean'], accuracy_std=r['accuracy_std'],
                     accuracies=r['accuracies'], num_seeds=len(seeds),
                     fdr=metrics.fisher_discriminant_ratio(feats, y_va),
                     num_train=int(train.sum()), num_test=int((~train).sum()),
                     seconds=time.time() - t0))
    prog.update(1, note=f'{b}: {100 * r["accuracy_mean"]:.1f} ± {100 * r["accuracy_std"]:.1f}%')
  return {'rows': rows, 'train_mask': train, 'artifacts': arts, 'predictions': preds}


# ----------------------------------------------------------------------------- Table 2

def _common_classes(src: GMDataset, tgt: GMDataset):
  common = [c for c in src.class_names if c in set(tgt.class_names)]
  if len(common) < 2:
    raise ValueError(f'cross-dataset needs >= 2 models present in both {src.name} and {tgt.name}; '
                     f'common: {common}')
  def relabel(d):
    idx = {c: i for i, c in enumerate(common)}
    names = np.asarray(d.class_names, object)[d.labels]
    keep = np.array([n in idx for n in names])
    return keep, np.array([idx[n] for n in names[keep]], np.int32)
  return common, relabel(src), relabel(tgt)


def table2(src: GMDataset, tgt: GMDataset, spaces: dict, *, seeds=(0, 1, 2), baselines=(),
           classifiers=CLASSIFIERS, cfg: dict | None = None,
           baseline_cfg: dict | None = None) -> list:
  """Train on every image of `src`, test on every image of `tgt` (models matched by name)."""
  from fpjax.baselines import BASELINES
  cfg = cfg or {}
  baselines = list(BASELINES) if baselines is None else list(baselines)
  common, (ks, ys), (kt, yt) = _common_classes(src, tgt)
  dataset = f'{src.name} -> {tgt.name}'
  rows = []
  prog = progress.Progress(len(spaces) * len(classifiers) + len(baselines), unit='steps',
                           desc=f'Table 2 ({dataset})', log_every_s=0)
  for sname, space in spaces.items():
    a_src, _ = compute_artifacts(space, src.real.train_images, src.images[ks])
    a_tgt, _ = compute_artifacts(space, tgt.real.train_images, tgt.images[kt])
    for kind in classifiers:
      t0 = time.time()
      r = fit_and_score(lambda s, kind=kind: _make_classifier(kind, cfg), a_src, ys, a_tgt, yt,
                        seeds)
      rows.append(_row(table='2', method='ManiFPT', space=sname, classifier=kind, dataset=dataset,
                       accuracy_mean=r['accuracy_mean'], accuracy_std=r['accuracy_std'],
                       accuracies=r['accuracies'], num_seeds=len(seeds),
                       fdr=metrics.fisher_discriminant_ratio(a_tgt, yt),
                       num_train=int(ks.sum()), num_test=int(kt.sum()), seconds=time.time() - t0))
      prog.update(1, note=f'ManiFPT {sname} {kind}: {100 * r["accuracy_mean"]:.1f}%')
  for b in baselines:
    t0 = time.time()
    bcfg = (baseline_cfg or {}).get(b, {})
    r = fit_and_score(lambda s, b=b: BASELINES[b](seed=s, **bcfg), src.images[ks], ys,
                      tgt.images[kt], yt, seeds)
    rows.append(_row(table='2', method=b, classifier='own', dataset=dataset,
                     accuracy_mean=r['accuracy_mean'], accuracy_std=r['accuracy_std'],
                     accuracies=r['accuracies'], num_seeds=len(seeds),
                     num_train=int(ks.sum()), num_test=int(kt.sum()), seconds=time.time() - t0))
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


def knob_nmi(features, labels, class_names, tags, *, knobs=KNOBS, seed: int = 0) -> dict:
  """{knob: NMI or None}: k-means (k = distinct knob values) vs each image's knob value.

  Images of models whose knob is 'n/a' are left out; a knob with < 2 values there gives None.
  'model' is added: k-means with k = number of models vs model identity.
  """
  from sklearn.cluster import KMeans
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


def table3(gm: GMDataset, artifacts: dict, *, knobs=KNOBS, pca_dim: int = 32,
           seed: int = 0) -> list:
  """Per space: NMI between k-means clusters of the artifacts and each design knob."""
  if not gm.tags:
    raise ValueError(f'{gm.name}: Table 3 needs design-knob tags (a zoo with zoo.json)')
  from threadpoolctl import threadpool_limits
  rows = []
  for sname, (art, _) in artifacts.items():
    t0 = time.time()
    # One BLAS/OpenMP thread: next to JAX's own thread pool, sklearn's threads oversubscribe
    # the cores (measured 8x slower PCA on 2 busy cores) and gain nothing at this size.
    with threadpool_limits(1):
      feats = cluster_features(art, pca_dim=pca_dim, seed=seed)
      nmi = knob_nmi(feats, gm.labels, gm.class_names, gm.tags, knobs=knobs, seed=seed)
    rows.append(_row(table='3', method='ManiFPT', space=sname, dataset=gm.name, nmi=nmi,
                     seconds=time.time() - t0))
  return rows


# ----------------------------------------------------------------------------- open set

def openset(gm: GMDataset, features: dict, train_mask, *, shots: int = 10, seed: int = 0) -> list:
  """Leave-one-model-out AUROC and few-shot enrolment accuracy per feature set {name: x}."""
  from fpjax.attribution import openset as os_lib
  rows = []
  for name, x in features.items():
    method, space = ('ManiFPT', name) if name in MANIFPT_SPACES else (name, None)
    au = os_lib.leave_one_model_out_auroc(x, gm.labels, seed=seed, train_mask=train_mask)
    fs = os_lib.few_shot_accuracy(x, gm.labels, shots=shots, seed=seed, train_mask=train_mask)
    rows.append(_row(table='openset', method=method, space=space, classifier='prototype',
                     dataset=gm.name, auroc=au['auroc'], few_shot_accuracy=fs['accuracy'],
                     few_shot_new_model_accuracy=fs['new_model_accuracy'],
                     num_train=int(np.sum(train_mask)),
                     num_test=int(np.sum(~np.asarray(train_mask)))))
  return rows
