"""Table 2, cross-dataset: train on all images of one zoo, test on all images of the same
recipes trained on another real dataset.

Each side's artifacts are measured against its own real manifold, in the same embedding (SL/SSL
encoders are shared by both sides). No selection (there is no inner split of the other
dataset): each estimator's default candidate, the probe's first l2 candidate, its epochs by the
same early stopping on an inner split of the training zoo; one fit per split's seed.
"""
from __future__ import annotations

import time

import numpy as np

from fpjax import progress
from fpjax.errors import UserInputError
from fpjax.evals import metrics
from fpjax.evals.classifiers import (CLASSIFIERS, check_baselines, fit_predict, make_baseline,
                                     make_classifier)
from fpjax.evals.features import Features
from fpjax.evals.streamed import streamed_fdr
from fpjax.report import make_row, row_label


def common_rows(src: Features, tgt: Features):
  """Models present in both (by name); per side the rows of those models and their new labels."""
  common = [c for c in src.gm.class_names if c in set(tgt.gm.class_names)]
  if len(common) < 2:
    raise UserInputError(f'cross-dataset needs >= 2 models present in both {src.gm.name} and '
                         f'{tgt.gm.name}; common: {common}')
  idx = {c: i for i, c in enumerate(common)}

  def relabel(f: Features):
    new = np.array([idx.get(c, -1) for c in f.gm.class_names], np.int32)[f.labels]
    rows = np.flatnonzero(new >= 0)
    return rows, new[rows]
  return common, relabel(src), relabel(tgt)


def table2(src: Features, tgt: Features, splits, *, baselines=(),
           classifiers=CLASSIFIERS, cfg: dict | None = None,
           baseline_cfg: dict | None = None) -> list:
  """Train on every image of `src`, test on every image of `tgt` (models matched by name).

  Both sides must have stores of the same spaces (ManiFPT rows) from the same encoders; the
  estimators are those both sides' Features hold (with the control), each at its default
  candidate (no inner split of the other dataset to choose on), the probe at the selection's
  first l2 with its epochs by early stopping on an inner split of `src` (`make_probe`).
  splits: `make_splits`'s list; no split is drawn here (all of `src` trains, all of `tgt`
  tests): one fit per split's classifier seed.
  """
  seeds = [sp.seed for sp in splits]
  cfg = cfg or {}
  baselines = check_baselines(baselines)
  common, (rs, ys), (rt, yt) = common_rows(src, tgt)
  dataset = f'{src.gm.name} -> {tgt.gm.name}'
  spaces = [s for s in src.stores if s in tgt.stores]
  rows = []
  prog = progress.Progress(sum(len(src.names(s)) for s in spaces) * len(classifiers)
                           + len(baselines), unit='steps', desc=f'Table 2 ({dataset})',
                           log_every_s=0)

  def scored(make, x_src, x_tgt, **fields):
    t0 = time.time()
    accs = [metrics.accuracy(yt, fit_predict(make(s), x_src, ys, x_tgt, s)) for s in seeds]
    mean, std = metrics.mean_std(accs)
    row = make_row(table='2', dataset=dataset, accuracy_mean=mean, accuracy_std=std,
                   accuracies=accs, num_splits=len(seeds), num_train=len(rs),
                   num_test=len(rt), seconds=time.time() - t0, **fields)
    rows.append(row)
    prog.update(1, note=f'{row_label(row)}: {100 * mean:.1f}%')

  for sname in spaces:
    for name in [n for n in src.names(sname) if n in tgt.names(sname)]:
      key = src.keys(name)[0]
      a_src = src.artifacts(sname, key).take(rs)
      a_tgt = tgt.artifacts(sname, key).take(rt)
      fdr = streamed_fdr(a_tgt, yt, len(common))
      for kind in classifiers:
        scored(lambda s, kind=kind: make_classifier(kind, cfg, sname), a_src, a_tgt,
               method='ManiFPT', space=sname, estimator=name, classifier=kind, fdr=fdr)
  for b in baselines:
    scored(lambda s, b=b: make_baseline(b, s, baseline_cfg), src.image_rows().take(rs),
           tgt.image_rows().take(rt), method=b, classifier='own')
  return rows
