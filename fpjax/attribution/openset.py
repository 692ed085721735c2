"""Open-set attribution and few-shot enrolment with fingerprint prototypes.

A model's prototype is the mean of its standardized artifact features (z-scored with the
mean/std of the known models' enrolment samples). The open-set score of a sample is its
Euclidean distance to the nearest prototype: large means "made by an unknown model".
A new model is enrolled from a handful of samples by adding its prototype; nothing is
retrained, and the standardization stays that of the known models.

Evaluation splits every model's samples into enrolment / test parts (stratified, seeded,
``test_fraction``), or uses the ``train_mask`` you give.

Everything here is eager float64 numpy on the host (features [N, ...] are flattened).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from sklearn.metrics import roc_auc_score

from fpjax.models import training


def _flat(features) -> np.ndarray:
  x = np.asarray(features, dtype=np.float64)
  if x.ndim < 2:
    raise ValueError(f'features must be [N, ...], got shape {x.shape}')
  return x.reshape(x.shape[0], -1)


@dataclasses.dataclass
class PrototypeClassifier:
  """Nearest-prototype attributor in the standardized feature space (float64, eager).

  mean, std [D]: the standardization of the known models' enrolment features; labels [K] and
  prototypes [K, D] (standardized units): one per model.
  """
  mean: np.ndarray
  std: np.ndarray
  labels: np.ndarray          # [K]
  prototypes: np.ndarray      # [K, D] in standardized units

  @classmethod
  def fit(cls, features, labels) -> 'PrototypeClassifier':
    """Standardization and one prototype per label from features [N, ...] and labels [N]."""
    x = _flat(features)
    labels = np.asarray(labels)
    mean = x.mean(0)
    std = x.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    classes, protos = prototypes((x - mean) / std, labels, standardize=False)
    return cls(mean, std, classes, protos)

  def _z(self, features) -> np.ndarray:
    return (_flat(features) - self.mean) / self.std

  def enrol(self, features, label) -> 'PrototypeClassifier':
    """Adds (or replaces) the prototype of model ``label`` from a few of its samples."""
    proto = self._z(features).mean(0)
    keep = self.labels != label
    labels = np.concatenate([self.labels[keep], np.asarray([label], self.labels.dtype)])
    protos = np.concatenate([self.prototypes[keep], proto[None]])
    return dataclasses.replace(self, labels=labels, prototypes=protos)

  def distances(self, features) -> np.ndarray:
    """Euclidean (not squared) distances [N, K] to each prototype, standardized units."""
    z = self._z(features)
    d2 = (np.sum(z * z, 1)[:, None] - 2 * z @ self.prototypes.T
          + np.sum(self.prototypes ** 2, 1)[None])
    return np.sqrt(np.maximum(d2, 0.0))

  def score(self, features) -> np.ndarray:
    """Open-set score: distance to the nearest prototype."""
    return self.distances(features).min(1)

  def predict(self, features) -> np.ndarray:
    """The label of the nearest prototype of each row: [N]."""
    return self.labels[self.distances(features).argmin(1)]


def prototypes(features, labels, *, standardize: bool = True):
  """(labels [K], prototypes [K, D]): per-model mean of the (z-scored) flattened features."""
  x = _flat(features)
  labels = np.asarray(labels)
  if labels.shape != (x.shape[0],):
    raise ValueError(f'labels must have shape [{x.shape[0]}], got {labels.shape}')
  if standardize:
    std = x.std(0)
    x = (x - x.mean(0)) / np.where(std > 1e-12, std, 1.0)
  classes = np.unique(labels)
  return classes, np.stack([x[labels == c].mean(0) for c in classes])


def _split(labels, test_fraction, seed, train_mask):
  if train_mask is not None:
    train_mask = np.asarray(train_mask, bool)
    if train_mask.shape != labels.shape:
      raise ValueError(f'train_mask must have shape {labels.shape}, got {train_mask.shape}')
    return train_mask
  _, test = training.stratified_split(labels, test_fraction, np.random.default_rng(seed),
                                      strict=True)
  mask = np.ones(labels.shape, bool)
  mask[test] = False
  return mask


def leave_one_model_out_auroc(features, labels, *, test_fraction: float = 0.5, seed: int = 0,
                              train_mask=None) -> dict:
  """AUROC of flagging a left-out model's samples as unknown, each model left out in turn.

  For left-out model m: prototypes and standardization come from the other models'
  enrolment samples; the positives are all of m's samples, the negatives the other models'
  test samples; the score is the distance to the nearest prototype.
  Returns {'auroc': mean over models, 'per_model': {label: auroc}}.
  """
  x = _flat(features)
  labels = np.asarray(labels)
  classes = np.unique(labels)
  if len(classes) < 3:
    raise ValueError('leave-one-model-out needs at least 3 models (2 known + 1 left out)')
  train = _split(labels, test_fraction, seed, train_mask)
  per_model = {}
  for m in classes:
    known = labels != m
    clf = PrototypeClassifier.fit(x[known & train], labels[known & train])
    neg = known & ~train
    scores = np.concatenate([clf.score(x[neg]), clf.score(x[~known])])
    truth = np.concatenate([np.zeros(neg.sum()), np.ones((~known).sum())])
    per_model[m.item()] = float(roc_auc_score(truth, scores))
  return {'auroc': float(np.mean(list(per_model.values()))), 'per_model': per_model}


def few_shot_accuracy(features, labels, shots: int = 20, seed: int = 0, *,
                      test_fraction: float = 0.5, train_mask=None) -> dict:
  """Accuracy after enrolling each model in turn from ``shots`` samples, without retraining.

  For new model m: the known models' prototypes and standardization come from their
  enrolment samples; m is enrolled from ``shots`` of its enrolment samples (seeded choice);
  every model's test samples are attributed to the nearest prototype.
  Returns {'accuracy': mean overall test accuracy, 'new_model_accuracy': mean accuracy on
  the new model's test samples, 'per_model': {label: (accuracy, new_model_accuracy)}}.
  """
  x = _flat(features)
  labels = np.asarray(labels)
  classes = np.unique(labels)
  if len(classes) < 2:
    raise ValueError('few-shot enrolment needs at least 2 models')
  if shots < 1:
    raise ValueError(f'shots must be >= 1, got {shots}')
  train = _split(labels, test_fraction, seed, train_mask)
  rng = np.random.default_rng(seed)
  test = ~train
  per_model = {}
  for m in classes:
    known = labels != m
    clf = PrototypeClassifier.fit(x[known & train], labels[known & train])
    pool = np.flatnonzero(~known & train)
    chosen = pool if len(pool) <= shots else rng.choice(pool, shots, replace=False)
    clf = clf.enrol(x[chosen], m)
    pred = clf.predict(x[test])
    new = labels[test] == m
    per_model[m.item()] = (float(np.mean(pred == labels[test])), float(np.mean(pred[new] == m)))
  acc = np.array(list(per_model.values()))
  return {'accuracy': float(acc[:, 0].mean()), 'new_model_accuracy': float(acc[:, 1].mean()),
          'per_model': per_model}
