"""Passes over lazy rows, slice by slice: predictions, per-model moments and the FDR, without
holding a store's rows in RAM."""
from __future__ import annotations

import numpy as np

from fpjax.models.training import iter_slices
from fpjax.stats import fdr_from_moments, merge_moments

SLICE_ROWS = 4096                  # rows per read when streaming over a store


def apply_in_slices(fn, x, rows: int = SLICE_ROWS) -> np.ndarray:
  """np.concatenate of fn(x[a:b]) over slices (predictions, small feature vectors)."""
  parts = [np.asarray(fn(xs)) for _, xs in iter_slices(x, rows)]
  return np.concatenate(parts) if parts else np.zeros((0,))


def class_moments(x, labels, num_classes: int, fn=None, rows: int = SLICE_ROWS):
  """Per-class count [K], mean and population variance [K, D] (float64) of fn(x) rows,
  streamed slice by slice and merged with Chan et al.'s pairwise update (`merge_moments`)."""
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
      count[c], mean[c], m2[c] = merge_moments(count[c], mean[c], m2[c], nb, mb, m2b)
  var = m2 / np.maximum(count, 1.0)[:, None]
  return count, mean, var


def streamed_fdr(x, labels, num_classes: int, fn=None, rows: int = SLICE_ROWS) -> float:
  """trace(S_B)/trace(S_W) of fn(x) (`fpjax.stats.fdr_from_moments`), streamed over x."""
  return fdr_from_moments(*class_moments(x, labels, num_classes, fn, rows))
