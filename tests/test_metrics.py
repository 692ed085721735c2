"""metrics.paired_bootstrap against scipy's paired percentile bootstrap and exact cases."""
import inspect

import numpy as np
import pytest
from scipy import stats

from fpjax.evals import metrics


def _predictions(rng, n, acc_a, acc_b, classes=5):
  """Labels and two correlated classifiers' predictions (a right on a superset-ish of b)."""
  y = rng.integers(0, classes, n)
  u = rng.random(n)          # shared difficulty: paired predictions are correlated
  wrong = (y + 1) % classes
  pa = np.where(u < acc_a, y, wrong)
  pb = np.where(u + 0.1 * rng.random(n) < acc_b, y, wrong)
  return y, pa, pb


def _scipy_interval(y, pa, pb, num_resamples, seed):
  ca, cb = (pa == y).astype(np.float64), (pb == y).astype(np.float64)
  kw = ({'rng': np.random.default_rng(seed)}
        if 'rng' in inspect.signature(stats.bootstrap).parameters
        else {'random_state': np.random.default_rng(seed)})
  r = stats.bootstrap((ca, cb), lambda a, b, axis=-1: a.mean(axis) - b.mean(axis), paired=True,
                      method='percentile', n_resamples=num_resamples, vectorized=True, **kw)
  return r.confidence_interval.low, r.confidence_interval.high


def test_one_split_matches_scipy_paired_percentile_bootstrap():
  rng = np.random.default_rng(0)
  y, pa, pb = _predictions(rng, 4000, 0.8, 0.76)
  out = metrics.paired_bootstrap([y], [pa], [pb], num_resamples=4000, seed=1)
  low, high = _scipy_interval(y, pa, pb, 4000, seed=2)
  assert out['diff_mean'] == pytest.approx(np.mean(pa == y) - np.mean(pb == y), abs=1e-12)
  # Both are Monte Carlo estimates of the same percentiles: equal within a small fraction of
  # the interval's width (the width itself, ~0.02 here, is a sixth of the statistic's spread).
  width = high - low
  assert width > 0.005
  assert out['ci_low'] == pytest.approx(low, abs=0.08 * width)
  assert out['ci_high'] == pytest.approx(high, abs=0.08 * width)
  assert out['significant'] == (low > 0 or high < 0)


def test_several_splits_match_an_index_resampling_reference():
  """The statistic is the mean over splits; each split is resampled on its own."""
  rng = np.random.default_rng(3)
  splits = [_predictions(rng, n, 0.7, 0.69) for n in (900, 1100, 1000)]
  ys, pas, pbs = zip(*splits)
  out = metrics.paired_bootstrap(ys, pas, pbs, num_resamples=4000, seed=0)
  ref_rng = np.random.default_rng(5)
  stat = np.zeros(4000)
  for y, pa, pb in splits:   # literal row-index resampling, float64
    d = (pa == y).astype(np.float64) - (pb == y)
    stat += d[ref_rng.integers(0, len(d), (4000, len(d)))].mean(1)
  stat /= len(splits)
  low, high = np.percentile(stat, [2.5, 97.5])
  width = high - low
  assert out['diff_mean'] == pytest.approx(
      np.mean([np.mean(pa == y) - np.mean(pb == y) for y, pa, pb in splits]), abs=1e-12)
  assert out['ci_low'] == pytest.approx(low, abs=0.08 * width)
  assert out['ci_high'] == pytest.approx(high, abs=0.08 * width)


def test_exact_cases():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 4, 200)
  p = rng.integers(0, 4, 200)
  same = metrics.paired_bootstrap([y, y[:50]], [p, p[:50]], [p, p[:50]])
  assert same == {'diff_mean': 0.0, 'ci_low': 0.0, 'ci_high': 0.0, 'significant': False}
  right, wrong = y, (y + 1) % 4
  best = metrics.paired_bootstrap([y], [right], [wrong])
  assert best == {'diff_mean': 1.0, 'ci_low': 1.0, 'ci_high': 1.0, 'significant': True}
  worst = metrics.paired_bootstrap([y], [wrong], [right])
  assert worst['diff_mean'] == -1.0 and worst['significant']


def test_deterministic_for_a_seed_and_paired():
  rng = np.random.default_rng(1)
  y, pa, pb = _predictions(rng, 500, 0.8, 0.7)
  a = metrics.paired_bootstrap([y], [pa], [pb], seed=7)
  assert a == metrics.paired_bootstrap([y], [pa], [pb], seed=7)
  assert a != metrics.paired_bootstrap([y], [pa], [pb], seed=8)
  # Paired: a constant shift shared by both methods' mistakes does not widen the interval as
  # much as unpaired resampling would. Here b = a except on 5 rows: the interval stays narrow.
  pb2 = pa.copy()
  pb2[np.flatnonzero(pa == y)[:5]] = (y[np.flatnonzero(pa == y)[:5]] + 1) % 5
  near = metrics.paired_bootstrap([y], [pa], [pb2], num_resamples=4000)
  assert near['diff_mean'] == pytest.approx(5 / 500)
  # Unpaired resampling of two 80 % accuracies would give a width near 0.1.
  assert near['ci_high'] - near['ci_low'] < 0.03 and near['ci_low'] >= 0.0


def test_bad_input_names_the_split():
  y = np.zeros(10, int)
  with pytest.raises(ValueError, match='split 1'):
    metrics.paired_bootstrap([y, y], [y, y], [y, y[:5]])
  with pytest.raises(ValueError):                # unequal split counts
    metrics.paired_bootstrap([y, y], [y], [y, y])
  with pytest.raises(ValueError):                # no split
    metrics.paired_bootstrap([], [], [])
