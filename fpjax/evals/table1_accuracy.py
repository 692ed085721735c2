"""Table 1: attribution accuracy and FDR per space × estimator (and the input control) ×
classifier, and of every baseline, on the same splits; and the paired differences.

Table 1  the probe and the attributor on the key the selection chose (`splits.select_probe`),
         per split; FDR is trace(S_B)/trace(S_W) of split 0's validation rows (its chosen key),
         from per-model moments streamed over the rows (artifacts for ManiFPT, `.features()` of
         split 0's fit for baselines).
Diff     `diff_rows`: paired bootstrap 95 % intervals (`metrics.paired_bootstrap`) of the best
         ManiFPT row minus the best baseline (best = highest reported mean accuracy of Table 1),
         of the best estimator minus the runner-up (overall, and per space and classifier),
         and of each estimator row minus its input control (same space, same classifier).
"""
from __future__ import annotations

import time

from fpjax import progress
from fpjax.errors import UserInputError
from fpjax.estimators import CONTROL  # the control estimator: the classifier on φ(x) itself
from fpjax.evals import metrics
from fpjax.evals.classifiers import (CLASSIFIERS, check_baselines, check_classifiers,
                                     fit_predict, make_baseline, make_classifier, make_probe)
from fpjax.evals.features import Features
from fpjax.evals.splits import select_probe
from fpjax.evals.streamed import streamed_fdr
from fpjax.report import is_baseline, is_control, make_row, row_label

BEST = 'best'                      # attributor rows on the estimator the probe chose per split


class _Run:
  """What one `table1` call accumulates: rows, predictions, choices, cost and progress."""

  def __init__(self, feats: Features, splits, steps: int):
    self.feats, self.splits = feats, splits
    self.rows, self.preds, self.choices = [], {}, {}
    # Wall and process-CPU seconds per part (selection, each classifier, baselines).
    self.cost = {}
    self.prog = progress.Progress(steps, unit='steps', desc=f'Table 1 ({feats.gm.name})',
                                  log_every_s=0)

  def spent(self, part, wall0, cpu0):
    w, c = self.cost.get(part, (0.0, 0.0))
    self.cost[part] = (w + time.time() - wall0, c + time.process_time() - cpu0)

  def add_row(self, part, fit_predict_split, fdr, **fields):
    """One row, ManiFPT or baseline alike: fit_predict_split(split) -> predictions of its
    validation rows, for every split; fdr() after the fits (split 0's validation rows)."""
    t0, c0 = time.time(), time.process_time()
    splits, labels = self.splits, self.feats.labels
    pr = [fit_predict_split(sp) for sp in splits]
    accs = [metrics.accuracy(labels[sp.val], p) for sp, p in zip(splits, pr)]
    mean, std = metrics.mean_std(accs)
    row = make_row(table='1', dataset=self.feats.gm.name, accuracy_mean=mean,
                   accuracy_std=std, accuracies=accs, num_splits=len(splits), fdr=fdr(),
                   num_train=len(splits[0].train), num_test=len(splits[0].val),
                   seconds=time.time() - t0, **fields)
    self.rows.append(row)
    self.preds[row_label(row)] = pr
    self.spent(part, t0, c0)
    self.prog.update(1, note=f'{row_label(row)}: {100 * mean:.1f} ± {100 * std:.1f}%')


def attributor_names(feats: Features, space: str, attributor_estimators=None) -> list:
  """The attributor's estimators in a space: those asked that the space's store holds (None:
  every one; BEST: when the space has a manifold estimator)."""
  names = feats.names(space)
  asked = names if attributor_estimators is None else attributor_estimators
  return [n for n in asked if n in names or (n == BEST and names != [CONTROL])]


def _check_attributor_estimators(feats: Features, attributor_estimators) -> None:
  every = {n for s in feats.stores for n in feats.names(s)} | {BEST}
  for n in attributor_estimators or ():
    if n not in every:
      raise UserInputError(f'attributor estimator {n!r} is not among the estimators asked '
                           f'{sorted(every)}')


