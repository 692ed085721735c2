"""Metrics of the evaluation: accuracy over splits, FDR, confusion matrix, NMI, the split, and
the paired bootstrap interval of a difference in accuracy.

One implementation each: the Fisher discriminant ratio is `fpjax.stats.fisher_discriminant_ratio`
(trace(S_B) / trace(S_W)), NMI is scikit-learn's `normalized_mutual_info_score` (arithmetic mean
normalisation, its default).
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import normalized_mutual_info_score

from fpjax.models import training
from fpjax.stats import fisher_discriminant_ratio

__all__ = ['accuracy', 'mean_std', 'fisher_discriminant_ratio', 'confusion_matrix', 'nmi',
           'split_per_class', 'paired_bootstrap']


def accuracy(y_true, y_pred) -> float:
  """Fraction of predictions equal to the truth."""
  y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
  if y_true.shape != y_pred.shape or y_true.ndim != 1 or y_true.size == 0:
    raise ValueError(f'accuracy: y_true {y_true.shape} and y_pred {y_pred.shape} must be equal, '
                     'non-empty 1-D shapes')
  return float(np.mean(y_true == y_pred))


def mean_std(values) -> tuple[float, float]:
  """Mean and population std (ddof=0) of per-split values; std is 0 for one split."""
  v = np.asarray(values, np.float64)
  if v.ndim != 1 or v.size == 0:
    raise ValueError(f'mean_std: need a non-empty list of per-split values, got shape {v.shape}')
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

  The same mask is used by every method, so all rows of Table 1 see the same images. The rows
  are `fpjax.models.training.stratified_split`'s second part (strict: a class too small to
  split is a ValueError).
  """
  labels = np.asarray(labels)
  if not 0.0 < train_fraction < 1.0:
    raise ValueError(f'train_fraction must be in (0, 1), got {train_fraction}')
  _, train = training.stratified_split(labels, train_fraction, np.random.default_rng(seed),
                                       strict=True)
  mask = np.zeros(labels.shape[0], bool)
  mask[train] = True
  return mask


def paired_bootstrap(y_true_per_split, pred_a_per_split, pred_b_per_split, *,
                     num_resamples: int = 2000, seed: int = 0) -> dict:
  """Paired bootstrap 95 % interval of acc_a - acc_b, the mean over splits.

  Each argument is a list with one 1-D array per train/validation split: that split's validation
  labels and the two methods' predictions of the same rows. The statistic is

      diff = mean over splits s of (acc_a(s) - acc_b(s)),

  and one bootstrap resample draws, in every split independently, as many of that split's
  validation rows with replacement as it has, the same rows for a and b (paired: what the
  methods share, the difficulty of each image, cancels). The interval is the 2.5 and 97.5
  percentiles of `num_resamples` resampled statistics (percentile method).

  Returns {'diff_mean': the statistic on the rows themselves, 'ci_low', 'ci_high',
  'significant'}. `significant` is True when the interval excludes 0: a difference of this sign
  is then unlikely to come from which images happened to be in the validation splits. It does
  not cover other sources of variation beyond the splits given (each split brings its own
  classifier seed), nor several comparisons made at once (no multiple-testing correction).

  Vectorised and exact: a row enters the statistic only through d = correct_a - correct_b in
  {-1, 0, +1}, so resampling n rows is drawing how many of them have d = +1, -1 or 0, a
  multinomial with the rows' proportions (the same distribution as drawing row indices), in
  O(num_resamples) memory whatever the split size. Deterministic for a seed.
  """
  # Not scipy.stats.bootstrap: it resamples one set of observations, so splits of unequal
  # sizes cannot each be resampled on their own (a stratified bootstrap), and it would hold
  # num_resamples x rows indices per batch; for one split it gives the same interval
  # (tests/test_metrics.py compares the two).
  ys, pas, pbs = list(y_true_per_split), list(pred_a_per_split), list(pred_b_per_split)
  if not ys or not len(ys) == len(pas) == len(pbs):
    raise ValueError(f'paired_bootstrap: need the same number (>= 1) of splits for y_true '
                     f'({len(ys)}), pred_a ({len(pas)}) and pred_b ({len(pbs)})')
  if int(num_resamples) < 1:
    raise ValueError(f'paired_bootstrap: num_resamples must be >= 1, got {num_resamples}')
  rng = np.random.default_rng(seed)
  observed = np.empty(len(ys))
  resampled = np.zeros(int(num_resamples))
  for s, (y, pa, pb) in enumerate(zip(ys, pas, pbs)):
    y, pa, pb = np.asarray(y), np.asarray(pa), np.asarray(pb)
    if y.ndim != 1 or y.size == 0 or pa.shape != y.shape or pb.shape != y.shape:
      raise ValueError(f'paired_bootstrap: split {s}: y_true {y.shape}, pred_a {pa.shape} and '
                       f'pred_b {pb.shape} must be equal, non-empty 1-D shapes')
    d = (pa == y).astype(np.int64) - (pb == y).astype(np.int64)
    n = d.size
    counts = np.array([np.sum(d == 1), np.sum(d == -1), np.sum(d == 0)])
    observed[s] = (counts[0] - counts[1]) / n
    draws = rng.multinomial(n, counts / n, size=int(num_resamples))  # [R, 3]
    resampled += (draws[:, 0] - draws[:, 1]) / n
  resampled /= len(ys)
  low, high = np.percentile(resampled, [2.5, 97.5])
  return {'diff_mean': float(observed.mean()), 'ci_low': float(low), 'ci_high': float(high),
          'significant': bool(low > 0 or high < 0)}
