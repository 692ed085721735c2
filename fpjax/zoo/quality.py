"""Quality figures of a generative model's samples, relative to the real manifold.

- sample_to_manifold: mean Euclidean distance (pixels in [0,1], RGB space) from each sample to
  its projection on the real manifold (nearest real *train* image, fpjax.Manifold).
- real_test_to_manifold: the same for held-out real test images (what a perfect model scores).
- noise_to_manifold: the same for uniform noise images (what a useless model scores).
- diversity: mean pairwise distance between samples / mean pairwise distance between real test
  images (about 1 for a diverse model, near 0 for a collapsed one).
"""
from __future__ import annotations

import numpy as np

from fpjax.manifold import Manifold


def mean_pairwise_distance(images: np.ndarray, max_images: int = 500) -> float:
  """Mean Euclidean distance over distinct pairs (first max_images), pixels in [0,1], float64."""
  x = np.asarray(images[:max_images], np.float64).reshape(min(len(images), max_images), -1) / 255.0
  sq = np.sum(x * x, axis=1)
  d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
  n = len(x)
  return float(np.sum(np.sqrt(d2)) / (n * (n - 1)))


class QualityReference:
  """Caches the manifold of the real train images and the real/noise reference figures."""

  def __init__(self, train_images: np.ndarray, test_images: np.ndarray, seed: int = 0,
               num_reference: int = 500):
    self.manifold = Manifold.from_images(train_images, 'rgb')
    test = test_images[:num_reference]
    noise = np.random.default_rng(seed).integers(0, 256, test.shape, dtype=np.uint8)
    self.real_test_to_manifold = self.distance(test)
    self.noise_to_manifold = self.distance(noise)
    self.real_pairwise = mean_pairwise_distance(test)

  def distance(self, images: np.ndarray) -> float:
    proj = self.manifold.project(images)
    return float(np.mean(np.asarray(proj.distance)[:, 0], dtype=np.float64))

  def __call__(self, samples: np.ndarray) -> dict[str, float]:
    return {'sample_to_manifold': self.distance(samples),
            'real_test_to_manifold': self.real_test_to_manifold,
            'noise_to_manifold': self.noise_to_manifold,
            'diversity': mean_pairwise_distance(samples) / self.real_pairwise}
