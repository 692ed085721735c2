"""The certificate: rounding-error bounds that prove a k-NN answer exact.

The candidate search ranks bank rows by a low-precision (bfloat16) or reduced-space estimate of
‖q − b‖²; the exact re-rank then computes ‖q − b‖² in float32 for the rows of the kept
candidate groups only. A row left out had a searched value >= the last kept group minimum;
its true distance is at least that minus the bound below (`exclusion_bound`). When that lower
bound beats the k-th exact distance (`beats`), no row left out can be among the k nearest, and
the answer is *certified*.

Reduced search (fpjax.knn.reduced). The search runs on x̂ = [Vᵀx, ρ(x)] with ρ(x) bounding
the norm of the residual x − V Vᵀx; by Cauchy–Schwarz on the residuals
    ‖q − b‖² ≥ ‖q‖² + ‖b‖² − 2 q̂·b̂,
so it ranks by a lower bound of the distance, and the bound holds for any float32 basis V (its
measured ‖VᵀV − I‖ enters it). `reduce_rows` computes x̂ and the error terms from norms, with
one matmul.

Higham's γ_n (`gamma`) is written once here; every bound of the package uses it.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

F32_EPS = 2.0 ** -24  # unit roundoff of float32
# Unit roundoff of the search dtype's products (float32 products: counted in γ_D).
UNIT_ROUNDOFF = {jnp.dtype(jnp.bfloat16): 2.0 ** -8, jnp.dtype(jnp.float32): 0.0}
# The reduction's product Vᵀx sums partial products of at most this many columns (its rounding
# bound shrinks from γ_D to γ_(k+B); see blocked_product).
PRODUCT_BLOCK = 256


def gamma(n: int) -> float:
  """Higham's γ_n: relative error bound of an n-term float32 sum or dot product."""
  return n * F32_EPS / (1.0 - n * F32_EPS)


class ReducedConsts(NamedTuple):
  """Bank-wide scalars of the reduced search's error bound (module doc), float32 [] each."""
  max_search_norm2: jax.Array  # max ‖b̂‖² over the real rows
  max_proj_norm: jax.Array     # max ‖p_b‖ (rounded up, as reduce_rows returns it)
  max_eta: jax.Array           # max η_b
  orth_err: jax.Array          # ‖VᵀV − I‖ of the float32 basis


