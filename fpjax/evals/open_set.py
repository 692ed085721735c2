"""Open set: leave-one-model-out AUROC and few-shot enrolment accuracy of nearest-prototype
attribution (`fpjax.attribution.openset`) per space and estimator (split 0's key) and of the
fit-free baselines, on a stratified sample of at most `max_per_model` rows per model;
enrolment = the sample's split-0 train rows.
"""
from __future__ import annotations

import numpy as np

from fpjax.attribution import openset as openset_lib
from fpjax.baselines import BASELINES
from fpjax.evals.classifiers import make_baseline
from fpjax.evals.features import Features
from fpjax.evals.splits import split0_keys, stratified_sample
from fpjax.evals.streamed import apply_in_slices
from fpjax.report import make_row


def fit_free_baselines(baselines, baseline_cfg) -> dict:
  """{name: baseline} of the baselines whose features need no training (hand-crafted, Marra19).

  CNN baselines learn their features from the known models, so a model left out of the
  open-set protocol would have been seen in training: they are left out.
  """
  out = {}
  for b in (list(BASELINES) if baselines is None else baselines):
    m = make_baseline(b, baseline_cfg=baseline_cfg)
    if getattr(m, 'FIT_FREE_FEATURES', False):
      out[b] = m
  return out


def openset(feats: Features, train_mask, *, choices: dict | None = None, baselines=(),
            baseline_cfg=None, shots: int = 10, max_per_model: int = 500,
            seed: int = 0) -> list:
  """Leave-one-model-out AUROC and few-shot enrolment accuracy of each space's and estimator's
  artifacts (`split0_keys`) and of the fit-free baselines' features, on a stratified sample of
  at most `max_per_model` rows per model (the protocols compare every row with every
  prototype: held in RAM). train_mask: split 0's training rows (the enrolment rows)."""
  sample = stratified_sample(feats.labels, max_per_model, seed)
  y, train = feats.labels[sample], np.asarray(train_mask)[sample]
  sets = {('ManiFPT', s, n, key): (lambda s=s, key=key: feats.artifacts(s, key)[sample])
          for (s, n), key in split0_keys(feats, choices).items()}
  images = feats.image_rows().take(sample)
  for b, m in fit_free_baselines(baselines, baseline_cfg).items():
    sets[(b, None, None, None)] = lambda m=m: apply_in_slices(m.features, images)
  rows = []
  for (method, space, name, key), read in sets.items():
    x = read()
    au = openset_lib.leave_one_model_out_auroc(x, y, seed=seed, train_mask=train)
    fs = openset_lib.few_shot_accuracy(x, y, shots=shots, seed=seed, train_mask=train)
    rows.append(make_row(table='openset', method=method, space=space, estimator=name,
                         estimator_params=None if key is None else [key],
                         classifier='prototype', dataset=feats.gm.name, auroc=au['auroc'],
                         few_shot_accuracy=fs['accuracy'],
                         few_shot_new_model_accuracy=fs['new_model_accuracy'],
                         num_train=int(train.sum()), num_test=int((~train).sum())))
  return rows
