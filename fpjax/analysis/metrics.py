"""Metrics of the evaluation: accuracy over seeds, FDR, confusion matrix, NMI, the split.

One implementation each: the Fisher discriminant ratio is `fpjax.stats.fisher_discriminant_ratio`
(trace(S_B) / trace(S_W)), NMI is scikit-learn's `normalized_mutual_info_score` (arithmetic mean
normalisation, its default).
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import normalized_mutual_info_score

from fpjax.stats import fisher_discriminant_ratio

__all__ = ['accuracy', 'mean_std', 'fisher_discriminant_ratio', 'confusion_matrix', 'nmi',
           'split_per_class']


def accuracy(y_true, y_pred) -> float:
  """Fraction of predictions equal to the truth."""
  y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
  if y_true.shape != y_pred.shape or y_true.ndim != 1 or y_true.size == 0:
    raise ValueError(f'accuracy: y_true {y_true.shape} and y_pred {y_pred.shape} must be equal, '
                     'non-empty 1-D shapes')
  return float(np.mean(y_true == y_pred))


def mean_std(values) -> tuple[float, float]:
  """Mean and population std (ddof=0) of per-seed values; std is 0 for one seed."""
  v = np.asarray(values, np.float64)
  if v.ndim != 1 or v.size == 0:
    raise ValueError(f'mean_std: need a non-empty list of per-seed values, got shape {v.shape}')
  return float(v.mean()), float(v.std())


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
  """int64 [K, K]: row = true model, column = predicted model."""
  y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
  if y_true.shape != y_pred.shape:
    raise ValueError(f'confusion_matrix: y_true {y_true.shape} vs y_pred {y_pred.shape}')
  for name, y in (('y_true', y_true), ('y_pred', y_pred)):
    if y.size and (y.min() < 0 or y.max() >= num_classes):
      raise ValueError(f'confusion_matrix: {name} has labels outside [0, {num_classes})')
  cm = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(cm, (y_true, y_pred), 1)
  return cm


def nmi(labels_a, labels_b) -> float:
  """Normalized mutual information (sklearn, arithmetic normalisation) of two labelings."""
  a, b = np.asarray(labels_a), np.asarray(labels_b)
  if a.shape != b.shape or a.ndim != 1:
    raise ValueError(f'nmi: labelings must be equal 1-D shapes, got {a.shape} and {b.shape}')
  return float(normalized_mutual_info_score(a, b))


def split_per_class(labels, train_fraction: float = 0.7, seed: int = 0) -> np.ndarray:
  """Boolean train mask: round(train_fraction * n_c) random samples of each class c (paper: 70/30).

  The same mask is used by every method, so all rows of Table 1 see the same images.
  """
  labels = np.asarray(labels)
  if not 0.0 < train_fraction < 1.0:
    raise ValueError(f'train_fraction must be in (0, 1), got {train_fraction}')
  rng = np.random.default_rng(seed)
  mask = np.zeros(labels.shape[0], bool)
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    n_train = int(round(train_fraction * idx.size))
    if n_train < 1 or n_train >= idx.size:
      raise ValueError(f'class {c.item()!r} has {idx.size} samples: too few for a '
                       f'{train_fraction:.0%}/{1 - train_fraction:.0%} split')
    mask[rng.permutation(idx)[:n_train]] = True
  return mask
