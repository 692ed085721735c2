"""Train/validation splits and the inner-validation selection of the probe.

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
"""
from __future__ import annotations

import dataclasses

import numpy as np

from fpjax.errors import UserInputError
from fpjax.evals import metrics
from fpjax.evals.classifiers import SELECTION, make_probe, selection_options
from fpjax.models import training


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
  num_splits = check_num_splits(num_splits)
  labels = np.asarray(labels)
  out = []
  for i in range(num_splits):
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


def stratified_sample(labels, per_class: int, seed: int = 0) -> np.ndarray:
  """Sorted row indices: at most `per_class` rows of each class, chosen at random (seeded)."""
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  out = []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    out.append(idx if len(idx) <= per_class else rng.choice(idx, per_class, replace=False))
  return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)


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
  probe fits `split.inner_train` and stops early on `split.inner_val` (`make_probe`, module
  docstring). Coordinate-wise: len(keys) + len(l2) - 1 fits. cfg['selection'] overrides
  `SELECTION`, cfg['probe'] sets the probe's other options.
  """
  sel = selection_options(cfg)
  y = np.asarray(labels)[split.train]
  scores = {}
  stop = np.searchsorted(split.train, split.inner_val)  # positions in the training part

  def score(c):
    if c not in scores:
      probe = make_probe(cfg, c[1])
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


def choices_config(choices) -> list:
  """What tables.json records of the selection: one entry per (space, estimator, split)."""
  return [dict(space=s, estimator=n, split=i, key=c.key, l2=c.l2, epochs=c.epochs,
               inner_val_accuracy=c.inner_accuracy, fits=c.fits)
          for (s, n, i), c in choices.items()]


def split0_keys(feats, choices: dict | None) -> dict:
  """{(space, estimator): key} that Table 3 and the open set read of `feats` (a `Features`):
  the key split 0's selection chose (`table1`'s choices), else the estimator's default
  candidate."""
  return {(s, n): (choices[(s, n, 0)].key if choices and (s, n, 0) in choices
                   else feats.keys(n)[0])
          for s in feats.stores for n in feats.names(s)}
