"""McClo18 (McCloskey & Albright): colour-saturation and exposure statistics -> linear classifier.

Per image: normalised histogram of HSV saturation (max-min)/max, normalised histogram of
intensity (mean over channels), and the fractions of under-exposed (all channels 0) and
over-exposed (all channels 255) pixels. Bins are computed in integer arithmetic on the
0-255 values, so they are exact. Grayscale images have zero saturation everywhere; their
saturation histogram is constant (the probe ignores constant features) and the method then
rests on the exposure statistics.
"""
import jax.numpy as jnp

from fpjax.baselines._common import LinearBaseline


def mcclo18_features(x, sat_bins: int = 16, int_bins: int = 16):
  u = jnp.round(x * 255.0).astype(jnp.int32)                    # [B,H,W,C] 0..255
  c = u.shape[-1]
  mx, mn = u.max(-1), u.min(-1)
  sat_bin = jnp.where(mx > 0, (sat_bins * (mx - mn)) // jnp.maximum(mx, 1), 0)
  sat_bin = jnp.minimum(sat_bin, sat_bins - 1)
  int_bin = (int_bins * u.sum(-1)) // (256 * c)
  npix = mx.shape[1] * mx.shape[2]
  hist = lambda b, k: (b.reshape(b.shape[0], -1)[..., None] == jnp.arange(k)).sum(1) / npix
  under = (mx == 0).reshape(mx.shape[0], -1).mean(1, keepdims=True)
  over = (mn == 255).reshape(mn.shape[0], -1).mean(1, keepdims=True)
  return jnp.concatenate([hist(sat_bin, sat_bins), hist(int_bin, int_bins), under, over],
                         1).astype(jnp.float32)


class McClo18(LinearBaseline):
  QUICK = dict(sat_bins=16, int_bins=16, l2=1e-4)

  def _features(self, x):
    return mcclo18_features(x, self.cfg['sat_bins'], self.cfg['int_bins'])
