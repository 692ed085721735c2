"""Fingerprint statistics: streaming, mergeable summaries of each model's artifacts.

A model's fingerprint is the distribution of its artifacts. `FingerprintStats`
summarises it per generative-model label with moments that merge exactly
(Chan et al.'s parallel combination), so partial states from batches, devices or
hosts combine into the statistics of the whole.

Precision: the streaming sums are float32 on the device, every dot product in them at
`lax.Precision.HIGHEST`; `finalize` and the Fisher discriminant ratio are float64 numpy
on the host.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Statistics are promised to match float64 within float32 rounding on every backend, but
# GPUs run float32 matmuls in TF32 and TPUs in bfloat16 passes by default (a covariance in
# a basis came out 6 % off on an H200): every dot product here asks for full float32.
HIGHEST = lax.Precision.HIGHEST


def power_spectrum(x: jax.Array) -> jax.Array:
  """|fftshift(FFT2)|² per channel: [N, H, W, C] -> [N, C, H, W].

  float32 on CPU and GPU (an FFT is not a matmul, TF32 does not apply); JAX exposes no
  precision for the TPU's FFT (jax-ml/jax#9881).
  """
  f = jnp.fft.fftshift(jnp.fft.fft2(jnp.moveaxis(x, -1, 1), axes=(2, 3)), axes=(2, 3))
  return (f.real ** 2 + f.imag ** 2).astype(jnp.float32)


def _radius_index(h: int, w: int) -> np.ndarray:
  """Integer distance of each frequency from the centre left by fftshift."""
  y, x = np.indices((h, w))
  return np.rint(np.hypot(y - h // 2, x - w // 2)).astype(np.int32)


def azimuthal_average(p: jax.Array) -> jax.Array:
  """Mean of p [..., H, W] over rings of equal integer radius: [..., R] (Durall20)."""
  h, w = p.shape[-2:]
  r = _radius_index(h, w).ravel()
  n_r = int(r.max()) + 1
  counts = np.bincount(r, minlength=n_r).astype(np.float32)
  flat = p.reshape(-1, h * w)
  sums = jax.vmap(lambda v: jax.ops.segment_sum(v, r, num_segments=n_r))(flat)
  return (sums / counts).reshape(p.shape[:-2] + (n_r,))


def _chan_merge(n_a, mean_a, m2_a, n_b, mean_b, m2_b, outer=False):
  """Combines (count, mean, centred second moment) of two disjoint parts.

  With outer=True the second moments are co-moment matrices [L, p, p].
  """
  n = n_a + n_b
  w = jnp.where(n > 0, n_b / jnp.maximum(n, 1), 0.0)
  delta = mean_b - mean_a
  mean = mean_a + delta * w[:, None]
  scale = (n_a * w)  # n_a * n_b / n
  if outer:
    corr = jnp.einsum("l,li,lj->lij", scale, delta, delta, precision=HIGHEST)
  else:
    corr = scale[:, None] * delta * delta
  return n, mean, m2_a + m2_b + corr


def _segment_moments(x, labels, num_models):
  """Count, mean and centred second moment of the rows of x [N, D] per label."""
  n = jax.ops.segment_sum(jnp.ones(x.shape[0], jnp.float32), labels, num_models)
  mean = jax.ops.segment_sum(x, labels, num_models) / jnp.maximum(n, 1)[:, None]
  safe = jnp.clip(labels, 0, num_models - 1)
  dev = x - mean[safe]
  return n, mean, dev


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FingerprintStats:
  """Per-model running statistics of artifacts and distances to the manifold.

  Labels outside [0, num_models) (e.g. -1 for padding rows) are ignored.
  """
  count: jax.Array          # [L] float32
  mean: jax.Array           # [L, D] mean artifact: the model's mean fingerprint
  m2: jax.Array             # [L, D] sum of squared deviations (-> per-dimension variance)
  basis: jax.Array          # [D, p] orthonormal basis for the covariance (p may be 0)
  basis_mean: jax.Array     # [L, p] mean of the artifacts' coordinates in `basis`
  basis_m2: jax.Array       # [L, p, p] co-moment of those coordinates (-> covariance)
  spectrum: jax.Array       # [L, C, H, W] summed power spectra (image-shaped artifacts)
  distance_edges: jax.Array  # [B + 1] histogram bin edges
  distance_hist: jax.Array  # [L, B] counts of distances to the manifold
  artifact_shape: tuple = dataclasses.field(metadata=dict(static=True))

  @classmethod
  def init(cls, num_models: int, artifact_shape, basis=None, distance_edges=None):
    """Empty statistics.

    Args:
      num_models: number of generative-model labels L.
      artifact_shape: shape of one artifact, e.g. (28, 28, 1) or (512,).
      basis: [D, p] orthonormal columns for the covariance (e.g.
        `Manifold.principal_basis(p)`); None keeps no covariance.
      distance_edges: increasing bin edges for the distance histogram; values
        outside fall into the first or last bin. Default: 64 bins on [0, 64).
    """
    if num_models < 1:
      raise ValueError(f"num_models must be >= 1; got {num_models}")
    artifact_shape = tuple(int(s) for s in artifact_shape)
    d = math.prod(artifact_shape)
    basis = jnp.zeros((d, 0), jnp.float32) if basis is None else jnp.asarray(basis, jnp.float32)
    if basis.ndim != 2 or basis.shape[0] != d:
      raise ValueError(f"basis must be [D={d}, p]; got shape {tuple(basis.shape)}")
    edges = np.linspace(0.0, 64.0, 65) if distance_edges is None else np.asarray(distance_edges)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
      raise ValueError("distance_edges must be a strictly increasing 1-D array of >= 2 edges")
    p = basis.shape[1]
    spec_shape = ((artifact_shape[2],) + artifact_shape[:2]) if len(artifact_shape) == 3 else (0, 0, 0)
    f32 = functools.partial(jnp.zeros, dtype=jnp.float32)
    return cls(count=f32((num_models,)), mean=f32((num_models, d)), m2=f32((num_models, d)),
               basis=basis, basis_mean=f32((num_models, p)), basis_m2=f32((num_models, p, p)),
               spectrum=f32((num_models,) + spec_shape),
               distance_edges=jnp.asarray(edges, jnp.float32),
               distance_hist=f32((num_models, edges.size - 1)), artifact_shape=artifact_shape)

  @property
  def num_models(self) -> int:
    return self.count.shape[0]

  @jax.jit
  def update(self, artifact, distance, labels) -> "FingerprintStats":
    """Adds a batch: artifact [N, *shape], distance [N] or [N, k] (nearest used), labels [N]."""
    L = self.num_models
    x = artifact.reshape(artifact.shape[0], -1).astype(jnp.float32)
    labels = labels.astype(jnp.int32)
    n_b, mean_b, dev = _segment_moments(x, labels, L)
    m2_b = jax.ops.segment_sum(dev * dev, labels, L)
    count, mean, m2 = _chan_merge(self.count, self.mean, self.m2, n_b, mean_b, m2_b)

    y = jnp.dot(x, self.basis, precision=HIGHEST)
    _, ymean_b, ydev = _segment_moments(y, labels, L)
    ym2_b = jax.ops.segment_sum(jnp.einsum("ni,nj->nij", ydev, ydev, precision=HIGHEST), labels, L)
    _, basis_mean, basis_m2 = _chan_merge(self.count, self.basis_mean, self.basis_m2,
                                          n_b, ymean_b, ym2_b, outer=True)

    spectrum = self.spectrum
    if len(self.artifact_shape) == 3:
      spectrum = spectrum + jax.ops.segment_sum(power_spectrum(artifact.astype(jnp.float32)),
                                                labels, L)

    dist = distance if distance.ndim == 1 else distance[:, 0]
    n_bins = self.distance_hist.shape[1]
    bins = jnp.clip(jnp.searchsorted(self.distance_edges, dist, side="right") - 1, 0, n_bins - 1)
    flat = jnp.where((labels >= 0) & (labels < L), labels * n_bins + bins, -1)
    hist = self.distance_hist + jax.ops.segment_sum(
        jnp.ones_like(dist, jnp.float32), flat, L * n_bins).reshape(L, n_bins)
    return dataclasses.replace(self, count=count, mean=mean, m2=m2, basis_mean=basis_mean,
                               basis_m2=basis_m2, spectrum=spectrum, distance_hist=hist)

  @jax.jit
  def merge(self, other: "FingerprintStats") -> "FingerprintStats":
    """Statistics of the union of the two parts' samples (exact up to rounding)."""
    count, mean, m2 = _chan_merge(self.count, self.mean, self.m2, other.count, other.mean, other.m2)
    _, bmean, bm2 = _chan_merge(self.count, self.basis_mean, self.basis_m2,
                                other.count, other.basis_mean, other.basis_m2, outer=True)
    return dataclasses.replace(self, count=count, mean=mean, m2=m2, basis_mean=bmean,
                               basis_m2=bm2, spectrum=self.spectrum + other.spectrum,
                               distance_hist=self.distance_hist + other.distance_hist)

  def finalize(self) -> dict:
    """Numpy summaries per model (population moments, ddof = 0).

    count [L]; mean, var [L, *shape]; cov [L, p, p]; power_spectrum [L, C, H, W] and
    radial_profile [L, R] (channel-averaged) for image-shaped artifacts; distance_hist
    [L, B] with distance_edges [B + 1]; fdr, the Fisher discriminant ratio of the models
    (NaN with fewer than two models seen).
    """
    n = np.asarray(self.count, np.float64)
    safe = np.maximum(n, 1.0)
    shape = (self.num_models,) + self.artifact_shape
    out = dict(
        count=n.astype(np.int64),
        mean=np.asarray(self.mean).reshape(shape),
        var=(np.asarray(self.m2, np.float64) / safe[:, None]).reshape(shape),
        cov=np.asarray(self.basis_m2, np.float64) / safe[:, None, None],
        distance_hist=np.asarray(self.distance_hist).astype(np.int64),
        distance_edges=np.asarray(self.distance_edges),
    )
    out["fdr"] = (fdr_from_moments(n, np.asarray(self.mean, np.float64),
                                   np.asarray(self.m2, np.float64) / safe[:, None])
                  if (n > 0).sum() >= 2 else float("nan"))
    if len(self.artifact_shape) == 3:
      spec = np.asarray(self.spectrum, np.float64) / safe[:, None, None, None]
      out["power_spectrum"] = spec
      out["radial_profile"] = np.asarray(azimuthal_average(jnp.asarray(spec.mean(axis=1))))
    return out