def _select_space(run: _Run, space: str, cfg: dict) -> None:
  """The probe's selection for every estimator of `space` and every split (run.choices)."""
  feats, splits = run.feats, run.splits
  read = lambda key: feats.artifacts(space, key)
  for name in feats.names(space):
    t0, c0 = time.time(), time.process_time()
    for sp in splits:
      run.choices[(space, name, sp.index)] = select_probe(read, feats.keys(name), feats.labels,
                                                          sp, cfg)
    run.spent('selection', t0, c0)
    ch = [run.choices[(space, name, sp.index)] for sp in splits]
    run.prog.update(1, note=f'{space} {name}: chose {[c.key for c in ch]}, l2 '
                    f'{[c.l2 for c in ch]}, epochs {[c.epochs for c in ch]} '
                    f'({sum(c.fits for c in ch)} fits, {time.time() - t0:.1f}s)')


def _chosen(run: _Run, space: str, name: str, split_index: int):
  """The selection's Choice; BEST: that of the estimator (not the control) whose chosen probe
  scored highest on the split's inner validation rows."""
  if name == BEST:
    name = max((n for n in run.feats.names(space) if n != CONTROL),
               key=lambda n: run.choices[(space, n, split_index)].inner_accuracy)
  return run.choices[(space, name, split_index)]


def _space_rows(run: _Run, space: str, classifiers, attributor_estimators, cfg: dict) -> None:
  """Every (estimator, classifier) row of `space` on the chosen keys."""
  feats, splits = run.feats, run.splits
  k = len(feats.gm.class_names)
  fdr_cache = {}

  def fdr_of(key):
    if key not in fdr_cache:
      fdr_cache[key] = streamed_fdr(feats.artifacts(space, key).take(splits[0].val),
                                    feats.labels[splits[0].val], k)
    return fdr_cache[key]

  for kind in classifiers:
    names = (feats.names(space) if kind == 'probe'
             else attributor_names(feats, space, attributor_estimators))
    for name in names:
      ch = [_chosen(run, space, name, sp.index) for sp in splits]

      def fit_split(sp, kind=kind, ch=ch):
        c = ch[sp.index]
        x = feats.artifacts(space, c.key)
        model = (make_probe(cfg, c.l2, c.epochs) if kind == 'probe'
                 else make_classifier(kind, cfg, space))
        return fit_predict(model, x.take(sp.train), feats.labels[sp.train], x.take(sp.val),
                           sp.seed)
      run.add_row(kind, fit_split, lambda ch=ch: fdr_of(ch[0].key), method='ManiFPT',
                  space=space, estimator=name, classifier=kind,
                  estimator_params=[c.key for c in ch],
                  probe_l2=[c.l2 for c in ch] if kind == 'probe' else None)


def _baseline_rows(run: _Run, baselines, baseline_cfg) -> None:
  """Every baseline's row; its FDR is of split 0's fitted model's features."""
  feats, splits = run.feats, run.splits
  images = feats.image_rows() if baselines else None
  val0 = splits[0].val
  for b in baselines:
    first = []                       # split 0's fitted baseline: its features give the FDR

    def fit_split(sp, b=b, first=first):
      model = make_baseline(b, sp.seed, baseline_cfg)
      first.append(model)
      return fit_predict(model, images.take(sp.train), feats.labels[sp.train],
                         images.take(sp.val), sp.seed)
    run.add_row('baselines', fit_split,
                lambda first=first: streamed_fdr(images.take(val0), feats.labels[val0],
                                                 len(feats.gm.class_names),
                                                 fn=first[0].features),
                method=b, classifier='own')


