"""Result rows: the one definition of a row (`make_row`), its labels, and tables.json.

tables.json = {"version": 2, "config": {...}, "rows": [row, ...], "timings": {...}}. Every row
has every key of ROW_FIELDS, null where it does not apply (`make_row` builds rows: the one
definition of a result row; an unknown field is an error):

  table          '1' | '2' | '3' | 'openset' | 'diff'
  method         'ManiFPT', a baseline's name, or (diff rows) the comparison's label 'A vs B'
  space          ManiFPT space ('rgb', 'freq', 'dct', 'sl', 'ssl'), null for baselines
  estimator      manifold estimator of the artifact ('nn', 'knn_mean', 'local_pca', 'kernel',
                 'learned'), 'input' for the control rows (the same classifier on φ(x) itself,
                 no projection), null for baselines and rows without one
  classifier     'probe' | 'attributor' | 'own' (a baseline's) | 'prototype' (open set) | null
  dataset        GM dataset name ('train -> test' in Table 2)
  accuracy_mean, accuracy_std   fractions in [0, 1]: mean and std (ddof 0) over the splits
  accuracies     per split
  num_splits     train/validation splits (each with its own classifier seed)
  estimator_params  per split, the estimator key chosen on the inner validation split of that
                 split's training part (e.g. 'knn_mean-k10'); null when nothing was chosen
  probe_l2       per split, the probe's l2 chosen the same way; null when not chosen
  fdr            trace(S_B)/trace(S_W) of the validation features
  nmi            {knob: NMI or null} (Table 3)
  auroc, few_shot_accuracy, few_shot_new_model_accuracy   open set
  a, b           (diff rows) the labels (`row_label`) of the two rows compared
  diff_mean      (diff rows) accuracy of a minus accuracy of b, mean over the splits
  ci_low, ci_high  (diff rows) paired bootstrap 95 % percentile interval of diff_mean
                 (`metrics.paired_bootstrap`)
  significant    (diff rows) the interval excludes 0
  num_train, num_test, seconds
"""
from __future__ import annotations

import math

import numpy as np

from fpjax import fileio
from fpjax.estimators import CONTROL  # the control rows' estimator: the classifier on φ(x)


ROW_FIELDS = ('table', 'method', 'space', 'estimator', 'classifier', 'dataset', 'accuracy_mean',
              'accuracy_std', 'accuracies', 'num_splits', 'estimator_params', 'probe_l2', 'fdr',
              'nmi', 'auroc', 'few_shot_accuracy', 'few_shot_new_model_accuracy', 'a', 'b',
              'diff_mean', 'ci_low', 'ci_high', 'significant', 'num_train', 'num_test', 'seconds')
# Fields that measure the run, not its result: two runs of the same configuration differ only here.
TIMING_FIELDS = ('seconds',)


def make_row(**fields) -> dict:
  """One machine-readable result row: every ROW_FIELDS key (None where not applicable)."""
  unknown = set(fields) - set(ROW_FIELDS)
  if unknown:
    raise ValueError(f'unknown row fields {sorted(unknown)}; known: {ROW_FIELDS}')
  return {f: fields.get(f) for f in ROW_FIELDS}


def is_control(r) -> bool:
  """An input-control row: the classifier on φ(x) itself, without the projection."""
  return r.get('estimator') == CONTROL


def is_baseline(r) -> bool:
  """A prior method's row (no ManiFPT space)."""
  return r.get('space') is None and not is_control(r)


def row_label(r) -> str:
  """The one name of an accuracy row, in tables, the discussion and the diff rows' `a` / `b`:
  'ManiFPT RGB knn_mean (probe)', 'RGB input (probe)' (a control), 'Yu19' (a baseline)."""
  if is_baseline(r):
    return r['method']
  space = r['space'].upper()
  if is_control(r):
    name = f'{space} input'
  else:
    name = f'ManiFPT {space}' + (f' {r["estimator"]}' if r.get('estimator') else '')
  return name + (f' ({r["classifier"]})' if r.get('classifier') in ('probe', 'attributor') else '')


def nmi_columns(rows) -> list:
  """Table 3 columns: the knobs in the order the rows name them (the zoo's tags), 'model' last."""
  cols = list(dict.fromkeys(c for r in rows for c in r['nmi'] if c != 'model'))
  return cols + ['model']

def jsonable(x):
  if isinstance(x, dict):
    return {str(k): jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [jsonable(v) for v in x]
  if isinstance(x, np.bool_):
    return bool(x)
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (np.floating, float)):
    return None if not math.isfinite(float(x)) else float(x)  # JSON has no NaN
  if isinstance(x, np.ndarray):
    return jsonable(x.tolist())
  return x


def write_json(path: str, rows, config: dict | None = None, timings: dict | None = None) -> dict:
  obj = jsonable({'version': 2, 'config': config or {}, 'rows': list(rows),
                   'timings': timings or {}})
  for i, r in enumerate(obj['rows']):
    missing = set(ROW_FIELDS) - set(r)
    if missing:
      raise ValueError(f'tables.json row {i} lacks fields {sorted(missing)}')
  fileio.save_json(path, obj, sort_keys=False)
  return obj
