"""Marra19 ("Do GANs leave artificial fingerprints?"): noise-residual fingerprints.

Residual r = x - denoise(x), the denoiser a Gaussian filter (sigma = 1, radius 4 = scipy's
default truncate 4, reflect borders) per channel. A model's fingerprint is the mean residual
of its training images; a test image goes to the model whose fingerprint has the highest
normalised (Pearson) correlation with its residual. Simplification: the paper's denoiser
is BM3D; a Gaussian filter keeps it dependency-free. ``features`` are the flattened residuals.
"""
import jax.numpy as jnp
import numpy as np

from fpjax.baselines import _common
from fpjax.baselines._common import _Baseline, batched, check_labels, float_images, in_slices


def gaussian_denoise(x, sigma: float = 1.0, truncate: float = 4.0):
  """Separable Gaussian filter over H and W, borders reflected (scipy.ndimage mode='reflect')."""
  radius = int(truncate * sigma + 0.5)
  t = np.arange(-radius, radius + 1)
  k = np.exp(-0.5 * (t / sigma) ** 2)
  k = (k / k.sum()).astype(np.float32)
  h, w = x.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (radius, radius), (0, 0), (0, 0)), mode='symmetric')
  x = sum(float(k[i]) * xp[:, i:i + h] for i in range(len(k)))
  xp = jnp.pad(x, ((0, 0), (0, 0), (radius, radius), (0, 0)), mode='symmetric')
  return sum(float(k[i]) * xp[:, :, i:i + w] for i in range(len(k)))


def noise_residual(x, sigma: float = 1.0):
  return (x - gaussian_denoise(x, sigma)).reshape(x.shape[0], -1)


def _normalise(v: np.ndarray) -> np.ndarray:
  v = v - v.mean(-1, keepdims=True)
  return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


class Marra19(_Baseline):
  QUICK = dict(sigma=1.0)  # the seed is unused: the method is deterministic
  FIT_FREE_FEATURES = True
  classes_ = None
  fingerprints_ = None

  def _residuals(self, images) -> np.ndarray:
    return batched(lambda v: noise_residual(v, self.cfg['sigma']), float_images(images, 'Marra19'))

  def features(self, images) -> np.ndarray:
    return in_slices(self._residuals, images)

  def fit(self, images, labels):
    labels = check_labels(images, labels, 'Marra19')
    self.classes_ = np.unique(labels)
    # Fingerprint = mean residual per model, summed slice by slice (float64).
    sums = count = None
    step = _common.SLICE_ROWS
    for a in range(0, len(images), step):
      r = self._residuals(np.asarray(images[a:a + step])).astype(np.float64)
      y = np.searchsorted(self.classes_, labels[a:a + step])
      if sums is None:
        sums, count = np.zeros((len(self.classes_), r.shape[1])), np.zeros(len(self.classes_))
      np.add.at(sums, y, r)
      count += np.bincount(y, minlength=len(self.classes_))
    self.fingerprints_ = sums / count[:, None]
    return self

  def correlations(self, images) -> np.ndarray:
    if self.fingerprints_ is None:
      raise ValueError('Marra19: call fit first')
    fp = _normalise(self.fingerprints_).T
    return in_slices(lambda im: _normalise(self._residuals(im).astype(np.float64)) @ fp, images)

  def predict(self, images) -> np.ndarray:
    return self.classes_[self.correlations(images).argmax(1)]
