"""The report's discussion: plain statements read off the numbers of the rows (no claim the
numbers do not support), with the paired intervals of the 'diff' rows where they exist."""
from __future__ import annotations

import math

import numpy as np

from fpjax.report.rows import is_baseline, is_control, nmi_columns, row_label
from fpjax.report.tables import estimator_cell, features_name, interval, pct, points


def _best(rows):
  rows = [r for r in rows if r.get('accuracy_mean') is not None]
  return max(rows, key=lambda r: r['accuracy_mean']) if rows else None


def _acc(r) -> str:
  return f'{pct(r["accuracy_mean"], r["accuracy_std"])} %'


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
  return f' Paired 95 % interval of {d["a"]} − {d["b"]}: {interval(d)} points, {_verdict(d)}.'


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
                 f'({points(gap)} points; no paired interval computed).')
      continue
    if d['significant']:
      side = 'above' if d['diff_mean'] > 0 else 'below'
      tally[side] += 1
      text = ('beats its input control' if side == 'above' else
              'is below its input control')
    else:
      tally['neither'] += 1
      text = 'does not differ significantly from its input control'
    out.append(f'  - {row_label(r)} {text}: {points(d["diff_mean"])} points, 95 % interval '
               f'{interval(d)}.')
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
                 f'{points(abs(d["diff_mean"]))[1:]} points, {sig}; 95 % interval '
                 f'{interval(d)}.')
  per = []
  for group in dict.fromkeys((r['space'], r['classifier']) for r in named):
    rr = sorted((r for r in named if (r['space'], r['classifier']) == group),
                key=lambda r: -r['accuracy_mean'])
    d = _find_diff(diffs, rr[0], rr[1]) if len(rr) > 1 else None
    if d is not None:
      per.append(f'{group[0].upper()} {group[1]}: {rr[0]["estimator"]} − '
                 f'{rr[1]["estimator"]} {points(d["diff_mean"])} {interval(d)}'
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
                 f'{points(-gap)[1:]} points above the best ManiFPT row {row_label(bm)} '
                 f'{_acc(bm)}.' + _versus(_find_diff(diffs, bb, bm)))
    else:
      out.append(f'- The best ManiFPT row leads the best baseline, {bb["method"]} {_acc(bb)}, '
                 f'by {points(gap)[1:]} points.' + _versus(_find_diff(diffs, bm, bb)))
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
        f'{d["a"]} − {d["b"]} on {d["dataset"]}: {points(d["diff_mean"])} points '
        f'{interval(d)}, {"significant" if d["significant"] else "not significant"}'
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
    name = features_name(b) + (f' {estimator_cell(b)}' if b.get('estimator') else '')
    won = ' — **a baseline wins**' if is_baseline(b) else ''
    out.append(f'- Open set: best leave-one-model-out AUROC {b["auroc"]:.3f} ({name}){won}; '
               'few-shot enrolment accuracies are in the last table. Baselines appear there '
               'only when their features need no training (hand-crafted ones, Marra19): a '
               'learned extractor would have seen the left-out model.')
  return out
