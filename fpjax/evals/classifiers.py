"""The classifiers on artifacts (the linear probe, the attributor) and the baselines, built from
a run's options, and the options of the probe's inner-validation selection.

`cfg` (evaluate's `cfg`): 'probe' / 'attributor' keyword arguments, 'attributor_preset', and
'selection' overriding `SELECTION`.
"""
from __future__ import annotations

import numpy as np

from fpjax.attribution import Attributor, LinearProbe
from fpjax.baselines import BASELINES
from fpjax.configs import defaults
from fpjax.errors import UserInputError
from fpjax.evals.streamed import apply_in_slices

CLASSIFIERS = defaults.CLASSIFIERS
# The inner-validation selection of the linear probe: l2 candidates (the first is the default),
# early stopping's epoch budget and patience, and `inner_fraction`, the inner-validation share
# of the training part; `cfg['selection']` overrides them.
SELECTION = defaults.SELECTION


def selection_options(cfg: dict | None, base: dict | None = None) -> dict:
  """`base` (None: SELECTION, the library default) overridden by cfg['selection'], checked."""
  base = SELECTION if base is None else base
  given = dict((cfg or {}).get('selection', {}))
  unknown = set(given) - set(base)
  if unknown:
    raise UserInputError(f'selection: unknown options {sorted(unknown)}; known: '
                         f'{sorted(base)}')
  sel = dict(base, **given)
  sel['l2'] = tuple(sel['l2'])
  if not sel['l2']:
    raise UserInputError('selection: l2 needs at least one candidate')
  for name in ('max_epochs', 'patience'):
    if not isinstance(sel[name], (int, np.integer)) or sel[name] < 1:
      raise UserInputError(f'selection: {name} must be an integer >= 1, got {sel[name]!r}')
  return sel


def make_probe(cfg: dict | None, l2: float | None = None, epochs: int | None = None):
  """A LinearProbe of cfg['probe'] at l2 (default: the first candidate).

  epochs given: exactly that many epochs (the reported fit, with the epoch count chosen on the
  inner split). None: early stopping on held-out rows of its own training rows (fit's
  `val_rows`, e.g. a split's `inner_val`; else `selection['inner_fraction']` per model drawn
  with the fit's seed), at most `max_epochs`, `patience` epochs without improvement;
  `history_['best_epoch']` is the epoch it kept.
  """
  kw = dict((cfg or {}).get('probe', {}))
  fixed = {'l2', 'epochs', 'val_fraction', 'patience'} & set(kw)
  if fixed:
    raise UserInputError(f'probe options {sorted(fixed)} are chosen on the inner validation '
                         "split: set cfg['selection'] instead")
  sel = selection_options(cfg)
  l2 = sel['l2'][0] if l2 is None else l2
  if epochs is not None:
    return LinearProbe(l2=l2, epochs=int(epochs), val_fraction=0.0, patience=None, **kw)
  return LinearProbe(l2=l2, epochs=sel['max_epochs'], val_fraction=sel['inner_fraction'],
                     patience=sel['patience'], **kw)


def make_classifier(kind: str, cfg: dict | None, space: str | None = None,
                    classifiers=CLASSIFIERS):
  """A fresh classifier; the attributor is told the embedding space (spectra get an MLP)."""
  cfg = cfg or {}
  if kind == 'probe':
    return make_probe(cfg)
  if kind == 'attributor':
    return Attributor(cfg.get('attributor_preset', 'quick'), space=space,
                      **cfg.get('attributor', {}))
  raise UserInputError(f'unknown classifier {kind!r}; expected one of {classifiers}')


def check_classifiers(classifiers, known=CLASSIFIERS) -> list:
  """The classifiers asked, each among `known`, else a UserInputError."""
  for kind in classifiers:
    if kind not in known:
      raise UserInputError(f'unknown classifier {kind!r}; expected one of {known}')
  return list(classifiers)


def check_baselines(baselines) -> list:
  """The baseline names asked (None: every one), each a known baseline."""
  baselines = list(BASELINES) if baselines is None else list(baselines)
  for b in baselines:
    if b not in BASELINES:
      raise UserInputError(f'unknown baseline {b!r}; expected some of {sorted(BASELINES)}')
  return baselines


def make_baseline(name: str, seed: int = 0, baseline_cfg: dict | None = None):
  """Baseline `name` with its options in baseline_cfg[name] (defaults: its quick settings)."""
  return BASELINES[name](seed=seed, **(baseline_cfg or {}).get(name, {}))


def fit_predict(model, x_train, y_train, x_test, seed: int) -> np.ndarray:
  """Fits `model` (seeded) and predicts x_test; x_train / x_test may be lazy (`RowSubset`)."""
  # The classifiers take the seed at fit; a baseline took it at construction.
  if isinstance(model, (Attributor, LinearProbe)):
    model.fit(x_train, y_train, seed=seed)
  else:
    model.fit(x_train, y_train)
  return apply_in_slices(model.predict, x_test)
