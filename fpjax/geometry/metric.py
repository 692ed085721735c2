"""The pull-back metric of a decoder and the discretised energy and length of latent curves.

A decoder maps a latent point z [d] to a mean mu(z) [D] and, optionally, a standard deviation
sigma(z) [D]. Its pull-back (Riemannian) metric in the latent space is (Arvanitidis et al.,
"Latent space oddity", ICLR 2018)

    G(z) = J_mu(z)^T J_mu(z) + J_sigma(z)^T J_sigma(z),

the variance term making regions without data (where sigma grows) expensive to cross; with
``std_fn=None`` it is off and G = J_mu^T J_mu (the metric of the decoded surface).

Curves are never measured through G: a curve c_0 .. c_{S} (S = T + 1 segments, T interior
points) is decoded, f(z) = [mu(z), sigma(z)] in R^{2D}, and

    energy  E = S * sum_s ||f(c_{s+1}) - f(c_s)||^2      length  L = sum_s ||f(c_{s+1}) - f(c_s)||.

Since f(c_{s+1}) - f(c_s) = J_f(c_s) (c_{s+1} - c_s) + O(|dc|^2) and J_f^T J_f = G, E is the
metric energy int_0^1 c'(t)^T G(c(t)) c'(t) dt to first order in the step, and L is the length
of the decoded polygon (it falls short of the decoded curve's arc length by O(step^2)). This
costs S + 1 decoder evaluations per curve, against d Jacobian-vector products per point for G.
:func:`metric_tensor` forms G explicitly for tests and for reading off the geometry.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

HIGHEST = jax.lax.Precision.HIGHEST


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Decoder:
  """A decoder as a pytree: ``mean_fn(params, z) -> mu`` and optional ``std_fn``.

  ``params`` are the traced leaves (a trained network's weights); the functions are static
  (hashable; define them once at module level so that jit caches hit). ``shift`` and
  ``scale`` map the decoder's output units to the embedding space's units (a VAE trained on
  standardised embeddings: space = mu * scale + shift); the metric is taken in the decoder's
  own units. ``std_fn=None`` turns the variance term off.
  """
  params: Any
  shift: Any = None
  scale: Any = None
  mean_fn: Callable = dataclasses.field(default=None, metadata=dict(static=True))
  std_fn: Callable | None = dataclasses.field(default=None, metadata=dict(static=True))

  def mean(self, z: jax.Array) -> jax.Array:
    """mu(z) [..., D] in the decoder's units."""
    return self.mean_fn(self.params, z)

  def features(self, z: jax.Array) -> jax.Array:
    """f(z) = [mu(z), sigma(z)] (or mu(z) with the variance term off): the metric's map."""
    mu = self.mean_fn(self.params, z)
    if self.std_fn is None:
      return mu
    return jnp.concatenate([mu, self.std_fn(self.params, z)], axis=-1)

  def to_space(self, mu: jax.Array) -> jax.Array:
    """Decoder units -> the embedding space's units (the manifold point)."""
    if self.scale is not None:
      mu = mu * self.scale
    if self.shift is not None:
      mu = mu + self.shift
    return mu


def _identity(params, z):
  del params
  return z


def identity_decoder() -> Decoder:
  """mu(z) = z, no variance term: the flat (Euclidean) metric, G = I."""
  return Decoder(params=(), mean_fn=_identity)


def metric_tensor(decoder: Decoder, z: jax.Array) -> jax.Array:
  """G(z) = J_f(z)^T J_f(z) [d, d] at one latent point z [d] (mean and, if on, std parts)."""
  jac = jax.jacfwd(decoder.features)(z)
  return jnp.einsum('ki,kj->ij', jac, jac, precision=HIGHEST)


def full_curve(start: jax.Array, end: jax.Array, interior: jax.Array) -> jax.Array:
  """[T + 2, d]: the fixed ends around the T interior points."""
  return jnp.concatenate([start[None], interior, end[None]], axis=0)


def straight_line(start: jax.Array, end: jax.Array, num_points: int) -> jax.Array:
  """T = num_points interior points evenly spaced on the segment start -> end: [T, d]."""
  t = jnp.arange(1, num_points + 1, dtype=start.dtype) / (num_points + 1)
  return start[None] + t[:, None] * (end - start)[None]


def curve_basis(num_points: int) -> np.ndarray:
  """[T, T] preconditioner P: interior = straight line + P w (the optimisers' variables w).

  The energy's Hessian in the interior points is 2 S (S = T + 1) times the tridiagonal
  Laplacian tridiag(-1, 2, -1) in a flat metric; its eigenvectors are the sine modes
  phi_k(s) = sqrt(2 / S) sin(pi k s / S) with eigenvalues 2 - 2 cos(pi k / S). P = Phi
  diag((2 S (2 - 2 cos(pi k / S)))^(-1/2)) makes that Hessian the identity in w, so L-BFGS
  meets a conditioning of the metric alone instead of the metric times ~T^2.
  """
  s = num_points + 1
  k = np.arange(1, num_points + 1)
  phi = np.sqrt(2.0 / s) * np.sin(np.pi * np.outer(k, k) / s)
  return (phi / np.sqrt(2.0 * s * (2.0 - 2.0 * np.cos(np.pi * k / s)))[None]).astype(np.float32)


def interior_points(start: jax.Array, end: jax.Array, w: jax.Array) -> jax.Array:
  """The T interior points straight_line(start, end, T) + P w (w [T, d], P = curve_basis)."""
  basis = jnp.asarray(curve_basis(w.shape[-2]), w.dtype)
  return straight_line(start, end, w.shape[-2]) + jnp.dot(basis, w, precision=HIGHEST)


def basis_coordinates(start: jax.Array, end: jax.Array, interior: jax.Array) -> jax.Array:
  """w such that interior_points(start, end, w) = interior (warm starts)."""
  basis = jnp.asarray(curve_basis(interior.shape[-2]), interior.dtype)
  return jnp.linalg.solve(basis, interior - straight_line(start, end, interior.shape[-2]))


def _segments(decoder: Decoder, curve: jax.Array) -> jax.Array:
  f = decoder.features(curve)
  return f[1:] - f[:-1]


def curve_energy(decoder: Decoder, start, end, interior) -> jax.Array:
  """Discretised energy S * sum_s ||f(c_{s+1}) - f(c_s)||^2 (S = T + 1 segments)."""
  seg = _segments(decoder, full_curve(start, end, interior))
  return seg.shape[0] * jnp.sum(seg * seg)


def curve_length(decoder: Decoder, start, end, interior) -> jax.Array:
  """Length of the decoded polygon, sum_s ||f(c_{s+1}) - f(c_s)||."""
  seg = _segments(decoder, full_curve(start, end, interior))
  return jnp.sum(safe_norm(seg))


def safe_norm(x: jax.Array) -> jax.Array:
  """||x|| over the last axis with a zero (not NaN) gradient at x = 0 (coincident points)."""
  sq = jnp.sum(x * x, axis=-1)
  nonzero = sq > 0
  return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1.0)), 0.0)
