"""Durall20 ("Watch your up-convolution"): azimuthally averaged log power spectrum -> linear
classifier.

Per image: grayscale (channel mean), power spectrum |fftshift(FFT2)|^2, log(. + 1e-12),
azimuthal average (fpjax.stats) to a 1-D profile of R radii, min-max normalised per image
as in the authors' code. Logistic regression via the LinearProbe (the paper also used SVMs).
"""
import jax.numpy as jnp

from fpjax import stats
from fpjax.baselines._common import LinearBaseline


def durall20_features(x):
  gray = x.mean(-1, keepdims=True)
  profile = stats.azimuthal_average(jnp.log(stats.power_spectrum(gray) + 1e-12))[:, 0]
  lo = profile.min(1, keepdims=True)
  hi = profile.max(1, keepdims=True)
  return (profile - lo) / jnp.maximum(hi - lo, 1e-12)


class Durall20(LinearBaseline):
  QUICK = dict(l2=1e-4)

  def _features(self, x):
    return durall20_features(x)
