"""Nataraj19: co-occurrence matrices of horizontally adjacent pixel values -> small CNN.

Per channel, the matrix counts pairs (x[i, j], x[i, j+1]); it is normalised to a
frequency. Simplification (documented): the paper uses 256x256 matrices; on small images
(28x28 gives 756 pairs per channel) most of 65,536 cells are empty, so values are first
quantised to ``levels`` (default 32: value * levels // 256); levels=256 is the original.
The CNN is fpjax's SmallCNN (Adam), input [levels, levels, C].
"""
import jax
import jax.numpy as jnp
import numpy as np

from fpjax.baselines._common import CNNBaseline, batched


def cooccurrence(x, levels: int = 32):
  """float images [B,H,W,C] in [0,1] -> frequencies [B, levels, levels, C] (row = left pixel)."""
  q = (jnp.round(x * 255.0).astype(jnp.int32) * levels) // 256
  idx = q[:, :, :-1, :] * levels + q[:, :, 1:, :]                 # [B,H,W-1,C]
  b, c = idx.shape[0], idx.shape[-1]
  flat = jnp.moveaxis(idx, -1, 1).reshape(b * c, -1)
  counts = jax.vmap(lambda v: jnp.bincount(v, length=levels * levels))(flat)
  freq = counts.astype(jnp.float32) / flat.shape[1]
  return jnp.moveaxis(freq.reshape(b, c, levels, levels), 1, -1)


class Nataraj19(CNNBaseline):
  QUICK = dict(levels=32, arch='cnn', widths=(16, 32, 64), optimizer='adam', lr=1e-3,
               epochs=10, batch_size=64)

  def __init__(self, seed=0, **cfg):
    super().__init__(seed, **cfg)
    self.levels = self.cfg.pop('levels')

  def cooccurrence(self, images) -> np.ndarray:
    x = super()._inputs(images)
    return batched(lambda v: cooccurrence(v, self.levels), x)

  def _inputs(self, images):
    return self.cooccurrence(images)
