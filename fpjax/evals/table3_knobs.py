"""Table 3: NMI between k-means clusters of the artifacts and each design knob of the zoo.

Per space and estimator (the key split 0's selection chose), on a stratified sample of at most
`max_rows` rows: artifacts are z-scored per coordinate, reduced by PCA to `pca_dim` dimensions,
and, for each design knob (the zoo's tags), clustered by k-means with k = number of distinct
values of the knob among the models it applies to (models tagged 'n/a' are left out for that
knob); NMI between the clusters and the knob values.
"""
from __future__ import annotations

import time

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits

from fpjax.evals import metrics
from fpjax.evals.features import Features
from fpjax.evals.splits import split0_keys, stratified_sample
from fpjax.report import make_row


def cluster_features(x, *, pca_dim: int = 32, seed: int = 0) -> np.ndarray:
  """z-score per coordinate (constant -> 0), then PCA to min(pca_dim, D, N - 1) dimensions."""
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


def table3(feats: Features, *, choices: dict | None = None, pca_dim: int = 32,
           max_rows: int = 20000, seed: int = 0) -> list:
  """Per space and estimator (`split0_keys`): NMI between k-means clusters of the artifacts and
  each design knob, on a stratified sample of at most `max_rows` rows (all rows when fewer)."""
  gm = feats.gm
  if not gm.tags:
    raise ValueError(f'{gm.name}: Table 3 needs design-knob tags (a zoo with zoo.json)')
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
