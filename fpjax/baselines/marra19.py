"""Marra19 ("Do GANs leave artificial fingerprints?"): noise-residual fingerprints.

Residual r = x - denoise(x), the denoiser a Gaussian filter (sigma = 1, radius 4 = scipy's
default truncate 4, reflect borders) per channel. A model's fingerprint is the mean residual
of its training images; a test image goes to the model whose fingerprint has the highest
normalised (Pearson) correlation with its residual. Simplification: the paper's denoiser
is BM3D; a Gaussian filter keeps it dependency-free. ``features`` are the flattened residuals.
"""
import jax.numpy as jnp
import numpy as np

from fpjax.baselines._common import _Baseline, batched, check_labels, float_images


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
  classes_ = None
  fingerprints_ = None

  def features(self, images) -> np.ndarray:
    x = float_images(images, 'Marra19')
    return batched(lambda v: noise_residual(v, self.cfg['sigma']), x)

  def fit(self, images, labels):
    r = self.features(images).astype(np.float64)
    labels = check_labels(r, labels, 'Marra19')
    self.classes_ = np.unique(labels)
    self.fingerprints_ = np.stack([r[labels == c].mean(0) for c in self.classes_])
    return self

  def correlations(self, images) -> np.ndarray:
    if self.fingerprints_ is None:
      raise ValueError('Marra19: call fit first')
    return _normalise(self.features(images).astype(np.float64)) @ _normalise(self.fingerprints_).T

  def predict(self, images) -> np.ndarray:
    return self.classes_[self.correlations(images).argmax(1)]
