"""The certificate bounds (fpjax.knn.bounds): the reduced search's ρ, η and its lower bound on
the distance hold against float64, on adversarial and tight cases, and are not vacuous."""
import jax.numpy as jnp
import numpy as np
import pytest

from fpjax.knn import bounds


def test_reduced_search_ranks_by_a_true_lower_bound(rng):
  # Large in-span coordinates and a small residual: the case where rounding of the
  # projection, not the residual, decides whether the bound holds.
  dim, r = 300, 20
  basis = np.linalg.qr(rng.normal(size=(dim, r)))[0].astype(np.float32)
  x = (100 * rng.normal(size=(200, r)) @ basis.T + 1e-3 * rng.normal(size=(200, dim)))
  x = x.astype(np.float32)
  orth = float(np.linalg.norm(basis.T.astype(np.float64) @ basis - np.eye(r))) + 1e-12
  xj = jnp.asarray(x)
  hat, pn, eta = (np.asarray(a, np.float64) for a in bounds.reduce_rows(
      xj, jnp.sum(xj * xj, axis=1), jnp.asarray(basis), orth))
  p, rho = hat[:, :r], hat[:, r]
  xd = x.astype(np.float64)
  bound = (p @ p.T + np.outer(rho, rho) + np.outer(eta, pn) + np.outer(pn, eta)
           + orth * np.outer(pn, pn))
  assert np.all(xd @ xd.T <= bound)
  assert np.all(rho >= np.linalg.norm(xd - p @ basis.T.astype(np.float64), axis=1))


@pytest.mark.parametrize("scale", [1.0, 1e6])
def test_reduction_bounds_from_norms_hold_on_adversarial_rows(rng, scale):
  # ρ and η come from ‖x‖² − ‖p‖² (one matmul), whose float32 cancellation the bound must
  # absorb: rows exactly and almost inside span(V), almost orthogonal to it, zero, typical
  # (2 % residual energy), at unit and at large norm; a basis ~1e-4 away from orthonormal.
  dim, r = 784, 255
  q64 = np.linalg.qr(rng.normal(size=(dim, r)))[0]
  basis = (q64 + 3e-7 * rng.normal(size=(dim, r))).astype(np.float32)
  v = basis.astype(np.float64)
  orth = float(np.linalg.norm(v.T @ v - np.eye(r))) * 1.01
  assert 3e-5 < orth < 1e-3
  inside = rng.normal(size=(64, r)) @ basis.T
  outside = rng.normal(size=(64, dim))
  outside -= outside @ q64 @ q64.T
  typical = inside / 0.99 + 0.14 * outside * np.linalg.norm(inside, axis=1, keepdims=True) / (
      np.linalg.norm(outside, axis=1, keepdims=True) * 0.99)
  x = np.concatenate([inside, inside + 1e-4 * outside, inside + 1e-7 * outside, outside,
                      outside + 1e-4 * inside, typical, np.zeros((2, dim))]) * scale
  x = x.astype(np.float32)
  xj = jnp.asarray(x)
  hat, pn, eta = (np.asarray(a, np.float64) for a in bounds.reduce_rows(
      xj, jnp.sum(xj * xj, axis=1), jnp.asarray(basis), orth))
  p, rho = hat[:, :r], hat[:, r]
  xd = x.astype(np.float64)
  res = xd - p @ v.T  # the exact residual of the float32 p, in float64
  true_rho = np.linalg.norm(res, axis=1)
  assert np.all(rho >= true_rho)
  assert np.all(eta >= np.linalg.norm(res @ v, axis=1))
  assert np.all(pn >= np.linalg.norm(p, axis=1))
  bound = (p @ p.T + np.outer(rho, rho) + np.outer(eta, pn) + np.outer(pn, eta)
           + orth * np.outer(pn, pn))
  assert np.all(xd @ xd.T <= bound)
  # Not vacuous: the slack is a few γ·‖x‖², about 0.02‖x‖ for ρ here.
  xn = np.linalg.norm(xd, axis=1)
  assert np.all(rho <= true_rho + 0.05 * xn)
  assert np.all(eta <= 2e-3 * xn)
  rows = slice(5 * 64, 6 * 64)  # typical rows: ρ within 5 % of the true residual
  assert np.all(rho[rows] <= 1.05 * true_rho[rows])


@pytest.mark.parametrize("eps", [1e-3, 1e-5])
def test_reduction_bound_holds_where_it_is_tight(rng, eps):
  # V = Q(I + ε wwᵀ): VᵀV − I = (2ε + ε²) wwᵀ has rank one, so for rows along Qw the bound
  # without its rounding terms is an equality (‖x‖² − ‖p‖² + o‖p‖² = ‖r_x‖² exactly) and
  # only the float32 terms of ρ keep it above the true residual (without them, about half
  # of these rows fail).
  dim, r = 3072, 8
  q = np.linalg.qr(rng.normal(size=(dim, r)))[0]
  w = rng.normal(size=r)
  w /= np.linalg.norm(w)
  basis = (q + eps * np.outer(q @ w, w)).astype(np.float32)
  v = basis.astype(np.float64)
  orth = float(np.linalg.norm(v.T @ v - np.eye(r))) + 1e-15
  x = ((q @ w)[None, :] * rng.uniform(1, 100, size=(256, 1))).astype(np.float32)
  xj = jnp.asarray(x)
  hat, pn, eta = (np.asarray(a, np.float64) for a in bounds.reduce_rows(
      xj, jnp.sum(xj * xj, axis=1), jnp.asarray(basis), orth))
  p, rho = hat[:, :r], hat[:, r]
  res = x.astype(np.float64) - p @ v.T
  assert np.all(rho >= np.linalg.norm(res, axis=1))
  assert np.all(eta >= np.linalg.norm(res @ v, axis=1))
