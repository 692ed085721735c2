"""Fingerprints used as distributions: a Gaussian per model, attribution by likelihood.

A model's fingerprint is the distribution of its artifacts. Here each model c gets a Gaussian
N(mu_c, Sigma_c) with a low-rank + diagonal covariance built from streamed sufficient
statistics (:class:`fpjax.stats.FingerprintStats`: per-model mean, per-coordinate variance,
and the covariance C_c [p, p] of the coordinates in a shared orthonormal basis U [D, p]):

    Sigma_c = U C_c U^T + diag(psi_c),   psi_c = max(var_c - diag(U C_c U^T), floor_c),

so Sigma_c has the model's per-coordinate variances on its diagonal (exactly, where the floor
does not bind; floor_c = var_floor * mean(var_c)) and its low-rank part is the model's
covariance inside span(U). With p = D it is the full sample covariance plus floor_c * I, with
p = 0 a diagonal Gaussian.
Writing C_c = V diag(lam) V^T and A_c = U V diag(sqrt(lam)) [D, p], Sigma_c = Psi + A A^T, and
(Woodbury identity, matrix determinant lemma), with M = I_p + A^T Psi^{-1} A = L L^T,

    r^T Sigma^{-1} r = r^T Psi^{-1} r - ||L^{-1} A^T Psi^{-1} r||^2,
    log det Sigma    = sum log psi + 2 sum log diag(L),
    log p(x | c)     = -(r^T Sigma^{-1} r + log det Sigma + D log 2 pi) / 2,  r = x - mu_c,

at O(D p) per model and sample instead of O(D^2). Attribution: predict = argmax_c log p(x | c)
(equal priors); open-set score = max_c log p(x | c), low = made by no known model.

Precision: :meth:`GaussianFingerprints.log_likelihood` runs in float64 numpy on the host;
:meth:`GaussianFingerprints.log_likelihood_device` in float32 on the device with every dot
product at lax.Precision.HIGHEST (batched, jitted).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from fpjax.stats import FingerprintStats

HIGHEST = jax.lax.Precision.HIGHEST
LOG_2PI = math.log(2.0 * math.pi)


def _flat(x) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim < 2:
    raise ValueError(f'artifacts must be [N, ...], got shape {x.shape}')
  return x.reshape(len(x), -1)


@dataclasses.dataclass(frozen=True)
class GaussianFingerprints:
  """One Gaussian per model: Sigma_c = diag(diag[c]) + factor[c] factor[c]^T (float64)."""
  labels: np.ndarray    # [L] the models' labels (models with no artifacts are left out)
  mean: np.ndarray      # [L, D]
  diag: np.ndarray      # [L, D] psi_c > 0
  factor: np.ndarray    # [L, D, p] A_c
  whiten: np.ndarray = dataclasses.field(init=False, repr=False)  # [L, p, D] L^-1 A^T Psi^-1
  logdet: np.ndarray = dataclasses.field(init=False, repr=False)  # [L]

  def __post_init__(self):
    whiten, logdet = [], []
    for psi, a in zip(self.diag, self.factor):
      scaled = a / psi[:, None]                                    # Psi^-1 A  [D, p]
      chol = np.linalg.cholesky(np.eye(a.shape[1]) + a.T @ scaled)
      whiten.append(np.linalg.solve(chol, scaled.T))               # L^-1 A^T Psi^-1 [p, D]
      logdet.append(np.sum(np.log(psi)) + 2.0 * np.sum(np.log(np.diag(chol))))
    object.__setattr__(self, 'whiten', np.asarray(whiten).reshape(
        len(self.labels), self.factor.shape[2], self.mean.shape[1]))
    object.__setattr__(self, 'logdet', np.asarray(logdet, np.float64))

  @classmethod
  def from_stats(cls, stats: FingerprintStats, *, var_floor: float = 1e-3,
                 labels=None) -> 'GaussianFingerprints':
    """The models' Gaussians from finalized statistics (their `basis` spans the low rank).

    var_floor: each psi_c is at least var_floor * mean(var_c) (and 1e-12): a model's
      covariance stays invertible where its artifacts do not vary.
    labels: the models' labels, one per statistics row (default 0 .. L-1).
    """
    fin = stats.finalize()
    count = np.asarray(fin['count'])
    keep = np.flatnonzero(count > 0)
    if keep.size == 0:
      raise ValueError('GaussianFingerprints.from_stats: no model has any artifact')
    names = np.arange(len(count)) if labels is None else np.asarray(labels)
    mean = np.asarray(fin['mean'], np.float64).reshape(len(count), -1)[keep]
    var = np.asarray(fin['var'], np.float64).reshape(len(count), -1)[keep]
    basis = np.asarray(stats.basis, np.float64)
    factors, diags = [], []
    for c, v in zip(np.asarray(fin['cov'], np.float64)[keep], var):
      lam, vec = np.linalg.eigh(0.5 * (c + c.T))
      a = basis @ (vec * np.sqrt(np.clip(lam, 0.0, None)))
      floor = max(var_floor * float(v.mean()), 1e-12)
      diags.append(np.maximum(v - np.sum(a * a, axis=1), floor))
      factors.append(a)
    return cls(labels=names[keep], mean=mean, diag=np.asarray(diags),
               factor=np.asarray(factors).reshape(len(keep), mean.shape[1], basis.shape[1]))

  @classmethod
  def fit(cls, artifacts, labels, *, rank: int = 16, var_floor: float = 1e-3,
          batch_size: int = 4096) -> 'GaussianFingerprints':
    """Fits from artifacts [N, ...] and model labels [N] (integers >= 0) through
    FingerprintStats: the shared basis is the top-``rank`` eigenvectors of the pooled
    within-model covariance (float64), the statistics stream ``batch_size`` rows at a time."""
    x = _flat(artifacts)
    y = np.asarray(labels)
    if y.shape != (len(x),) or len(x) == 0 or y.min() < 0:
      raise ValueError(f'fit: expected labels [N={len(x)}] of integers >= 0, got {y.shape}')
    classes, inv = np.unique(y, return_inverse=True)
    centred = x - np.stack([x[inv == c].mean(0) for c in range(len(classes))])[inv]
    rank = int(min(max(rank, 0), x.shape[1]))
    _, vec = np.linalg.eigh(centred.T @ centred / len(x))
    basis = vec[:, ::-1][:, :rank]
    stats = FingerprintStats.init(len(classes), (x.shape[1],), basis=basis.astype(np.float32))
    for a in range(0, len(x), batch_size):
      part = slice(a, a + batch_size)
      stats = stats.update(jnp.asarray(x[part], jnp.float32),
                           jnp.zeros(len(x[part]), jnp.float32), jnp.asarray(inv[part]))
    return cls.from_stats(stats, var_floor=var_floor, labels=classes)

  def covariance(self, i: int) -> np.ndarray:
    """Sigma of the i-th model, dense [D, D] (float64; for checks, O(D^2) memory)."""
    return np.diag(self.diag[i]) + self.factor[i] @ self.factor[i].T

  def log_likelihood(self, artifacts) -> np.ndarray:
    """log p(x | model) [N, L], float64 on the host."""
    x = _flat(artifacts)
    out = np.empty((len(x), len(self.labels)))
    for i in range(len(self.labels)):
      r = x - self.mean[i]
      quad = np.sum(r * r / self.diag[i], axis=1) - np.sum(np.square(r @ self.whiten[i].T), 1)
      out[:, i] = -0.5 * (quad + self.logdet[i] + x.shape[1] * LOG_2PI)
    return out

  def log_likelihood_device(self, artifacts) -> jax.Array:
    """log p(x | model) [N, L], float32 on the device (dot products at HIGHEST)."""
    x = jnp.asarray(artifacts, jnp.float32).reshape(len(artifacts), -1)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    return _log_likelihood(x, f32(self.mean), f32(self.diag), f32(self.whiten), f32(self.logdet))

  def predict(self, artifacts) -> np.ndarray:
    """The most likely model's label per artifact [N]."""
    return self.labels[np.argmax(self.log_likelihood(artifacts), axis=1)]

  def openset_score(self, artifacts) -> np.ndarray:
    """max_c log p(x | c) [N]: low means made by no known model."""
    return np.max(self.log_likelihood(artifacts), axis=1)


@jax.jit
def _log_likelihood(x, mean, diag, whiten, logdet):
  def one(mu, psi, w, ld):
    r = x - mu
    proj = jnp.dot(r, w.T, precision=HIGHEST)
    quad = jnp.sum(r * r / psi, axis=1) - jnp.sum(proj * proj, axis=1)
    return -0.5 * (quad + ld + x.shape[1] * LOG_2PI)
  return jax.vmap(one, out_axes=1)(mean, diag, whiten, logdet)
