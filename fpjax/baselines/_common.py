"""Shared plumbing of the baselines: input checks, batched jitted features, the two classifier
kinds.

Linear baselines train the attribution LinearProbe on their hand-crafted features (one way
of training linear models in fpjax); CNN baselines train an Attributor (ResNet / SmallCNN).
Images may be an array or a lazy array-like (len, shape, dtype, contiguous slices, e.g. the
evaluation's view of an image folder): every method reads them `SLICE_ROWS` images at a time,
and a CNN's pre-processed inputs are computed slice by slice as its training reads them.
"""
from __future__ import annotations

import jax
import numpy as np

from fpjax.attribution.attributor import Attributor
from fpjax.attribution.probe import LinearProbe
from fpjax.models import training
from fpjax.spaces import as_float_images


def float_images(images, who: str) -> np.ndarray:
  """Float images in [0, 1] (uint8 or float input), a ValueError naming the baseline."""
  try:
    return np.asarray(as_float_images(images))
  except ValueError as e:
    raise ValueError(f'{who}: {e}') from None


SLICE_ROWS = 4096  # images decoded and pre-processed at a time


def batched(fn, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
  """fn (jnp, per-batch) over x in padded batches sharded over all devices."""
  return training.apply_batched(jax.jit(fn), x, batch_size=batch_size,
                                mesh=training.default_mesh())


def in_slices(fn, images) -> np.ndarray:
  """np.concatenate of fn(images[a:b]) over slices of SLICE_ROWS images."""
  if len(images) == 0:
    raise ValueError('no images (N = 0)')
  return np.concatenate([np.asarray(fn(im)) for _, im in training.iter_slices(images, SLICE_ROWS)])


def check_labels(x, labels, who):
  labels = np.asarray(labels)
  if labels.shape != (len(x),):
    raise ValueError(f'{who}.fit: labels must have shape [{len(x)}], got {labels.shape}')
  return labels


class _Baseline:
  """Options: the class's ``QUICK`` defaults overridden by known keyword arguments."""
  QUICK: dict = {}
  # True when ``features`` needs no fit (hand-crafted): usable for models never trained on.
  FIT_FREE_FEATURES = False

  def __init__(self, seed: int = 0, **cfg):
    unknown = set(cfg) - set(self.QUICK)
    if unknown:
      raise ValueError(f'{type(self).__name__}: unknown options {sorted(unknown)}; '
                       f'known: {sorted(self.QUICK)}')
    self.seed = seed
    self.cfg = dict(self.QUICK, **cfg)


class LinearBaseline(_Baseline):
  """Hand-crafted features -> LinearProbe. Subclasses define ``QUICK`` and ``_features``."""
  PROBE_KEYS = ('l2', 'lr', 'epochs', 'batch_size', 'val_fraction', 'patience')
  FIT_FREE_FEATURES = True
  probe = None

  def _features(self, x):  # jnp float images [B,H,W,C] in [0,1] -> [B, D]
    raise NotImplementedError

  def features(self, images) -> np.ndarray:
    """[N, D] hand-crafted features, computed SLICE_ROWS images at a time."""
    return in_slices(lambda im: batched(self._features, float_images(im, type(self).__name__)),
                     images)

  def fit(self, images, labels):
    f = self.features(images)
    labels = check_labels(f, labels, type(self).__name__)
    self.probe = LinearProbe(**{k: self.cfg[k] for k in self.PROBE_KEYS if k in self.cfg})
    self.probe.fit(f, labels, seed=self.seed)
    return self

  def predict(self, images) -> np.ndarray:
    if self.probe is None:
      raise ValueError(f'{type(self).__name__}: call fit first')
    return self.probe.predict(self.features(images))


class CNNBaseline(_Baseline):
  """A network trained end to end on (pre-processed) images; features = penultimate vector."""
  attributor = None

  def _inputs(self, images) -> np.ndarray:
    return float_images(images, type(self).__name__)

  def _augment(self):
    return None

  def _lazy_inputs(self, images):
    """The network's inputs as a lazy array: pre-processed slice by slice when read."""
    first = self._inputs(np.asarray(images[0:1]))
    return training.MappedRows(images, self._inputs, (len(images),) + first.shape[1:],
                               first.dtype)

  def fit(self, images, labels):
    labels = check_labels(images, labels, type(self).__name__)
    self.attributor = Attributor('quick', augment=self._augment(), **self.cfg)
    inputs = self._lazy_inputs(images)
    if len(inputs) <= training.BLOCK_ROWS:
      # One training block: pre-processed once (a few MB) instead of in every pass over it
      # (the finiteness check, the z-score statistics, every epoch; e.g. Nataraj19's
      # co-occurrences). The same values: each pass read this one block whole.
      inputs = inputs[0:len(inputs)]
    self.attributor.fit(inputs, labels, seed=self.seed)
    return self

  def _trained(self) -> Attributor:
    if self.attributor is None:
      raise ValueError(f'{type(self).__name__}: features/predict need a trained network; '
                       'call fit first')
    return self.attributor

  def predict(self, images) -> np.ndarray:
    net = self._trained()
    return in_slices(lambda im: net.predict(self._inputs(im)), images)

  def features(self, images) -> np.ndarray:
    net = self._trained()
    return in_slices(lambda im: net.features(self._inputs(im)), images)