def blocked_product(xc, basis):
  """p = xc·V [n, r] as a running sum of partial products over column blocks of at most
  PRODUCT_BLOCK columns, and the length k + B of the longest chain of roundings in it.

  A D-term float32 dot product is only known to be within γ_D Σ|x_i V_ij| of the exact one,
  whatever order XLA sums in; summing B partial products of k = D / B columns in sequence (a
  lax.scan, which XLA cannot reassociate) brings that to γ_(k+B): 4x smaller at D = 784 and
  11x at D = 3,072, for the same flops. The reduced search's ρ and η (``reduce_rows``) are made
  of this bound.
  """
  n, dim = xc.shape
  blocks = -(-dim // PRODUCT_BLOCK)
  k = -(-dim // blocks)
  if blocks * k != dim:  # zero columns: exact, and every block then has k columns
    xc = jnp.pad(xc, ((0, 0), (0, blocks * k - dim)))
    basis = jnp.pad(basis, ((0, blocks * k - dim), (0, 0)))

  def step(p, b):
    xb = lax.dynamic_slice_in_dim(xc, b * k, k, axis=1)
    vb = lax.dynamic_slice_in_dim(basis, b * k, k, axis=0)
    return p + jnp.dot(xb, vb, precision=lax.Precision.HIGHEST), None
  p, _ = lax.scan(step, jnp.zeros((n, basis.shape[1]), jnp.float32), jnp.arange(blocks))
  return p, k + blocks


def reduce_rows(xc, norm2, basis, orth_err):
  """Search vectors of centred rows xc [n, D] (norm2 = fl(‖xc‖²)) on the basis V [D, r].

  Returns x̂ = [p, ρ] [n, r+1] with p = fl(Vᵀx), and per row ‖p‖ and η (float32).
  With r_x the exact residual x − V p: ρ ≥ ‖r_x‖ and η ≥ ‖Vᵀ r_x‖, so for any two rows
      x·y ≤ p_x·p_y + ρ_x ρ_y + η_x‖p_y‖ + η_y‖p_x‖ + ‖VᵀV − I‖ ‖p_x‖‖p_y‖.
  Both come from norms, so one product (p) is the only bank-sized matmul:

  G = VᵀV, o ≥ ‖G − I‖, e = p − Vᵀx the rounding of p's dot products, summed in blocks
  (``blocked_product``, γ_p = γ_(k+B+2)): |e_j| ≤ γ_p Σ_i |x_i||V_ij| ≤ γ_p ‖x‖‖V_:j‖ ≤
  γ_p (1+o) ‖x‖, as ‖V_:j‖² = G_jj ≤ 1 + o; so ‖e‖ ≤ γ_p √r (1+o) ‖x‖ and
  |e·p| ≤ γ_p (1+o) ‖x‖ ‖p‖₁. Vᵀr_x = Vᵀx − Gp = −e − (G − I)p gives η = ‖e‖ + o‖p‖
  (bounds rounded up), and
      ‖r_x‖² = ‖x‖² − 2pᵀVᵀx + pᵀGp = ‖x‖² − ‖p‖² + 2e·p + pᵀ(G − I)p
             ≤ ‖x‖² − ‖p‖² + 2γ_p (1+o) ‖x‖ ‖p‖₁ + o‖p‖².
  With s_x = norm2 and s_p = fl(‖p‖²) (each within γ_n of the norm², so ‖x‖² − ‖p‖² ≤
  s_x − s_p + 2γ_D (s_x + s_p)), fl(s_x − s_p) within u(s_x + s_p) of s_x − s_p, and the
  float32 evaluation below (a few roundings, each ≤ u times s_x + s_p or the other terms):
      ρ² = fl(s_x − s_p) + (2γ_D + 12u)(1 + 8u)(s_x + s_p)
           + 2γ_p (1+o)(1+γ_D)(1+γ_r)(1 + 64u) √s_x fl(‖p‖₁) + o (1 + 2γ_r)(1 + 8u) s_p.
  The cancellation in s_x − s_p (rows almost inside span V) is covered by the γ terms: such a
  row gets ρ ≈ √(4γ_D + 2γ_p ‖p‖₁/‖p‖)‖x‖ instead of ~0, which loosens the search bound, never
  breaks it.
  Square roots are rounded up by 64u (XLA's may be a few ulp off on some backends).
  """
  dim, r = basis.shape
  u = F32_EPS
  gd, gr = gamma(dim + 2), gamma(r + 2)
  p, chain = blocked_product(xc, basis)
  gp = gamma(chain + 2)
  sp = jnp.sum(p * p, axis=1)
  l1 = jnp.sum(jnp.abs(p), axis=1)
  up = 1.0 + 64.0 * u
  rho2 = ((norm2 - sp) + (2.0 * gd + 12.0 * u) * (1.0 + 8.0 * u) * (norm2 + sp)
          + (2.0 * gp * (1.0 + gd) * (1.0 + gr) * up) * (1.0 + orth_err) * jnp.sqrt(norm2) * l1
          + orth_err * ((1.0 + 2.0 * gr) * (1.0 + 8.0 * u)) * sp)
  rho = jnp.sqrt(jnp.maximum(rho2, 0.0)) * up
  pn = jnp.sqrt(sp) * (1.0 + gd)  # ≥ ‖p‖
  eta = (gp * math.sqrt(r) * (1.0 + gd) * (1.0 + orth_err) * jnp.sqrt(norm2)
         + orth_err * pn) * up
  return jnp.concatenate([p, rho[:, None]], axis=1), pn, eta


def exclusion_bound(*, dim, qn, bmax2, search_dtype, last_minimum=None, reduced=None):
  """How far below a row's true ‖q − b‖² its searched value may lie, per query [q] (float32).

  dim: D; qn: fl(‖q − μ‖²) [q]; bmax2: the largest real fl(‖b − μ‖²) of the slice.
  search_dtype None (direct differences): the bound scales with `last_minimum`, the c-th kept
  group minimum [q]. reduced: None, or (q̂ [q, r+1], ‖p_q‖ [q], η_q [q], ReducedConsts) of a
  reduced search (module doc).
  """
  g = gamma(dim)
  bmax = jnp.sqrt(bmax2)
  qnorm = jnp.sqrt(qn)
  rounding = 6.0 * F32_EPS * (qnorm + bmax) ** 2  # of the norms and the final sum
  if search_dtype is None:
    return 2.0 * g * last_minimum + rounding
  u = UNIT_ROUNDOFF[jnp.dtype(search_dtype)]
  if reduced is None:
    return (2.0 * (u * (2.0 + u) + g * (1.0 + u) ** 2) * qnorm * bmax
            + g * (qn + bmax ** 2) + rounding)
  q_hat, q_pn, q_eta, consts = reduced
  gs = gamma(q_hat.shape[1])
  qhat_n = jnp.sqrt(jnp.sum(q_hat * q_hat, axis=1))
  return (2.0 * (u * (2.0 + u) + gs * (1.0 + u) ** 2) * qhat_n
          * jnp.sqrt(consts.max_search_norm2)
          + 2.0 * (q_eta * consts.max_proj_norm + q_pn * consts.max_eta
                   + consts.orth_err * q_pn * consts.max_proj_norm)
          + g * (qn + bmax2) + rounding)


def excluded(group_minimum, bound):
  """A true-distance lower bound [q] for every row of a group whose searched minimum is
  `group_minimum` [q] (and of every later group)."""
  return group_minimum - 1.25 * bound


def beats(lower, dk, dim):
  """True where a row with true distance >= `lower` cannot be among the k nearest (nor tie)
  when the k-th exact float32 distance found is `dk` (both [q])."""
  return lower > dk * (1.0 + 2.0 * gamma(dim)) + 1e-30