def fdr_from_moments(count, mean, var) -> float:
  """trace(S_B) / trace(S_W) from per-class counts [L], means [L, D] and variances [L, D].

  S_B = Σ_c n_c (μ_c − μ)(μ_c − μ)ᵀ and S_W = Σ_c Σ_{i∈c} (x_i − μ_c)(x_i − μ_c)ᵀ;
  classes with no samples are left out.
  """
  count = np.asarray(count, np.float64)
  keep = count > 0
  n, mu_c, var = count[keep], np.asarray(mean, np.float64)[keep], np.asarray(var, np.float64)[keep]
  if n.size < 2:
    raise ValueError("the Fisher discriminant ratio needs at least two classes with samples")
  mu = (n[:, None] * mu_c).sum(0) / n.sum()
  between = float((n * ((mu_c - mu) ** 2).sum(1)).sum())
  within = float((n[:, None] * var).sum())
  return between / within if within > 0 else float("inf")


def fisher_discriminant_ratio(features, labels) -> float:
  """Fisher discriminant ratio trace(S_B)/trace(S_W) of features [N, ...] (float64)."""
  x = np.asarray(features, np.float64).reshape(len(features), -1)
  labels = np.asarray(labels)
  if x.shape[0] != labels.shape[0]:
    raise ValueError(f"{x.shape[0]} feature rows but {labels.shape[0]} labels")
  classes, inv = np.unique(labels, return_inverse=True)
  n = np.bincount(inv).astype(np.float64)
  mean = np.stack([x[inv == c].mean(0) for c in range(classes.size)])
  var = np.stack([x[inv == c].var(0) for c in range(classes.size)])
  return fdr_from_moments(n, mean, var)
