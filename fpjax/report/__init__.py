"""Writers: tables.md / tables.json, figures (matplotlib Agg) and report.md.

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

import json
import math
import os

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


def _jsonable(x):
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.bool_):
    return bool(x)
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (np.floating, float)):
    return None if not math.isfinite(float(x)) else float(x)  # JSON has no NaN
  if isinstance(x, np.ndarray):
    return _jsonable(x.tolist())
  return x


def write_json(path: str, rows, config: dict | None = None, timings: dict | None = None) -> dict:
  obj = _jsonable({'version': 2, 'config': config or {}, 'rows': list(rows),
                   'timings': timings or {}})
  for i, r in enumerate(obj['rows']):
    missing = set(ROW_FIELDS) - set(r)
    if missing:
      raise ValueError(f'tables.json row {i} lacks fields {sorted(missing)}')
  fileio.save_json(path, obj, sort_keys=False)
  return obj


# ----------------------------------------------------------------------------- markdown tables

def _pct(m, s=None):
  if m is None:
    return '—'
  return f'{100 * m:.1f}' if s is None else f'{100 * m:.1f} ± {100 * s:.1f}'


def _num(x, fmt='{:.3f}'):
  return '—' if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)


def _points(x) -> str:
  """A difference of accuracies (fraction) as signed percentage points."""
  return '—' if x is None else f'{100 * x:+.1f}'


def _interval(r) -> str:
  return f'[{_points(r["ci_low"])}, {_points(r["ci_high"])}]'


def _per_split(values) -> str:
  """One value when every split chose the same, else 'a/b/c' in split order."""
  return values[0] if len(set(values)) == 1 else '/'.join(values)


def _l2(v) -> str:
  return '—' if v is None else '0' if v == 0 else np.format_float_scientific(v, trim='-',
                                                                           exp_digits=1)


def chosen_settings(r) -> str:
  """The hyperparameters chosen on the inner validation split, compactly: 'k10, l2 1e-3', or
  'k10/k20/k10' when the splits chose differently; '—' when nothing was chosen."""
  parts = []
  est = r.get('estimator') or ''
  if r.get('estimator_params'):
    # 'knn_mean-k10' -> 'k10': the estimator is in its own column; a key without parameters
    # ('nn', 'learned', 'input') adds nothing.
    keys = [str(k)[len(est) + 1:] if str(k).startswith(est + '-') else
            ('' if str(k) == est else str(k)) for k in r['estimator_params']]
    if any(keys):
      parts.append(_per_split(keys))
  if r.get('probe_l2'):
    parts.append('l2 ' + _per_split([_l2(v) for v in r['probe_l2']]))
  return ', '.join(parts) or '—'


def _estimator_cell(r) -> str:
  return 'input (control)' if is_control(r) else (r.get('estimator') or '—')


def _features_name(r) -> str:
  """Name column of Table 2 and the open set; the estimator has its own column there."""
  if is_baseline(r):
    return r['method']
  return r['space'].upper() if is_control(r) else f'ManiFPT {r["space"].upper()}'


def _has_estimator(rows) -> bool:
  return any(r.get('estimator') is not None for r in rows)


def _grouped(rows) -> list:
  """Space x classifier groups in the order they first appear; in each, the input control
  first, then the estimators in their order: what each estimator is compared with sits above it."""
  keys = list(dict.fromkeys((r['space'], r['classifier']) for r in rows))
  out = []
  for k in keys:
    group = [r for r in rows if (r['space'], r['classifier']) == k]
    out += [r for r in group if is_control(r)] + [r for r in group if not is_control(r)]
  return out


def _table1(t1) -> list:
  r0 = t1[0]
  splits = f'{r0["num_splits"]} ' if r0.get('num_splits') else ''
  out = [f'### Table 1 — attribution accuracy (%) and FDR on {r0["dataset"]}',
         f'{splits}train/validation splits ({r0["num_train"]} train / {r0["num_test"]} '
         'validation images each), each with its own classifier seed; mean ± std over the '
         'splits. *Chosen per split*: the estimator\'s hyperparameters and the probe\'s l2, '
         'picked on an inner validation split of that split\'s training part (one value when '
         'every split agrees). *input (control)*: the same classifier on φ(x) itself, without '
         'the projection. FDR = trace(S_B)/trace(S_W) on the validation features.', '']
  acc = [r for r in t1 if not is_baseline(r)]
  if acc:
    out += ['| space | classifier | estimator | chosen per split | accuracy | FDR |',
            '|---|---|---|---|---|---|']
    out += [f'| {r["space"].upper()} | {r["classifier"]} | {_estimator_cell(r)} | '
            f'{chosen_settings(r)} | {_pct(r["accuracy_mean"], r["accuracy_std"])} | '
            f'{_num(r["fdr"], "{:.4g}")} |' for r in _grouped(acc)]
    out.append('')
  base = [r for r in t1 if is_baseline(r)]
  if base:
    out += [f'Baselines (prior methods, their own classifiers, the same splits) on '
            f'{r0["dataset"]}:', '', '| baseline | accuracy | FDR |', '|---|---|---|']
    out += [f'| {r["method"]} | {_pct(r["accuracy_mean"], r["accuracy_std"])} | '
            f'{_num(r["fdr"], "{:.4g}")} |' for r in base]
    out.append('')
  return out


def _diff_table(diffs) -> list:
  many = len({r['dataset'] for r in diffs}) > 1
  out = ['### Paired differences — 95 % bootstrap intervals',
         'Δ = accuracy of A − accuracy of B in points, mean over the splits. Interval: paired '
         'bootstrap of each split\'s validation images, the same images for A and B '
         '(`metrics.paired_bootstrap`, percentile). **\\*** = significant: the interval '
         'excludes 0, so the sign of Δ is unlikely to come from which images were in the '
         'validation splits (no correction for making several comparisons).', '',
         ('| dataset ' if many else '') + '| A | B | Δ (points) | 95 % interval | significant |',
         ('|---' if many else '') + '|---|---|---|---|---|']
  for r in diffs:
    mark = ' \\*' if r['significant'] else ''
    out.append((f'| {r["dataset"]} ' if many else '') + f'| {r["a"]} | {r["b"]} | '
               f'{_points(r["diff_mean"])}{mark} | {_interval(r)} | '
               f'{"yes" if r["significant"] else "no"} |')
  out.append('')
  return out


def _table2(t2) -> list:
  est = _has_estimator(t2)
  dss = list(dict.fromkeys(r['dataset'] for r in t2))
  out = ['### Table 2 — cross-dataset accuracy (%), train → test', '',
         '| method | ' + ('estimator | ' if est else '') + 'classifier | ' + ' | '.join(dss)
         + ' |', '|---|' + ('---|' if est else '') + '---|' + '---|' * len(dss)]
  key = lambda r: (r['method'], r['space'], r.get('estimator'), r['classifier'])
  for k in dict.fromkeys(key(r) for r in t2):
    cells = []
    for d in dss:
      m = [r for r in t2 if key(r) == k and r['dataset'] == d]
      cells.append(_pct(m[0]['accuracy_mean'], m[0]['accuracy_std']) if m else '—')
    r0 = next(r for r in t2 if key(r) == k)
    out.append(f'| {_features_name(r0)} | ' + (f'{_estimator_cell(r0)} | ' if est else '')
               + f'{k[3]} | ' + ' | '.join(cells) + ' |')
  out.append('')
  return out


def _table3(t3) -> list:
  est = _has_estimator(t3)
  cols = [c for c in nmi_columns(t3) if any(r['nmi'].get(c) is not None for r in t3)]
  out = ['### Table 3 — NMI between k-means clusters of artifacts and design knobs', '',
         '| space | ' + ('estimator | ' if est else '') + ' | '.join(cols) + ' |',
         '|---|' + ('---|' if est else '') + '---|' * len(cols)]
  for r in t3:
    out.append(f'| {r["space"].upper()} | ' + (f'{_estimator_cell(r)} | ' if est else '')
               + ' | '.join(_num(r['nmi'].get(c)) for c in cols) + ' |')
  avg = [np.mean([r['nmi'][c] for r in t3 if r['nmi'].get(c) is not None]) for c in cols]
  out.append('| average | ' + ('| ' if est else '') + ' | '.join(_num(float(a)) for a in avg)
             + ' |')
  out.append('')
  return out


def _table_openset(to) -> list:
  est = _has_estimator(to)
  out = ['### Open set — leave-one-model-out AUROC and few-shot enrolment (nearest prototype)',
         '', '| features | ' + ('estimator | ' if est else '')
         + 'AUROC | few-shot accuracy (all models) | few-shot accuracy (new model) |',
         '|---|' + ('---|' if est else '') + '---|---|---|']
  out += [f'| {_features_name(r)} | ' + (f'{_estimator_cell(r)} | ' if est else '')
          + f'{_num(r["auroc"])} | {_pct(r["few_shot_accuracy"])} | '
          f'{_pct(r["few_shot_new_model_accuracy"])} |' for r in to]
  out.append('')
  return out


def markdown_tables(rows) -> str:
  """Table 1 (space x estimator x classifier, input controls next to the estimators, then the
  baselines), the paired differences, Tables 2, 3 and the open set, as GitHub markdown
  (accuracies in %). Tables without rows are left out."""
  by_table = lambda t: [r for r in rows if r['table'] == t]
  out = []
  for t, render in (('1', _table1), ('diff', _diff_table), ('2', _table2), ('3', _table3),
                    ('openset', _table_openset)):
    if by_table(t):
      out += render(by_table(t))
  return '\n'.join(out)


# ----------------------------------------------------------------------------- figures

def _plt():
  import matplotlib
  matplotlib.use('Agg')  # headless: binaries and tests have no display
  import matplotlib.pyplot as plt
  return plt


def plot_confusions(path, confusions: dict, class_names) -> str:
  """confusions: {title: [K, K] counts}; rows normalised to fractions."""
  plt = _plt()
  n = len(confusions)
  cols = min(n, 3)
  rows = int(math.ceil(n / cols))
  k = len(class_names)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols + 1, 4.0 * rows + 1), squeeze=False)
  for ax in axes.flat[n:]:
    ax.axis('off')
  for ax, (title, cm) in zip(axes.flat, confusions.items()):
    frac = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(frac, vmin=0, vmax=1, cmap='viridis')
    ax.set_title(f'{title}\nacc {np.trace(cm) / max(cm.sum(), 1):.2f}', fontsize=9)
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(range(k), fontsize=6)
    ax.set_yticklabels([f'{i} {c[:22]}' for i, c in enumerate(class_names)], fontsize=5)
    ax.set_xlabel('predicted', fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_embeddings(path, features: dict, labels, class_names, *, seed: int = 0) -> str:
  """2-D PCA of each feature set (z-scored), one colour per model."""
  from sklearn.decomposition import PCA
  plt = _plt()
  n = len(features)
  cols = min(n, 3)
  rows = int(math.ceil(n / cols))
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.0 * rows + 0.8), squeeze=False)
  for ax in axes.flat[n:]:
    ax.axis('off')
  cmap = plt.get_cmap('tab20')
  for ax, (title, x) in zip(axes.flat, features.items()):
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    std = x.std(0)
    z = (x - x.mean(0)) / np.where(std > 1e-12, std, 1.0)
    e = PCA(2, random_state=seed).fit_transform(z)
    for c in range(len(class_names)):
      m = np.asarray(labels) == c
      ax.scatter(e[m, 0], e[m, 1], s=3, color=cmap(c % 20), label=class_names[c])
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
  handles, names = axes.flat[0].get_legend_handles_labels()
  fig.legend(handles, names, loc='lower center', ncol=min(5, len(names)), fontsize=6,
             markerscale=3)
  fig.tight_layout(rect=(0, 0.08, 1, 1))
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_mean_artifacts(path, stats: dict, class_names, title: str) -> str:
  """Mean artifact per model (first channel), one symmetric colour scale for all models."""
  plt = _plt()
  mean = np.asarray(stats['mean'])[..., 0]
  k = len(class_names)
  cols = min(k, 5)
  rows = int(math.ceil(k / cols))
  lim = float(np.abs(mean).max()) or 1.0
  fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows + 0.4), squeeze=False)
  for ax in axes.flat:
    ax.axis('off')
  for i, ax in enumerate(axes.flat[:k]):
    ax.imshow(mean[i], cmap='RdBu_r', vmin=-lim, vmax=lim)
    ax.set_title(class_names[i][:26], fontsize=6)
  fig.suptitle(f'{title} (colour range ±{lim:.3g})', fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_spectra(path, stats: dict, class_names, title: str) -> str:
  """Left: radially averaged power spectrum of the artifacts per model; right: 2-D spectra."""
  plt = _plt()
  prof = np.asarray(stats['radial_profile'])
  spec = np.asarray(stats['power_spectrum']).mean(1)  # channel mean, [L, H, W]
  k = len(class_names)
  cols = min(k, 5)
  rows = int(math.ceil(k / cols))
  fig = plt.figure(figsize=(5 + 1.8 * cols, max(4.0, 1.9 * rows)))
  gs = fig.add_gridspec(rows, cols + 3)
  ax = fig.add_subplot(gs[:, :3])
  cmap = plt.get_cmap('tab20')
  for i in range(k):
    ax.semilogy(np.maximum(prof[i], 1e-12), color=cmap(i % 20), lw=1, label=class_names[i][:22])
  ax.set_xlabel('spatial frequency (radius)')
  ax.set_ylabel('mean power of the artifact')
  ax.legend(fontsize=5)
  ax.set_title(title, fontsize=9)
  for i in range(k):
    a = fig.add_subplot(gs[i // cols, 3 + i % cols])
    a.imshow(np.log10(spec[i] + 1e-12), cmap='magma')
    a.set_title(class_names[i][:18], fontsize=5)
    a.axis('off')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


# ----------------------------------------------------------------------------- report.md

def _best(rows):
  rows = [r for r in rows if r.get('accuracy_mean') is not None]
  return max(rows, key=lambda r: r['accuracy_mean']) if rows else None


def _acc(r) -> str:
  return f'{_pct(r["accuracy_mean"], r["accuracy_std"])} %'


def _verdict(d) -> str:
  return ('significant' if d['significant'] else
          'not significant (the interval includes 0)')


def _find_diff(diffs, a, b):
  """The diff row comparing rows a and b, oriented as a - b (swapped and negated if needed)."""
  la, lb = row_label(a), row_label(b)
  for d in diffs:
    if (d['a'], d['b']) == (la, lb):
      return d
    if (d['a'], d['b']) == (lb, la):
      return dict(d, a=la, b=lb, diff_mean=-d['diff_mean'], ci_low=-d['ci_high'],
                  ci_high=-d['ci_low'])
  return None


def _versus(d) -> str:
  """' Paired 95 % interval of the difference ...' or a note that none was computed."""
  if d is None:
    return ' No paired interval was computed for this pair.'
  return f' Paired 95 % interval of {d["a"]} − {d["b"]}: {_interval(d)} points, {_verdict(d)}.'


def _control_lines(mani, controls, diffs) -> list:
  """Each estimator row against the input control of its space and classifier."""
  out, tally = [], {'above': 0, 'below': 0, 'neither': 0}
  for r in mani:
    c = next((c for c in controls if (c['space'], c['classifier']) ==
              (r['space'], r['classifier'])), None)
    if c is None:
      continue
    d = _find_diff(diffs, r, c)
    gap = r['accuracy_mean'] - c['accuracy_mean']
    if d is None:
      word = 'above' if gap > 0 else 'below' if gap < 0 else 'equal to'
      out.append(f'  - {row_label(r)} {_acc(r)} is {word} its control {_acc(c)} '
                 f'({_points(gap)} points; no paired interval computed).')
      continue
    if d['significant']:
      side = 'above' if d['diff_mean'] > 0 else 'below'
      tally[side] += 1
      text = ('beats its input control' if side == 'above' else
              'is below its input control')
    else:
      tally['neither'] += 1
      text = 'does not differ significantly from its input control'
    out.append(f'  - {row_label(r)} {text}: {_points(d["diff_mean"])} points, 95 % interval '
               f'{_interval(d)}.')
  if not out:
    return []
  head = '- Manifold estimators vs their input controls (the same classifier on φ(x) itself):'
  if sum(tally.values()):
    head += (f' of {sum(tally.values())} rows with a paired interval, significantly above '
             f'their control: {tally["above"]}; significantly below: {tally["below"]}; '
             f'not significantly different: {tally["neither"]}.')
  return [head] + out


def _runner_up_lines(mani, diffs) -> list:
  """The best estimator against the runner-up: overall (the best ManiFPT row vs the best row
  of another estimator) and per space and classifier, from the diff rows that compare them."""
  named = [r for r in mani if r.get('estimator') not in (None, 'best')]
  bm = _best(mani)
  out = []
  others = [r for r in named if bm and r['estimator'] != bm.get('estimator')]
  if bm and others:
    ru = _best(others)
    d = _find_diff(diffs, bm, ru)
    if d is not None:
      word = ('leads' if d['diff_mean'] > 0 else 'trails' if d['diff_mean'] < 0 else 'ties')
      sig = ('significantly' if d['significant'] else
             'not significantly (the interval includes 0)')
      out.append(f'- Best estimator vs the runner-up: {row_label(bm)} {word} the best row of '
                 f'another estimator, {row_label(ru)} {_acc(ru)}, by '
                 f'{_points(abs(d["diff_mean"]))[1:]} points, {sig}; 95 % interval '
                 f'{_interval(d)}.')
  per = []
  for group in dict.fromkeys((r['space'], r['classifier']) for r in named):
    rr = sorted((r for r in named if (r['space'], r['classifier']) == group),
                key=lambda r: -r['accuracy_mean'])
    d = _find_diff(diffs, rr[0], rr[1]) if len(rr) > 1 else None
    if d is not None:
      per.append(f'{group[0].upper()} {group[1]}: {rr[0]["estimator"]} − '
                 f'{rr[1]["estimator"]} {_points(d["diff_mean"])} {_interval(d)}'
                 + (' \\*' if d['significant'] else ''))
  if per:
    out.append('- Best estimator minus the runner-up per space and classifier (points, 95 % '
               'interval, \\* significant): ' + '; '.join(per) + '.')
  return out


def _table1_lines(t1, diffs) -> list:
  out = []
  t1 = [r for r in t1 if r.get('accuracy_mean') is not None]
  mani = [r for r in t1 if not is_baseline(r) and not is_control(r)]
  controls = [r for r in t1 if is_control(r)]
  base = [r for r in t1 if is_baseline(r)]
  bm, bb, bc = _best(mani), _best(base), _best(controls)
  n = (bm or bb or {}).get('num_splits')
  over = f' (mean ± std over {n} splits)' if n else ''
  if bm:
    out.append(f'- Table 1: the best ManiFPT row is **{row_label(bm)}**, {_acc(bm)}{over}.')
    ests = list(dict.fromkeys(r['estimator'] for r in mani if r.get('estimator')))
    if len(ests) > 1:
      out.append('- Best row per estimator: ' + '; '.join(
          f'{e}: {row_label(b)} {_acc(b)}' for e in ests
          for b in [_best([r for r in mani if r.get('estimator') == e])]) + '.')
    spaces = list(dict.fromkeys(r['space'] for r in mani))
    if len(spaces) > 1:
      out.append('- Best row per space: ' + '; '.join(
          f'{s.upper()}: {row_label(b)} {_acc(b)}' for s in spaces
          for b in [_best([r for r in mani if r['space'] == s])]) + '.')
  out += _runner_up_lines(mani, diffs)
  if bm and bb:
    gap = bm['accuracy_mean'] - bb['accuracy_mean']
    if gap < 0:
      out.append(f'- **A baseline beats ManiFPT**: {bb["method"]} {_acc(bb)} is '
                 f'{_points(-gap)[1:]} points above the best ManiFPT row {row_label(bm)} '
                 f'{_acc(bm)}.' + _versus(_find_diff(diffs, bb, bm)))
    else:
      out.append(f'- The best ManiFPT row leads the best baseline, {bb["method"]} {_acc(bb)}, '
                 f'by {_points(gap)[1:]} points.' + _versus(_find_diff(diffs, bm, bb)))
  elif bb:
    out.append(f'- Table 1: the best baseline is {bb["method"]}, {_acc(bb)}.')
  if bm and bc and bc['accuracy_mean'] > bm['accuracy_mean']:
    out.append(f'- **An input control beats every manifold estimator**: {row_label(bc)} '
               f'{_acc(bc)} vs the best ManiFPT row {row_label(bm)} {_acc(bm)}.'
               + _versus(_find_diff(diffs, bc, bm)))
  out += _control_lines(mani, controls, diffs)
  worse = [p['space'].upper() + (f' {p["estimator"]}' if p.get('estimator') else '') for p in mani
           if p['classifier'] == 'probe' for a in mani
           if a['classifier'] == 'attributor' and a['space'] == p['space']
           and a.get('estimator') == p.get('estimator')
           and a['accuracy_mean'] < p['accuracy_mean'] - 2 * max(a['accuracy_std'],
                                                                 p['accuracy_std'], 0.005)]
  if worse:
    out.append(f'- The attributor is below the linear probe, by more than twice the larger '
               f'split std, on {", ".join(worse)}.')
  fd = [r for r in t1 if r['fdr'] is not None and math.isfinite(r['fdr'])]
  if fd:
    top = max(fd, key=lambda r: r['fdr'])
    out.append(f'- Highest FDR: {row_label(top)} ({top["fdr"]:.4g}). FDR compares feature '
               'spaces of different dimension and scale only roughly (trace ratio, no '
               'whitening); it need not rank methods like accuracy does.')
  return out


def discussion(rows) -> list[str]:
  """Plain statements read off the numbers (no claim the numbers do not support): which
  estimator and space attribute best, whether each estimator beats its input control and
  whether a baseline wins, with the paired intervals of the 'diff' rows where they exist."""
  out = []
  diffs = [r for r in rows if r['table'] == 'diff']
  t1 = [r for r in rows if r['table'] == '1']
  if t1:
    out += _table1_lines(t1, [d for d in diffs if d['dataset'] == t1[0]['dataset']])
  t2 = [r for r in rows if r['table'] == '2']
  for ds in dict.fromkeys(r['dataset'] for r in t2):
    rr = [r for r in t2 if r['dataset'] == ds]
    b = _best(rr)
    line = f'- Table 2, {ds}: best {row_label(b)} {_acc(b)}'
    bm2 = _best([r for r in rr if not is_baseline(r) and not is_control(r)])
    if is_baseline(b):
      line = f'- Table 2, {ds}: **a baseline wins**, {row_label(b)} {_acc(b)}'
    if bm2 and bm2 is not b:
      line += f'; best ManiFPT row {row_label(bm2)} {_acc(bm2)}'
    out.append(line + '.')
  shown = {id(d) for d in diffs if t1 and d['dataset'] == t1[0]['dataset']}
  rest = [d for d in diffs if id(d) not in shown]
  if rest:
    out.append('- Other paired differences: ' + '; '.join(
        f'{d["a"]} − {d["b"]} on {d["dataset"]}: {_points(d["diff_mean"])} points '
        f'{_interval(d)}, {"significant" if d["significant"] else "not significant"}'
        for d in rest) + '.')
  t3 = [r for r in rows if r['table'] == '3']
  if t3:
    knobs = [c for c in nmi_columns(t3)[:-1] if any(r['nmi'].get(c) is not None for r in t3)]
    avg = {c: float(np.mean([r['nmi'][c] for r in t3 if r['nmi'].get(c) is not None]))
           for c in knobs}
    order = sorted(avg, key=avg.get, reverse=True)
    out.append('- Table 3: average NMI over its rows, highest first: ' + ', '.join(
        f'{c} {avg[c]:.3f}' for c in order) + '. (The paper finds upsampling and loss align '
        'best.) A knob whose values follow the family across the zoo\'s models (e.g. the '
        'loss) cannot be told apart from the family here.')
  to = [r for r in rows if r['table'] == 'openset' and r['auroc'] is not None]
  if to:
    b = max(to, key=lambda r: r['auroc'])
    name = _features_name(b) + (f' {_estimator_cell(b)}' if b.get('estimator') else '')
    won = ' — **a baseline wins**' if is_baseline(b) else ''
    out.append(f'- Open set: best leave-one-model-out AUROC {b["auroc"]:.3f} ({name}){won}; '
               'few-shot enrolment accuracies are in the last table. Baselines appear there '
               'only when their features need no training (hand-crafted ones, Marra19): a '
               'learned extractor would have seen the left-out model.')
  return out


def _bullets(obj, indent: str = '') -> list:
  """A config value as markdown bullets: dicts nest, lists of scalars join on one line."""
  out = []
  for k, v in obj.items():
    if isinstance(v, dict) and v:
      out += [f'{indent}- {k}:'] + _bullets(v, indent + '  ')
    elif isinstance(v, (list, tuple)) and all(not isinstance(x, (dict, list, tuple)) for x in v):
      out.append(f'{indent}- {k}: ' + (', '.join(f'`{x}`' for x in v) or '(none)'))
    else:
      out.append(f'{indent}- {k}: `{json.dumps(_jsonable(v))}`')
  return out


# zoo.json fields of the realism measures (fpjax/zoo/quality.py): per model under 'quality',
# the reference figures of real digits and uniform noise under 'reference'.
REALISM_COLUMNS = (('distance_ratio', 'distance to real / noise\'s', '{:.2f}'),
                   ('recognisable', 'recognisable', 'pct'),
                   ('recognisable_vs_real', 'recognisable / real digits\'', 'pct'),
                   ('frechet_distance', 'Fréchet distance (SL)', '{:.3g}'),
                   ('diversity', 'diversity', '{:.2f}'))


def _realism(q: dict, field: str):
  """A realism field of a zoo.json 'quality' dict, None when the zoo does not have it."""
  v = q.get(field)
  if field == 'distance_ratio' and v is None and q.get('noise_to_manifold'):
    # A zoo built before the ratio was stored keeps both distances: the same ratio.
    v = q.get('sample_to_manifold', math.nan) / q['noise_to_manifold']
  return v if v is not None and math.isfinite(v) else None


def _realism_cell(q: dict, field: str, fmt: str) -> str:
  v = _realism(q, field)
  return '—' if v is None else _pct(v) + ' %' if fmt == 'pct' else fmt.format(v)


def zoo_realism(zoo: dict) -> list:
  """Markdown lines: per model of a zoo (zoo.json) how real its samples look; fields a zoo
  does not have are shown as '—'."""
  reference = zoo.get('reference') or {}
  head = '| model | family | ' + ' | '.join(c[1] for c in REALISM_COLUMNS) + ' |'
  out = ['Distance to real / noise\'s: mean distance of a sample to its nearest real training '
         'digit, as a fraction of the same for uniform noise. Recognisable: share of samples '
         'the zoo\'s calibrated digit classifier assigns to a digit with probability ≥ 0.9, '
         'and that share as a fraction of held-out real digits\'. Fréchet distance between '
         'the samples\' and the held-out real digits\' features in the SL encoder\'s space. '
         'Diversity: mean pairwise distance of the samples / that of real digits.', '',
         head, '|---|---|' + '---|' * len(REALISM_COLUMNS)]
  # The zoo's reference figures: what real digits (held out; for the Fréchet distance, real
  # digits as many as a model's samples) and uniform noise score.
  for name, ref in (('real digits', reference.get('real_test')),
                    ('uniform noise', reference.get('noise'))):
    if isinstance(ref, dict):
      out.append(f'| *{name}* | | ' + ' | '.join(_realism_cell(ref, *c[::2])
                                                 for c in REALISM_COLUMNS) + ' |')
  models = zoo.get('models', [])
  for m in models:
    q = m.get('quality') or {}
    out.append(f'| {m.get("name", "?")} | {m.get("family", "—")} | ' + ' | '.join(
        _realism_cell(q, f, fmt) for f, _, fmt in REALISM_COLUMNS) + ' |')
  out.append('')
  for field, fact in (('recognisable_vs_real', lambda v: v < 0.5),
                      ('distance_ratio', lambda v: v > 0.5)):
    vals = {m.get('name'): _realism(m.get('quality') or {}, field) for m in models}
    vals = {k: v for k, v in vals.items() if v is not None}
    if not vals:
      continue
    odd = ', '.join(k for k, v in vals.items() if fact(v)) or 'none'
    median = float(np.median(list(vals.values())))
    out.append(f'- Median model: recognisable at {_pct(median)} % of real digits\' rate; '
               f'below 50 %: {odd}.' if field == 'recognisable_vs_real' else
               f'- Median model: distance to real {median:.2f} of noise\'s; above 0.5: {odd}.')
  out.append('')
  return out


def _zoo_section(gm) -> list:
  if not getattr(gm, 'tags', None):
    return []
  path = os.path.join(gm.path, 'zoo.json')
  try:
    with open(path, encoding='utf-8') as f:
      zoo = json.load(f)
  except (OSError, ValueError) as e:
    return ['## Zoo realism', '', f'{path} could not be read: {e}', '']
  return ['## Zoo realism', '', f'From {path} (preset `{zoo.get("preset", "?")}`, real data '
          f'`{zoo.get("real", "?")}`).', ''] + zoo_realism(zoo)


def report_markdown(rows, gm, config: dict, timings: dict, files: dict, workdir: str) -> str:
  """gm: the evaluated `protocols.GMData`; config['num_images'] counts the rows evaluated;
  config['demo'] (a dict, optional) says what the demo chose to run."""
  rel = lambda p: os.path.relpath(p, workdir)
  lines = ['# fpjax evaluation report', '',
           f'GM dataset **{gm.name}**: {config["num_images"]} images of {len(gm.class_names)} '
           f'models; real data **{gm.real}** ({gm.bank_size} images = the bank of the '
           'manifold).', '',
           'Models: ' + ', '.join(f'`{c}`' for c in gm.class_names) + '.', '']
  demo = config.get('demo')
  if demo:
    lines += ['## What the demo ran', '']
    if isinstance(demo, dict):
      # run_demo's 'ran' / 'left_out' sentences as lists; the other settings as bullets.
      lines += [f'- {x}' for x in demo.get('ran', ())]
      if demo.get('left_out'):
        lines += ['', 'Left out to fit the demo\'s time budget (the flags that run them):', '']
        lines += [f'- {x}' for x in demo['left_out']]
      rest = {k: v for k, v in demo.items() if k not in ('ran', 'left_out')}
      lines += ([''] if rest and demo.get('ran') else []) + _bullets(rest)
    else:
      lines.append(f'{demo}')
    lines.append('')
  captions = {
      'confusion': 'Confusion matrices (validation images of the first split): ManiFPT linear '
                   'probe per space and the best baseline. Rows = true model (index = order '
                   'above).',
      'embedding': '2-D PCA of the validation artifacts per space (z-scored), one colour per '
                   'model.',
      'mean_artifact_rgb': 'Mean RGB artifact per model (the artifact store\'s streamed '
                           '`FingerprintStats`), all images.',
      'mean_artifact_freq': 'Mean FREQ artifact per model.',
      'mean_artifact_dct': 'Mean DCT artifact per model.',
      'spectra_rgb': 'Power spectrum of the RGB artifacts per model: radial profile and 2-D '
                     '(log10), from the store\'s `FingerprintStats` (all images).'}
  lines += ['## Results', '', markdown_tables(rows)]
  lines += _zoo_section(gm)
  lines += ['## Discussion', '']
  lines += discussion(rows)
  lines.append('')
  if any(key in captions for key in files):
    lines += ['## Figures', '']
  for key, path in files.items():
    if key in captions:
      lines += [f'### {key}', captions[key], '', f'![{key}]({rel(path)})', '']
  selection = config.get('selection')
  selection = selection.get('protocol') if isinstance(selection, dict) else selection
  lines += ['## Protocol', '',
            '- Splits: ' + str(config.get('split') or 'several train/validation splits, every '
                               'method on the same ones, each with its own classifier seed')
            + '; rows give mean ± std over the splits.',
            '- Selection of the estimator\'s hyperparameters and the probe\'s l2: '
            + str(selection or 'on an inner validation split of each training part') + '; '
            'never on the reported validation images.',
            '- ManiFPT features: artifacts φ(x) − p(x), p(x) the manifold estimator\'s point '
            '(`nn`: the nearest real image in space φ, as in the paper; `fpjax.estimators`), '
            'computed by `fpjax.compute_artifacts` and read back from its artifact store '
            f'{config.get("artifact_stores", "")}; `input` rows use φ(x) itself. SL/SSL '
            'encoders are trained on the real images (no pretrained weights).',
            '- Intervals: ' + str(config.get('diff') or 'paired bootstrap 95 % percentile '
                                  'intervals (`fpjax.evals.metrics.paired_bootstrap`)')
            + '; each split\'s validation images are resampled with replacement, the same '
            'images for both rows; significant = the interval excludes 0.',
            '- FDR: trace(S_B)/trace(S_W) (`fpjax.stats.fdr_from_moments`) of the validation '
            'features, from per-model moments streamed over the rows.',
            f'- Table 3: {config.get("table3", {})}.',
            f'- Open set: {config.get("openset", {})}.', '',
            '## Configuration', '', '```', json.dumps(_jsonable(config), indent=1), '```', '',
            '## Timings (seconds)', '', '```', json.dumps(_jsonable(timings), indent=1), '```', '']
  return '\n'.join(lines)
