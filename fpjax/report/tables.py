"""tables.md: Table 1 (space × estimator × classifier, input controls next to the
estimators, then the baselines), the paired differences, Tables 2, 3 and the open set, as GitHub
markdown (accuracies in %), and the cell formats the report's text shares."""
from __future__ import annotations

import math

import numpy as np

from fpjax.report.rows import is_baseline, is_control, nmi_columns


def pct(m, s=None):
  if m is None:
    return '—'
  return f'{100 * m:.1f}' if s is None else f'{100 * m:.1f} ± {100 * s:.1f}'


def num(x, fmt='{:.3f}'):
  return '—' if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)


def points(x) -> str:
  """A difference of accuracies (fraction) as signed percentage points."""
  return '—' if x is None else f'{100 * x:+.1f}'


def interval(r) -> str:
  return f'[{points(r["ci_low"])}, {points(r["ci_high"])}]'


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


def estimator_cell(r) -> str:
  return 'input (control)' if is_control(r) else (r.get('estimator') or '—')


def features_name(r) -> str:
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
    out += [f'| {r["space"].upper()} | {r["classifier"]} | {estimator_cell(r)} | '
            f'{chosen_settings(r)} | {pct(r["accuracy_mean"], r["accuracy_std"])} | '
            f'{num(r["fdr"], "{:.4g}")} |' for r in _grouped(acc)]
    out.append('')
  base = [r for r in t1 if is_baseline(r)]
  if base:
    out += [f'Baselines (prior methods, their own classifiers, the same splits) on '
            f'{r0["dataset"]}:', '', '| baseline | accuracy | FDR |', '|---|---|---|']
    out += [f'| {r["method"]} | {pct(r["accuracy_mean"], r["accuracy_std"])} | '
            f'{num(r["fdr"], "{:.4g}")} |' for r in base]
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
               f'{points(r["diff_mean"])}{mark} | {interval(r)} | '
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
      cells.append(pct(m[0]['accuracy_mean'], m[0]['accuracy_std']) if m else '—')
    r0 = next(r for r in t2 if key(r) == k)
    out.append(f'| {features_name(r0)} | ' + (f'{estimator_cell(r0)} | ' if est else '')
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
    out.append(f'| {r["space"].upper()} | ' + (f'{estimator_cell(r)} | ' if est else '')
               + ' | '.join(num(r['nmi'].get(c)) for c in cols) + ' |')
  avg = [np.mean([r['nmi'][c] for r in t3 if r['nmi'].get(c) is not None]) for c in cols]
  out.append('| average | ' + ('| ' if est else '') + ' | '.join(num(float(a)) for a in avg)
             + ' |')
  out.append('')
  return out


def _table_openset(to) -> list:
  est = _has_estimator(to)
  out = ['### Open set — leave-one-model-out AUROC and few-shot enrolment (nearest prototype)',
         '', '| features | ' + ('estimator | ' if est else '')
         + 'AUROC | few-shot accuracy (all models) | few-shot accuracy (new model) |',
         '|---|' + ('---|' if est else '') + '---|---|---|']
  out += [f'| {features_name(r)} | ' + (f'{estimator_cell(r)} | ' if est else '')
          + f'{num(r["auroc"])} | {pct(r["few_shot_accuracy"])} | '
          f'{pct(r["few_shot_new_model_accuracy"])} |' for r in to]
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