def table1(feats: Features, splits, *, baselines=None, classifiers=CLASSIFIERS,
           attributor_estimators=None, cfg: dict | None = None,
           baseline_cfg: dict | None = None) -> dict:
  """Attribution accuracy and FDR of every baseline and every (space, estimator, classifier).

  splits: `make_splits`'s list. attributor_estimators: the estimators the attributor runs on
  (None: every one of the space's `feats.names(space)`; one the space lacks is skipped); BEST
  ('best') is, per split, the estimator (not the control) whose chosen probe scored highest on
  that split's inner validation rows. cfg: the classifiers' and the selection's options
  (`fpjax.evals.classifiers`).
  Returns {'rows', 'splits', 'y_true' [per split: validation labels], 'predictions'
  {row_label: [per split: predictions of the validation rows]}, 'choices' {(space, estimator,
  split index): Choice}, 'cost' {part: (wall s, process CPU s)} for 'selection', each
  classifier and 'baselines', 'selection_fits'}.
  """
  cfg = cfg or {}
  baselines = check_baselines(baselines)
  classifiers = check_classifiers(classifiers)
  _check_attributor_estimators(feats, attributor_estimators)
  # Progress steps: one selection per space and estimator, then one per row.
  rows_of = lambda s, kind: (len(feats.names(s)) if kind == 'probe' else
                            len(attributor_names(feats, s, attributor_estimators)))
  steps = sum(len(feats.names(s)) + sum(rows_of(s, kind) for kind in classifiers)
              for s in feats.stores)
  run = _Run(feats, splits, steps + len(baselines))
  for space in feats.stores:
    _select_space(run, space, cfg)
    _space_rows(run, space, classifiers, attributor_estimators, cfg)
  _baseline_rows(run, baselines, baseline_cfg)
  return {'rows': run.rows, 'splits': splits,
          'y_true': [feats.labels[sp.val] for sp in splits], 'predictions': run.preds,
          'choices': run.choices, 'cost': run.cost,
          'selection_fits': sum(c.fits for c in run.choices.values())}


def _diff_pairs(rows) -> list:
  """(a, b) rows to compare, in `diff_rows`' order."""
  mani = [r for r in rows if not is_baseline(r) and not is_control(r)]
  base = [r for r in rows if is_baseline(r)]
  pairs = []
  best = lambda rr: max(rr, key=lambda r: r['accuracy_mean'])
  if mani and base:
    pairs.append((best(mani), best(base)))
  named = [r for r in mani if r['estimator'] != BEST]
  if named:
    top = best(mani)
    others = [r for r in named if r['estimator'] != top['estimator']]
    if others:
      pairs.append((top, best(others)))
    for group in dict.fromkeys((r['space'], r['classifier']) for r in named):
      rr = sorted((r for r in named if (r['space'], r['classifier']) == group),
                  key=lambda r: -r['accuracy_mean'])
      if len(rr) > 1 and (rr[0], rr[1]) not in pairs:
        pairs.append((rr[0], rr[1]))
  for r in mani:
    pairs += [(r, c) for c in rows if c['estimator'] == CONTROL and c['space'] == r['space']
              and c['classifier'] == r['classifier']]
  return pairs


def diff_rows(t1: dict, *, num_resamples: int = 2000, seed: int = 0) -> list:
  """Table 'diff': paired bootstrap 95 % intervals of accuracy differences on the same
  validation rows of every split (best = highest mean accuracy over the splits, as reported):

    - the best ManiFPT row (not a control) minus the best baseline;
    - the best ManiFPT row minus the best ManiFPT row of another estimator (the runner-up
      estimator), and per space and classifier the best estimator row minus the runner-up
      (pairs already listed are not repeated; the attributor's 'best' row takes no part);
    - each estimator row minus its input control (same space, same classifier).
  """
  out = []
  for a, b in _diff_pairs([r for r in t1['rows'] if r['table'] == '1']):
    la, lb = row_label(a), row_label(b)
    res = metrics.paired_bootstrap(t1['y_true'], t1['predictions'][la], t1['predictions'][lb],
                                   num_resamples=num_resamples, seed=seed)
    out.append(make_row(table='diff', method=f'{la} vs {lb}', dataset=a['dataset'], a=la, b=lb,
                        num_splits=len(t1['y_true']), num_test=len(t1['y_true'][0]), **res))
  return out
