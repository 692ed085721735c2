"""Dzanic20: power-law fit to the high-frequency decay of the azimuthal power spectrum.

Per image: grayscale, power spectrum, azimuthal average P(k), normalised by P(0) (the DC
term, + 1e-12). On the high-frequency half of the radii inside the inscribed circle,
k in [k_max * fraction, k_max] with k_max = min(H, W) // 2, least squares fit of
log P(k) = c - b log k. Features: (c, b, RMS residual of the fit) -> LinearProbe.
Simplification: Dzanic et al. fit per image and classify the fit parameters with a
KNN/SVM; here it is the same logistic regression as the other linear baselines.
"""
import jax.numpy as jnp
from jax import lax

from fpjax import stats
from fpjax.baselines._common import LinearBaseline


def dzanic20_features(x, fraction: float = 0.5):
  h, w = x.shape[1:3]
  k_max = min(h, w) // 2
  k_lo = max(1, int(round(k_max * fraction)))
  p = stats.azimuthal_average(stats.power_spectrum(x.mean(-1, keepdims=True)))[:, 0]
  logp = jnp.log(p[:, k_lo:k_max + 1] + 1e-12) - jnp.log(p[:, :1] + 1e-12)
  logk = jnp.log(jnp.arange(k_lo, k_max + 1, dtype=jnp.float32))
  xm = logk - logk.mean()
  # A least-squares slope is a feature the probe relies on: full float32 on every backend.
  slope = jnp.dot(logp - logp.mean(1, keepdims=True), xm,
                  precision=lax.Precision.HIGHEST) / jnp.sum(xm * xm)
  intercept = logp.mean(1) - slope * logk.mean()
  resid = logp - (intercept[:, None] + slope[:, None] * logk)
  rms = jnp.sqrt(jnp.mean(resid * resid, 1))
  return jnp.stack([intercept, -slope, rms], 1)


class Dzanic20(LinearBaseline):
  QUICK = dict(fraction=0.5, l2=1e-4)

  def _features(self, x):
    return dzanic20_features(x, self.cfg['fraction'])
