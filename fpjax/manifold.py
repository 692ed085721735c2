"""The estimated real manifold and the projection of samples onto it.

The projection x* of a sample x is its nearest row of the real *bank* in the
embedding space φ; its artifact is φ(x) − φ(x*) (ManiFPT, CVPR 2024).

The search kernel (``_search``) runs under ``jax.shard_map`` on a ('data', 'bank')
mesh: each device holds a slice of the bank and a slice of the query batch,
scans its bank slice in tiles with ‖q‖² + ‖b‖² − 2 q·b and a running top-c, re-ranks
those c candidates with the exact difference form in float32, and the per-slice
top-k are all-gathered over 'bank' and merged. Memory per device is its bank slice
plus one queries × tile block; a queries × bank matrix never exists.

The candidate search (the running top-c over tiles) has two implementations that return
identical candidates: an XLA lax.scan (the CPU path and the fallback) and a fused Pallas
kernel (fpjax.knn.pallas_fused: GPU and TPU, no distance block in HBM). fpjax.knn.autotune times
them once per device kind and shape; the certificate, the exact re-rank and the fallback
stages are shared, so the choice never changes an answer.

Reduced search. Real images concentrate in a few principal directions of the bank.
When the top r directions V hold all but ``REDUCE_RESIDUAL`` of the bank's energy, the
candidate search runs on x̂ = [Vᵀx, ρ(x)] (r + 1 values instead of D), where ρ(x) bounds
the norm of the residual x − V Vᵀx. By Cauchy–Schwarz on the residuals,
    ‖q − b‖² ≥ ‖q‖² + ‖b‖² − 2 q̂·b̂,
so the search ranks rows by a *lower bound* of their distance; the candidates are then
re-ranked exactly in the full space, and the certificate (below) holds unchanged, with the
rounding of the reduction added to its error bound. Answers stay float32-exact. The bound holds
for any float32 basis V (its measured ‖VᵀV − I‖ enters it), so V only has to be good, not exact.

Building the reduced search is work the full-space search does not need, done in the
constructor and overlapped with the work both need: an SVD of a 4,096-row bank sample on the
host (float32 BLAS/LAPACK, one core, nothing to compile: the eigh of its D × D Gram matrix for
D <= 1024, a randomized SVD above, ``_top_directions``) while the bank is placed on the devices;
then one pass over the bank with a single bank-sized matmul, p = Vᵀ(x − μ), on the devices
(ρ and the other error terms come from norms, ``_reduce``), compiled in a worker thread while
the first call's kernel compiles. If the build fails the full-space search is used (same
answers, full-space speed).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from fpjax.knn import autotune as autotune_lib
from fpjax import parallel
from fpjax import spaces

# Search settings: the candidate search runs in `search_dtype`; rows are grouped
# `GROUP` at a time and the `CANDIDATE_GROUPS` groups with the smallest minimum are
# re-ranked exactly. 'exact' certifies every answer with a rounding-error bound and
# searches again in float32 for the few queries it cannot certify; 'fast' does not.
PRECISIONS = {"exact": jnp.bfloat16, "fast": jnp.bfloat16}
GROUP = 8
CANDIDATE_GROUPS = 16
# The exact re-rank takes the first _RERANK_FIRST candidate groups of every query, then the
# rest for the queries that need them, a 1/_RERANK_CHUNKS of the batch at a time (_search).
_RERANK_FIRST = 4
_RERANK_CHUNKS = 16
_RERANK_ROWS = 256
_F32_EPS = 2.0 ** -24  # unit roundoff of float32
# Reduced search: only for D >= REDUCE_MIN_DIM, with r + 1 a multiple of 64 (matmul tiles),
# r + 1 <= min(REDUCE_MAX_DIM, D / 2), and the smallest r whose residual energy on a bank
# sample is <= REDUCE_RESIDUAL (2 %: on digits >= 99.5 % of queries are then certified).
REDUCE_MIN_DIM = 256
REDUCE_MAX_DIM = 512
REDUCE_RESIDUAL = 0.02
_UNIT_ROUNDOFF = {jnp.dtype(jnp.bfloat16): 2.0 ** -8, jnp.dtype(jnp.float32): 0.0}
# The reduction's product Vᵀx sums partial products of at most this many columns (its rounding
# bound shrinks from γ_D to γ_(k+B); see _blocked_product).
_PRODUCT_BLOCK = 256
# Bank rows per step of the bank's reduction, by backend (other backends: 65,536).
_REDUCE_BATCH = {"cpu": 4096}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Projection:
  """Result of projecting samples onto the manifold.

  index: int32 [N, k], global bank rows, nearest first (ties: lowest row).
  distance: float32 [N, k], Euclidean distance in the embedding space.
  nearest: [N, *embedding_shape], φ(x*), the nearest row (Manifold.neighbour_rows gives
    all k).
  artifact: [N, *embedding_shape], φ(x) − nearest.
  """
  index: jax.Array
  distance: jax.Array
  nearest: jax.Array
  artifact: jax.Array


def check_finite(x: jax.Array, what: str) -> None:
  """Raises a ValueError naming the rows of x that hold NaN or Inf."""
  if isinstance(x, np.ndarray):  # in blocks: no bank-sized temporary
    flat = x.reshape(x.shape[0], -1)
    finite = np.concatenate([np.isfinite(flat[s:s + 65536]).all(axis=1)
                             for s in range(0, len(flat), 65536)])
  else:
    finite = parallel.to_host(jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1))
  bad = np.flatnonzero(~finite)
  if bad.size:
    shown = ", ".join(map(str, bad[:10])) + (", ..." if bad.size > 10 else "")
    raise ValueError(f"{what}: {bad.size} row(s) hold NaN or Inf values: rows {shown}")


def _gamma(n: int) -> float:
  """Higham's γ_n: relative error bound of an n-term float32 sum or dot product."""
  return n * _F32_EPS / (1.0 - n * _F32_EPS)


def _blocked_product(xc, basis):
  """p = xc·V [n, r] as a running sum of partial products over column blocks of at most
  _PRODUCT_BLOCK columns, and the length k + B of the longest chain of roundings in it.

  A D-term float32 dot product is only known to be within γ_D Σ|x_i V_ij| of the exact one,
  whatever order XLA sums in; summing B partial products of k = D / B columns in sequence (a
  lax.scan, which XLA cannot reassociate) brings that to γ_(k+B): 4x smaller at D = 784 and
  11x at D = 3,072, for the same flops. The reduced search's ρ and η (``_reduce``) are made of
  this bound.
  """
  n, dim = xc.shape
  blocks = -(-dim // _PRODUCT_BLOCK)
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


def _reduce(xc, norm2, basis, orth_err):
  """Search vectors of centred rows xc [n, D] (norm2 = fl(‖xc‖²)) on the basis V [D, r].

  (See the module doc.) Returns x̂ = [p, ρ] [n, r+1] with p = fl(Vᵀx), and per row ‖p‖ and η.
  With r_x the exact residual x − V p: ρ ≥ ‖r_x‖ and η ≥ ‖Vᵀ r_x‖, so for any two rows
      x·y ≤ p_x·p_y + ρ_x ρ_y + η_x‖p_y‖ + η_y‖p_x‖ + ‖VᵀV − I‖ ‖p_x‖‖p_y‖.
  Both come from norms, so one product (p) is the only bank-sized matmul:

  G = VᵀV, o ≥ ‖G − I‖, e = p − Vᵀx the rounding of p's dot products, summed in blocks
  (``_blocked_product``, γ_p = γ_(k+B+2)): |e_j| ≤ γ_p Σ_i |x_i||V_ij| ≤ γ_p ‖x‖‖V_:j‖ ≤
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
  u = _F32_EPS
  gd, gr = _gamma(dim + 2), _gamma(r + 2)
  p, chain = _blocked_product(xc, basis)
  gp = _gamma(chain + 2)
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


class ReducedConsts(NamedTuple):
  """Bank-wide scalars of the reduced search's error bound (module doc), float32."""
  max_search_norm2: jax.Array  # max ‖b̂‖² over the real rows
  max_proj_norm: jax.Array     # max ‖p_b‖ (rounded up, as _reduce returns it)
  max_eta: jax.Array           # max η_b
  orth_err: jax.Array          # ‖VᵀV − I‖ of the float32 basis


def _scan_tiles(qc, qs, bank, mu, bn, *, tile, c, search_dtype, precision, group_minima=None):
  """The XLA candidate search: lax.scan over bank tiles with a running top-c of groups.

  bank: the slice's search rows (centred here when mu is not None); bn: their ‖b‖² [rows],
  inf on padding rows. group_minima: None, or a kernel (qs, tile rows, their ‖b‖²) -> group
  minima [q, tile / GROUP] that replaces the tile's matmul and minima (the Mosaic GPU kernel).
  Returns group minima [q, c] ascending (ties: lower group first) and their slice-local group
  ids.
  """
  rows = bank.shape[0]
  groups_per_tile = tile // GROUP

  def strided(x):
    # Tile rows in [GROUP, groups] order: row s of group g at s · groups + g. A group minimum is
    # then the elementwise minimum of GROUP contiguous [q, groups] blocks of d (vector minima)
    # instead of a minimum over the last GROUP entries (a horizontal reduction per group).
    return jnp.swapaxes(x.reshape((groups_per_tile, GROUP) + x.shape[1:]), 0, 1).reshape(x.shape)

  def scan_tile(carry, t):
    best_d, best_g = carry
    b = lax.dynamic_slice_in_dim(bank, t * tile, tile)
    if mu is not None:
      b = b - mu
    bn_t = lax.dynamic_slice_in_dim(bn, t * tile, tile)
    # ‖q‖² is the same for a whole row of d: added after the minima, not to every entry.
    if search_dtype is None:  # direct ‖q − b‖²: no cancellation, matmul-free, slow
      d = lax.map(lambda qi: jnp.sum(jnp.square(qi - b), axis=1), qc)
      d = jnp.where(jnp.isinf(bn_t)[None, :], jnp.inf, d)
      gmin = jnp.min(d.reshape(d.shape[0], groups_per_tile, GROUP), axis=2)
    elif group_minima is not None:  # the tile's rows in order: group g is rows 8g .. 8g + 7
      gmin = group_minima(qs, b.astype(search_dtype), bn_t)
    else:
      # The same products as with the rows in order (each entry is one row's dot product);
      # only their place in d changes.
      dots = lax.dot_general(qs, strided(b.astype(search_dtype)), (((1,), (1,)), ((), ())),
                             precision=precision, preferred_element_type=jnp.float32)
      d = strided(bn_t)[None, :] - 2.0 * dots
      # Minimum per group of GROUP rows: top_k then sorts GROUP times fewer values.
      gmin = jnp.min(d.reshape(d.shape[0], GROUP, groups_per_tile), axis=1)
    gid = t * groups_per_tile + jnp.arange(groups_per_tile, dtype=jnp.int32)
    # Running candidates come first, so on equal values top_k keeps the lower group.
    cand_d = jnp.concatenate([best_d, gmin], axis=1)
    cand_g = jnp.concatenate([best_g, jnp.broadcast_to(gid, gmin.shape)], axis=1)
    neg, pos = lax.top_k(-cand_d, c)
    return (-neg, jnp.take_along_axis(cand_g, pos, axis=1)), None

  init = (jnp.full((qc.shape[0], c), jnp.inf, jnp.float32),
          jnp.zeros((qc.shape[0], c), jnp.int32))
  (group_d, group_g), _ = lax.scan(scan_tile, init, jnp.arange(rows // tile))
  return group_d, group_g


def _top_k_rows(d, i, *, k):
  """The k smallest (d, i) pairs of each row, in (distance, index) order: ties go to the
  lower index. k = 1 by two vector minima: XLA:CPU's sort of (d, i) pairs calls a comparator
  per comparison, a sizeable part of the search at k = 1."""
  if k == 1:
    dmin = jnp.min(d, axis=1, keepdims=True)
    imin = jnp.min(jnp.where(d == dmin, i, jnp.iinfo(i.dtype).max), axis=1, keepdims=True)
    return dmin, imin
  d, i = lax.sort((d, i), dimension=1, num_keys=2)
  return d[:, :k], i[:, :k]


def _search(q, bank, mu, offset, n_valid, reduced=None, *, k, config, search_dtype, groups):
  """Per-device top-k of local queries against the local bank slice.

  `reduced` (reduced search, see the module doc): (search rows x̂ of the bank slice
  [rows, r+1], their ‖b − μ‖² [rows] (inf on padding rows), the basis V [D, r], and
  the bank-wide ReducedConsts).

  `offset` and `n_valid` (traced int32 scalars: one compilation serves every chunk of
  a streamed bank) say which global rows this call's bank holds and how many are real.
  `config` (fpjax.knn.autotune.Config) picks the candidate search: the XLA tile scan or the
  fused Pallas kernel; both return the same candidates, so the answer never depends on it.
  Returns, merged over the 'bank' axis (identical on every 'bank' device):
  squared distances [q, k] (float32, exact difference form), global indices [q, k],
  and `certified` [q]: True where a rounding-error bound proves that no row left
  out of the exact re-rank could be among the k nearest.
  """
  rows, dim = bank.shape
  shard_offset = offset + lax.axis_index(parallel.BANK) * rows
  c = min(groups, rows // GROUP)
  hi = lax.Precision.HIGHEST
  # Centring on the bank mean keeps ‖q‖², ‖b‖² and q·b small, so the expansion
  # loses little to cancellation; it does not change any distance.
  qc = q - mu
  qn = jnp.sum(qc * qc, axis=1)
  precision = hi if search_dtype == jnp.float32 else None
  if reduced is not None:
    sbank, bn, basis, consts = reduced  # bn: ‖b − μ‖², inf on padding rows
    q_hat, q_pn, q_eta = _reduce(qc, qn, basis, consts.orth_err)
    qs = q_hat.astype(search_dtype)
    search_bank, search_mu = sbank, None
  else:
    qs = qc.astype(search_dtype or jnp.float32)
    row = shard_offset + jnp.arange(rows, dtype=jnp.int32)
    # Padding rows get ‖b‖² = inf: masked through a [rows] vector, not a [q, tile] select.
    bn = jnp.where(row < offset + n_valid, jnp.sum(jnp.square(bank - mu), axis=1), jnp.inf)
    search_bank, search_mu = bank, mu
  # The largest real ‖b‖² of the slice feeds the rounding-error bound below.
  bmax2 = jnp.max(jnp.where(jnp.isinf(bn), 0.0, bn))

  if config.variant == "pallas" and search_dtype is not None:
    # Imported here: jax.experimental.pallas is not loaded by `import fpjax` on the CPU path.
    from fpjax.knn import pallas_fused  # pylint: disable=g-import-not-at-top
    bs = search_bank if search_mu is None else search_bank - search_mu
    group_d, group_g = pallas_fused.group_candidates(
        qs, bs.astype(search_dtype), bn, c=c, block_q=config.block_q, block_b=config.tile,
        precision=precision, dim_block=config.dim_block, interpret=config.interpret)
  else:
    group_minima = None
    if config.variant == "mosaic_gpu" and search_dtype == jnp.bfloat16:
      from fpjax.knn import mosaic_gpu  # pylint: disable=g-import-not-at-top
      kw = {}
      if config.interpret:
        kw["interpret"], kw["bank_kn"] = mosaic_gpu.interpret_params()
      group_minima = functools.partial(mosaic_gpu.group_minima, tile_q=config.block_q,
                                       **kw)
    group_d, group_g = _scan_tiles(qc, qs, search_bank, search_mu, bn, tile=config.tile, c=c,
                                   search_dtype=search_dtype, precision=precision,
                                   group_minima=group_minima)
  if search_dtype is not None:
    group_d = group_d + qn[:, None]

  # Every row outside the kept groups has a searched distance >= the c-th kept group
  # minimum; its true distance is at least that minus the rounding bound below.
  bmax = jnp.sqrt(bmax2)
  qnorm = jnp.sqrt(qn)
  gamma = dim * _F32_EPS / (1.0 - dim * _F32_EPS)
  if search_dtype is None:
    bound = 2.0 * gamma * group_d[:, -1] + 6.0 * _F32_EPS * (qnorm + bmax) ** 2
  elif reduced is not None:
    u = _UNIT_ROUNDOFF[jnp.dtype(search_dtype)]
    gs = _gamma(sbank.shape[1])
    qhat_n = jnp.sqrt(jnp.sum(q_hat * q_hat, axis=1))
    bound = (2.0 * (u * (2.0 + u) + gs * (1.0 + u) ** 2) * qhat_n
             * jnp.sqrt(consts.max_search_norm2)
             + 2.0 * (q_eta * consts.max_proj_norm + q_pn * consts.max_eta
                      + consts.orth_err * q_pn * consts.max_proj_norm)
             + gamma * (qn + bmax2) + 6.0 * _F32_EPS * (qnorm + bmax) ** 2)
  else:
    u = _UNIT_ROUNDOFF[jnp.dtype(search_dtype)]
    bound = (2.0 * (u * (2.0 + u) + gamma * (1.0 + u) ** 2) * qnorm * bmax
             + gamma * (qn + bmax ** 2) + 6.0 * _F32_EPS * (qnorm + bmax) ** 2)
  # A row of the j-th kept group or any later one has a true distance >= excluded(j): it
  # is none of the k nearest when excluded(j) exceeds the k-th exact distance found so far.
  excluded = lambda j: group_d[:, j] - 1.25 * bound
  beats = lambda lower, dk: lower > dk * (1.0 + 2.0 * gamma) + 1e-30

  # Exact re-rank: ‖q − b‖² in float32 for every row of the candidate groups.
  def rerank_rows(qr, gg, gd):
    """Exact distances and global rows [m, j·GROUP] of queries qr [m, dim] to the rows of
    their groups gg [m, j] (gd: the groups' minima; inf marks slots never filled)."""
    def exact(args):
      g, gdj = args
      local = g[:, None] * GROUP + jnp.arange(GROUP, dtype=jnp.int32)
      b = jnp.take(bank, local, axis=0)  # [m, GROUP, dim]
      dist = jnp.sum(jnp.square(qr[:, None, :] - b), axis=2)
      # Padding rows, and slots never filled by a real group (a slice with fewer than c
      # groups), hold inf.
      valid = (shard_offset + local < offset + n_valid) & ~jnp.isinf(gdj)[:, None]
      return jnp.where(valid, dist, jnp.inf), shard_offset + local
    ed, ei = lax.map(exact, (gg.T, gd.T))  # [j, m, GROUP]
    return (jnp.moveaxis(ed, 0, 1).reshape(qr.shape[0], -1),
            jnp.moveaxis(ei, 0, 1).reshape(qr.shape[0], -1))

  def rerank(qr, gg, gd):
    # In chunks of at most _RERANK_ROWS queries: the gathered rows of one group step stay in
    # cache (1.3x faster than a step over 1,024 queries on the 2-core CPU); same sums.
    m = qr.shape[0]
    per = max(r for r in range(1, min(m, _RERANK_ROWS) + 1) if m % r == 0)
    if per == m or 4 * per < _RERANK_ROWS:  # one step, or no good divisor of m
      return rerank_rows(qr, gg, gd)
    split = lambda x: x.reshape((m // per, per) + x.shape[1:])
    ed, ei = lax.map(lambda a: rerank_rows(*a), (split(qr), split(gg), split(gd)))
    return ed.reshape(m, -1), ei.reshape(m, -1)

  top = functools.partial(_top_k_rows, k=k)

  # In two stages where the groups are many: the first c1 groups (smallest minima) for every
  # query, then the other c − c1 only for the queries whose k-th distance after the first
  # stage does not beat excluded(c1) (a quarter of them on random rows, fewer on images):
  # the rows left out cannot be among the k nearest (nor tie), so the answer is the one the
  # re-rank of all c groups gives, with far fewer bank rows gathered. Not in the last
  # (direct) stage, whose bound depends on the c-th minimum.
  nq = q.shape[0]
  c1 = max(_RERANK_FIRST, -(-k // GROUP))
  if search_dtype is None or c1 >= c:
    d, i = top(*rerank(q, group_g, group_d))
  else:
    d, i = top(*rerank(q, group_g[:, :c1], group_d[:, :c1]))
    need = ~beats(excluded(c1), d[:, -1])
    # The queries that need the other groups, first (in order), in chunks of `chunk` (a
    # divisor of the batch: chunks never overlap); as many chunks as they fill.
    order = jnp.argsort(~need, stable=True).astype(jnp.int32)
    chunk = max(m for m in range(1, max(8, nq // _RERANK_CHUNKS) + 1) if nq % m == 0)
    n_chunks = (jnp.sum(need.astype(jnp.int32)) + chunk - 1) // chunk

    def more(j, carry):
      d, i = carry
      sel = lax.dynamic_slice_in_dim(order, j * chunk, chunk)
      dm, im = top(*(jnp.concatenate(a, axis=1) for a in zip(
          (d[sel], i[sel]), rerank(q[sel], group_g[sel, c1:], group_d[sel, c1:]))))
      keep = need[sel][:, None]
      return (d.at[sel].set(jnp.where(keep, dm, d[sel])),
              i.at[sel].set(jnp.where(keep, im, i[sel])))
    d, i = lax.fori_loop(0, n_chunks, more, (d, i))

  all_kept = rows // GROUP <= c
  lower = jnp.where(all_kept, jnp.inf, excluded(-1))

  # Merge the slices: every 'bank' device ends with the same global top-k.
  d = lax.all_gather(d, parallel.BANK, axis=1, tiled=True)
  i = lax.all_gather(i, parallel.BANK, axis=1, tiled=True)
  d, i = top(d, i)
  lower = lax.pmin(lower, parallel.BANK)
  certified = beats(lower, d[:, -1])
  return d, i, certified


def search_program(mesh, *, k: int, config, search_dtype, reduced: bool = False):
  """The jitted, sharded search of one kernel call (what ``Manifold`` runs per query batch and
  bank chunk): `_search` under ``jax.shard_map`` over the ('data', 'bank') mesh.

  Arguments of the returned function: queries [q, D] (sharded over 'data'), the bank chunk
  [rows, D] (over 'bank'), the bank mean [D], the chunk's first global row and real rows
  (int32 scalars), and with `reduced` (x̂ [rows, r+1], ‖b − μ‖² [rows], V [D, r],
  ReducedConsts). Returns squared distances [q, k], indices [q, k] and `certified` [q].
  Built here, not in the class, so that tests/aot can compile it for chips it does not have.
  """
  # The k nearest rows may lie in k different groups, and the certificate needs the c-th
  # group minimum above the k-th distance: c = 2k groups (at least 16) keeps a margin (with
  # fewer than k groups even the direct stage cannot certify spread-out neighbours).
  kernel = functools.partial(_search, k=k, config=config, search_dtype=search_dtype,
                             groups=max(CANDIDATE_GROUPS, 2 * k))
  in_specs = (P(parallel.DATA, None), P(parallel.BANK, None), P(), P(), P())
  if reduced:
    in_specs += ((P(parallel.BANK, None), P(parallel.BANK), P(), P()),)
  return jax.jit(jax.shard_map(
      kernel, mesh=mesh, in_specs=in_specs,
      out_specs=(P(parallel.DATA, None), P(parallel.DATA, None), P(parallel.DATA)),
      # Replication over 'bank' comes from the all_gather/pmin merge; the varying-axes type
      # check is off because its API still moves between releases.
      check_vma=False))


def _same_certified_answers(reference, results) -> str | None:
  """Whether a candidate search's (squared distances, indices, certified) can be trusted, by
  the XLA scan's on the same batch: every query both certify has the same indices and
  distances (both are exact then, so they must be identical). None if so, else what differs."""
  (d0, i0, ok0), (d1, i1, ok1) = reference, results
  both = ok0 & ok1
  bad = np.flatnonzero(both & ((i0 != i1).any(axis=1) | (d0 != d1).any(axis=1)))
  if bad.size:
    return (f"{bad.size} of {both.sum()} certified queries have other neighbours (first: "
            f"query {bad[0]}, rows {i1[bad[0]].tolist()} instead of {i0[bad[0]].tolist()})")
  return None


def _gather_rows(index, bank):
  """The bank rows [q, j, dim] of global row indices [q, j]: each 'bank' device fills the
  rows its slice holds (zeros elsewhere) and a psum over 'bank' assembles them."""
  rows = bank.shape[0]
  start = lax.axis_index(parallel.BANK) * rows
  local = index - start
  mine = (local >= 0) & (local < rows)
  picked = jnp.take(bank, jnp.clip(local, 0, rows - 1), axis=0) * mine[..., None]
  return lax.psum(picked, parallel.BANK)


def _merge_topk(d1, i1, d2, i2, k):
  d, i = lax.sort((jnp.concatenate([d1, d2], 1), jnp.concatenate([i1, i2], 1)),
                  dimension=1, num_keys=2)
  return d[:, :k], i[:, :k]


class BankPlacement:
  """Where the bank's rows live while the kernel runs.

  Resident: one padded array sharded over 'bank' (each device holds its slice only, so a
  bank that fits the devices together never has to fit one device whole). Streamed: a
  slice over `device_bank_bytes` stays in host RAM and goes to the devices one chunk at a
  time; every chunk has the same shape, so one compiled kernel serves them all.
  The reduced search's rows (x̂, ‖x − μ‖²) follow the bank: on the devices or on the host.
  """

  def __init__(self, flat: np.ndarray, mesh, tile: int, device_bank_bytes: int | None):
    n, dim = flat.shape
    self.mesh = mesh
    self.size = n
    nb = mesh.shape[parallel.BANK]
    per_shard = -(-n // nb)
    row_bytes = 4 * dim
    if device_bank_bytes is not None and per_shard * row_bytes > device_bank_bytes:
      chunk_per_shard = max(8, device_bank_bytes // row_bytes)
      self.tile = min(tile, _round_up(chunk_per_shard, 8))
      self.chunk_rows = nb * (chunk_per_shard // self.tile * self.tile or self.tile)
      self.host_bank, self.bank = flat, None
    else:
      self.tile = min(tile, _round_up(per_shard, 8))
      unit = autotune_lib.slice_unit(mesh.devices.flat[0], per_shard, self.tile)
      self.chunk_rows = nb * _round_up(per_shard, unit)
      self.host_bank, self.bank = None, self.put(flat, 0)
    self.search_rows = self.host_search_rows = None  # set by set_search_rows

  @property
  def streamed(self) -> bool:
    return self.bank is None

  @property
  def slice_rows(self) -> int:
    """Rows of one device's slice in each kernel call."""
    return self.chunk_rows // self.mesh.shape[parallel.BANK]

  def put(self, rows, start, fill=0.0):
    """Pads rows [start, start + chunk_rows) of a host array and shards them over 'bank'."""
    chunk = rows[start:start + self.chunk_rows]
    pad = self.chunk_rows - chunk.shape[0]
    if pad:
      chunk = np.concatenate([chunk, np.full((pad,) + chunk.shape[1:], fill, chunk.dtype)])
    spec = P(parallel.BANK, *([None] * (chunk.ndim - 1)))
    return jax.device_put(chunk, NamedSharding(self.mesh, spec))

  def bank_chunks(self):
    """(bank chunk on the devices, its first global row, its real rows), in order."""
    if not self.streamed:
      yield self.bank, 0, self.size
      return
    for start in range(0, self.size, self.chunk_rows):
      yield self.put(self.host_bank, start), start, min(self.chunk_rows, self.size - start)

  def set_search_rows(self, chunks):
    """Keeps the reduced search's (x̂, ‖x − μ‖²): one device chunk, or host copies of every
    chunk without their padding rows (chunks are re-padded, ‖x − μ‖² = inf, when sent)."""
    if not self.streamed:
      (self.search_rows,) = chunks
    else:
      self.host_search_rows = tuple(np.concatenate(a) for a in zip(*chunks))

  def chunks(self, reduced: bool):
    """(bank, search rows or None, first global row, real rows) for each kernel call."""
    if not self.streamed:
      yield self.bank, self.search_rows if reduced else None, 0, self.size
      return
    for bank, start, n_valid in self.bank_chunks():
      rows = None
      if reduced:
        hat, norm2 = self.host_search_rows
        rows = (self.put(hat, start), self.put(norm2, start, np.inf))
      yield bank, rows, start, n_valid

  def rows(self, index) -> np.ndarray:
    """Host copies of bank rows (any integer index array)."""
    if self.streamed:
      return self.host_bank[index]
    return parallel.to_host(self.bank[index])


class Manifold:
  """A bank of embedded real samples, sharded over a device mesh, and its projection.

  Build with ``Manifold.from_images`` or ``Manifold.from_embeddings``.

  search_dim: 'auto' chooses the reduced search (module doc) when the bank is compressible,
  an int r forces r principal directions, None searches in the full space. Results are the
  same in every case; only the speed differs. The reduced search is built in the constructor;
  `basis` is None without it.
  autotune: time kernel configurations the first time a shape is seen and cache the fastest
  (fpjax.knn.autotune); None: on for GPU and TPU, off on the CPU (env FPJAX_AUTOTUNE=0: off).
  """

  def __init__(self, bank, *, space: spaces.Space = "rgb", mesh=None, precision: str = "exact",
               k: int = 1, image_shape=None, tile: int = 2048, device_bank_bytes: int | None = None,
               search_dim: int | str | None = "auto", autotune: bool | None = None):
    if tile % GROUP:
      raise ValueError(f"tile must be a multiple of {GROUP}; got {tile}")
    if precision not in PRECISIONS:
      raise ValueError(f"precision must be one of {sorted(PRECISIONS)}; got {precision!r}")
    n = bank.shape[0]
    if n == 0:
      raise ValueError("the real bank is empty")
    if not isinstance(k, int) or k < 1:
      raise ValueError(f"k must be a positive integer; got {k!r}")
    if k > n:
      raise ValueError(f"k = {k} is larger than the bank ({n} real samples)")
    self.space = space
    self.mesh = mesh if mesh is not None else parallel.make_mesh()
    self.precision = precision
    self.k = k
    self.size = n
    self.embedding_shape = tuple(bank.shape[1:])
    self.image_shape = tuple(image_shape) if image_shape is not None else None
    self.dim = math.prod(self.embedding_shape)
    # The bank is assembled on the host and sent to each device as its slice only.
    flat = parallel.to_host(bank).astype(np.float32, copy=False).reshape(n, self.dim)
    check_finite(flat, "real bank")
    sample = _reduction_sample(flat, search_dim)
    self.autotune = autotune_lib.enabled(autotune)
    self._tuner = autotune_lib.Tuner() if self.autotune else None
    self._configs = {}
    self._fns = {}
    with concurrent.futures.ThreadPoolExecutor(1) as worker:
      # The reduced search's basis (a host SVD of the bank sample, one core) is computed by the
      # worker while this thread takes the mean and places the bank (memory-bound, one core).
      basis_job = None if sample is None else worker.submit(_reduction_basis, sample, search_dim)
      self.mean = jnp.asarray(flat.mean(axis=0, dtype=np.float64), jnp.float32)
      self.placement = BankPlacement(flat, self.mesh, tile, device_bank_bytes)
      # The reduced search (module doc), built here: (V, ReducedConsts), or None.
      self._reduced = None if basis_job is None else self._build_reduction(basis_job, worker)
    # 'exact': queries projected, queries searched again (not certified by the first
    # search), and how many reached each fallback stage (the benchmark reports them).
    self.stats = {"queries": 0, "researched": 0, "bfloat16": 0, "float32": 0, "direct": 0}

  # The bank's placement, as attributes (fingerprinting and the benchmarks read them).
  bank = property(lambda self: self.placement.bank, doc="device bank, None when streamed")
  tile = property(lambda self: self.placement.tile)
  chunk_rows = property(lambda self: self.placement.chunk_rows)

  def _build_reduction(self, basis_job, worker):
    try:
      return self._reduce_bank(basis_job, worker)
    except Exception as e:  # pylint: disable=broad-except
      if jax.process_count() > 1:  # every host must launch the same programs: no fallback
        raise
      # Speed only: the full-space search gives the same answers.
      logging.warning("fpjax: building the reduced search failed (%s: %s); the full-space "
                      "search is used", type(e).__name__, e)
      return None

  def _reduce_bank(self, basis_job, worker):
    meanwhile = None
    if not (self.placement.streamed or self.autotune):
      # The first call's kernel (default batch, the untuned XLA scan) compiles in this thread
      # while the worker compiles the bank's reduction and the devices run it. (With
      # autotuning the first call times and compiles several configurations; a streamed bank
      # is reduced chunk by chunk.)
      def meanwhile(search_rows, reduced):
        sharding = NamedSharding(self.mesh, P(parallel.DATA, None))
        q = jax.ShapeDtypeStruct((self._batch(None), self.dim), jnp.float32, sharding=sharding)
        self._search_fn(PRECISIONS[self.precision], True).lower(
            q, self.bank, self.mean, np.int32(0), np.int32(self.size),
            search_rows + tuple(reduced)).compile()
    reduced = _reduction(basis_job, self.mean, self.placement, worker, meanwhile)
    # Built means ready to search (and a failure of the reduction shows here).
    return jax.block_until_ready((reduced, self.placement.search_rows))[0]

  basis = property(lambda self: self._reduced[0] if self._reduced else None,
                   doc="the reduced search's basis V [D, r]; None: full-space search")
  reduce_consts = property(lambda self: self._reduced[1] if self._reduced else None,
                           doc="the reduced search's ReducedConsts; None: full-space search")

  # ---- construction ---------------------------------------------------------------------
  @classmethod
  def from_images(cls, real_images, space: spaces.Space = "rgb", *, mesh=None,
                  precision: str = "exact", k: int = 1, batch_size: int = 4096, **kwargs):
    """Embeds the real images in `space` and holds them as the bank."""
    bank = spaces.embed(real_images, space, batch_size=batch_size)
    return cls(bank, space=space, mesh=mesh, precision=precision, k=k,
               image_shape=real_images.shape[1:], **kwargs)

  @classmethod
  def from_embeddings(cls, bank, space: spaces.Space | None = None, **kwargs):
    """Holds already-embedded real samples [N, ...] as the bank."""
    return cls(bank, space=space, **kwargs)

  # ---- the kernels ------------------------------------------------------------------------
  def _search_fn(self, search_dtype, reduced=False, config=None):
    config = config or autotune_lib.Config("xla", self.tile)
    key = ("search", search_dtype and jnp.dtype(search_dtype).name, reduced, config)
    if key not in self._fns:
      self._fns[key] = search_program(self.mesh, k=self.k, config=config,
                                      search_dtype=search_dtype, reduced=reduced)
    return self._fns[key]

  def _gather_fn(self):
    if "gather" not in self._fns:
      self._fns["gather"] = jax.jit(jax.shard_map(
          _gather_rows, mesh=self.mesh,
          in_specs=(P(parallel.DATA, None), P(parallel.BANK, None)),
          out_specs=P(parallel.DATA, None, None), check_vma=False))
    return self._fns["gather"]

  def _candidate_configs(self, n_queries, dim):
    """Configurations the autotuner checks and times for queries searched in `dim` dimensions;
    the first (the XLA scan at `tile`) is the default."""
    device = self.mesh.devices.flat[0]
    return autotune_lib.candidates(device.platform, self.placement.slice_rows, self.tile,
                                   n_queries, dim, getattr(device, "compute_capability", None))

  def _config(self, q, search_dtype, reduced=None, tune=False):
    """The kernel configuration for this query batch shape and stage (autotuned or default).

    Only the first search of each batch is tuned (`tune`): the fallback stages see few
    queries in ever-changing padded shapes, where timing would cost more than it saves.
    """
    if not (tune and self.autotune) or search_dtype is None:
      return autotune_lib.Config("xla", self.tile)
    n_local = q.shape[0] // self.mesh.shape[parallel.DATA]
    key = dict(bank_rows=self.placement.slice_rows,
               dim=self.dim if reduced is None else reduced[0].shape[1] + 1,
               k=self.k, dtype=jnp.dtype(search_dtype).name,
               stage="full" if reduced is None else "reduced",
               queries=n_local, streamed=self.placement.streamed,
               mesh=[self.mesh.shape[parallel.DATA], self.mesh.shape[parallel.BANK]])
    name = repr(sorted(key.items()))
    if name not in self._configs:
      compiled = {}

      def compile_only(config):
        # Compiled once, without running; the executable then serves the checks and timings.
        fn = self._search_fn(search_dtype, reduced is not None, config)
        args = next(self._chunk_args(q, reduced))
        compiled[config] = fn.lower(*args).compile()

      def run(config):
        return tuple(np.asarray(a) for a in
                     self._search_all(q, search_dtype, reduced, config, fn=compiled[config]))
      self._configs[name] = self._tuner.choose(
          str(jax.devices()[0].device_kind), key, self._candidate_configs(n_local, key["dim"]),
          run,
          compile_only, _same_certified_answers)
    return self._configs[name]

  def _chunk_args(self, q, reduced):
    """The search program's arguments for each bank chunk (one chunk unless streamed)."""
    for bank, search_rows, start, n_valid in self.placement.chunks(reduced is not None):
      args = (q, bank, self.mean, np.int32(start), np.int32(n_valid))
      if reduced is not None:
        args += (search_rows + tuple(reduced),)
      yield args

  def _search_all(self, q, search_dtype, reduced=None, config=None, tune=False, fn=None):
    """Top-k of one padded query batch over the whole bank (streamed if on host).

    reduced: None (full-space search) or (V, ReducedConsts) of a built reduced search.
    fn: the search program compiled for this shape (autotuning), else the jitted one.
    """
    if config is None:
      config = self._config(q, search_dtype, reduced, tune)
    search = fn or self._search_fn(search_dtype, reduced is not None, config)
    best = None
    for args in self._chunk_args(q, reduced):
      d, i, ok = search(*args)
      if best is None:
        best = (d, i, ok)
      else:
        best = _merge_topk(best[0], best[1], d, i, self.k) + (best[2] & ok,)
    return best

  def _nearest(self, q_all, batch):
    """Top-k squared distances and indices [n, k] of all queries [n, dim], in padded batches."""
    sharding = NamedSharding(self.mesh, P(parallel.DATA, None))
    nd = self.mesh.shape[parallel.DATA]
    n = q_all.shape[0]

    def search(rows, size, search_dtype, reduced=None, tune=False):
      # Pads to `size` rows: one shape per call, a single compilation.
      q = jnp.pad(rows, ((0, size - rows.shape[0]), (0, 0))) if rows.shape[0] < size else rows
      d, i, ok = self._search_all(jax.device_put(q, sharding), search_dtype, reduced, tune=tune)
      return d[:rows.shape[0]], i[:rows.shape[0]], ok[:rows.shape[0]]

    search_dtype = PRECISIONS[self.precision]
    reduced = self._reduced
    parts = [search(q_all[s:s + batch], batch, search_dtype, reduced, tune=True)
             for s in range(0, n, batch)]
    d, i = (jnp.concatenate(a) for a in list(zip(*parts))[:2])
    if self.precision != "exact":
      return d, i
    self.stats["queries"] += n
    redo = np.flatnonzero(~np.concatenate([parallel.to_host(p[2]) for p in parts]))
    self.stats["researched"] += redo.size
    # Queries whose search the error bound cannot certify are searched again, all batches
    # together: in the full space (after a reduced search), then with a float32 matmul,
    # then with direct differences (which the bound always certifies). Each pass pads to
    # a power of two: few compilations.
    stages = ((("bfloat16", search_dtype),) if reduced is not None else ()) + (
        ("float32", jnp.float32), ("direct", None))
    for stage, search_dtype in stages:
      if not redo.size:
        break
      self.stats[stage] += redo.size
      parts = []
      for s in range(0, redo.size, batch):
        rows = redo[s:s + batch]
        size = min(batch, _round_up(max(8, 1 << (rows.size - 1).bit_length()), nd))
        parts.append(search(q_all[rows], size, search_dtype))
      d = d.at[redo].set(jnp.concatenate([p[0] for p in parts]))
      i = i.at[redo].set(jnp.concatenate([p[1] for p in parts]))
      redo = redo[~np.concatenate([parallel.to_host(p[2]) for p in parts])]
    return d, i

  # ---- public API ---------------------------------------------------------------------------
  def project(self, images, batch_size: int | None = None) -> Projection:
    """Projects generated images onto the manifold; see ``Projection``.

    Args:
      images: uint8 or float [N, H, W, C] images, the same H, W, C as the bank.
      batch_size: queries per kernel call (default 1024 per 'data' device).
    """
    if self.image_shape is not None and tuple(images.shape[1:]) != self.image_shape:
      raise ValueError(f"images have shape [H, W, C] = {list(images.shape[1:])} but the real "
                       f"bank was built from {list(self.image_shape)}")
    if self.space is None:
      raise ValueError("this manifold was built from embeddings; use project_embedded")
    emb = spaces.embed(images, self.space, batch_size=4096)
    return self.project_embedded(emb, batch_size=batch_size)

  def project_embedded(self, embeddings, batch_size: int | None = None) -> Projection:
    """Like ``project`` for queries already in the embedding space [N, *embedding_shape]."""
    index, distance = self.search(embeddings, batch_size)
    near = self.neighbour_rows(index[:, :1], batch_size=batch_size)[:, 0]
    q = jnp.asarray(embeddings, jnp.float32).reshape(near.shape)
    return Projection(index=index, distance=distance, nearest=near, artifact=q - near)

  def search(self, embeddings, batch_size: int | None = None):
    """The k nearest bank rows of embedded queries [N, *embedding_shape], without gathering
    them: (index int32 [N, k], distance float32 [N, k]), as in ``Projection``."""
    n = embeddings.shape[0]
    if n == 0:
      raise ValueError("no queries to project (N = 0)")
    if tuple(embeddings.shape[1:]) != self.embedding_shape:
      raise ValueError(f"query embeddings have shape {list(embeddings.shape[1:])} but the bank "
                       f"has {list(self.embedding_shape)}")
    q_all = jnp.asarray(embeddings, jnp.float32).reshape(n, self.dim)
    check_finite(q_all, "queries")
    d, index = self._nearest(q_all, self._batch(batch_size))
    return index, jnp.sqrt(jnp.maximum(d, 0.0))

  def neighbour_rows(self, index, batch_size: int | None = None) -> jax.Array:
    """The bank rows of global row indices [n, j] (e.g. ``Projection.index``), float32
    [n, j, *embedding_shape].

    A resident bank is gathered on the devices (each 'bank' device contributes the rows of
    its slice), in padded batches of `batch_size` queries: one compilation per j. A
    streamed bank's rows are read from host RAM.
    """
    index = np.asarray(parallel.to_host(index))
    if index.ndim != 2 or not np.issubdtype(index.dtype, np.integer):
      raise ValueError(f"index must be an integer array [n, j] of bank rows; got "
                       f"{index.dtype} {list(index.shape)}")
    if index.size and (index.min() < 0 or index.max() >= self.size):
      bad = np.flatnonzero(((index < 0) | (index >= self.size)).any(axis=1))
      raise ValueError(f"index: row(s) {', '.join(map(str, bad[:10]))} hold bank rows outside "
                       f"[0, {self.size})")
    n, j = index.shape
    shape = (n, j) + self.embedding_shape
    if self.placement.streamed:
      return jnp.asarray(self.placement.rows(index)).reshape(shape)
    batch = self._batch(batch_size)
    sharding = NamedSharding(self.mesh, P(parallel.DATA, None))
    gather, parts = self._gather_fn(), []
    for s in range(0, n, batch):
      m = min(batch, n - s)  # padded batches: one compilation
      idx = np.zeros((batch, j), np.int32)
      idx[:m] = index[s:s + m]
      parts.append(gather(jax.device_put(idx, sharding), self.bank)[:m])
    if not parts:
      return jnp.zeros(shape, jnp.float32)
    return jnp.concatenate(parts).reshape(shape)

  def _batch(self, batch_size):
    """Queries per kernel call: a multiple of the 'data' devices (default 1024 each)."""
    nd = self.mesh.shape[parallel.DATA]
    return _round_up(batch_size or 1024 * nd, nd)

  def principal_basis(self, dim: int, max_rows: int = 10000, seed: int = 0) -> np.ndarray:
    """Top-`dim` principal directions of the bank, [D, dim]: a basis for fingerprint covariance.

    An SVD (host, float32, `_top_directions`) of at most `max_rows` bank rows.
    """
    rows = self.placement.rows(_sample_rows(self.size, max_rows, seed))
    with _one_blas_thread():
      basis, _, _ = _top_directions(rows, rank=min(dim, *rows.shape), n_iter=4, seed=seed)
      return np.asarray(basis)


def _sample_rows(n: int, max_rows: int, seed: int) -> np.ndarray:
  if n <= max_rows:
    return np.arange(n)
  return np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))


def _orthonormalise(y, passes=2):
  """Orthonormal columns spanning y [n, w]: y ← y U Λ^(-1/2) Uᵀ with U Λ Uᵀ = yᵀy, `passes`
  times (Löwdin: the orthonormal columns nearest to y's, in the same order).

  Two passes give orthonormal columns to float32 accuracy, one suffices inside power
  iterations (which only need a well-scaled basis of the range). Eigenvalues below 1e-6 of
  the largest are raised to it, which keeps rank-deficient samples finite (their noise
  directions come out shorter than 1, never blown up).
  """
  for _ in range(passes):
    lam, u = np.linalg.eigh(y.T @ y)
    lam = np.maximum(lam, lam[-1] * 1e-6 + 1e-30)
    y = y @ ((u / np.sqrt(lam)) @ u.T)
  return y


def _range_width(rank, n, dim):
  """Columns of the randomized SVD's range finder: the rank plus 10 of oversampling."""
  return min(rank + 10, n, dim)


def _centred(rows):
  """The rows centred in float32 (mean taken in float64) and their total energy ‖x‖²_F."""
  x = np.asarray(rows, np.float32)
  x = x - x.mean(axis=0, dtype=np.float64).astype(np.float32)
  return x, float(np.sum(x * x, dtype=np.float64))


def _randomized_svd(rows, *, rank, n_iter, seed):
  """Top `rank` right singular vectors V [D, rank] (orthonormal columns, in order), singular
  values and total energy of the centred rows: float32 numpy on the host.

  Halko, Martinsson & Tropp (2011): a Gaussian range finder with `n_iter` power iterations,
  each re-orthonormalised (which keeps float32 from losing the small directions), then the
  SVD of the small projected matrix B = Qᵀx through its w × w Gram matrix. V only steers
  speed (the error bounds use its measured ‖VᵀV − I‖, see `_orth_err`), never an answer.
  The rows are a sample of a few thousand: on the host (BLAS, LAPACK) there is nothing to
  compile, where the same program on the device compiled for 0.6–1.1 s (six w × w eigh calls)
  and ran no faster; host float32 products are full float32 on every backend.
  """
  x, total = _centred(rows)
  n, dim = x.shape
  width = _range_width(rank, n, dim)
  omega = np.random.default_rng(seed).standard_normal((dim, width), dtype=np.float32)
  y = _orthonormalise(x @ omega, 1)
  for _ in range(n_iter):
    z = _orthonormalise(x.T @ y, 1)
    y = _orthonormalise(x @ z, 1)
  y = _orthonormalise(y, 1)  # its second pass
  b = y.T @ x  # [w, D]
  lam, u = np.linalg.eigh(b @ b.T)
  lam, u = lam[::-1][:rank], u[:, ::-1][:, :rank]  # descending
  sv = np.sqrt(np.maximum(lam, 0.0))
  vt = (u / np.maximum(sv, sv[0] * 1e-6 + 1e-30)).T @ b
  # Löwdin keeps the columns in order, so any leading r of them are orthonormal too.
  return _orthonormalise(np.ascontiguousarray(vt.T)), sv, total


def _covariance_svd(rows, *, rank):
  """`_randomized_svd`'s outputs computed exactly: the eigendecomposition of the centred rows'
  D × D Gram matrix xᵀx (float32 numpy on the host), whose eigenvalues are the squared singular
  values.

  One product and one eigh: cheaper than the randomized range finder when the rank asked for
  is a large part of D (the reduced search's r + 10 of 784 dims: 0.10 s against 0.29 s on one
  core of the 2-core CPU), and exact.
  """
  x, total = _centred(rows)
  lam, u = np.linalg.eigh(x.T @ x)
  lam, u = lam[::-1][:rank], u[:, ::-1][:, :rank]  # descending
  sv = np.sqrt(np.maximum(lam, 0.0))
  return np.ascontiguousarray(u), sv, total


def _top_directions(rows, *, rank, n_iter, seed):
  """The top `rank` right singular vectors of the centred rows, their singular values and total
  energy: `_covariance_svd` when D is small enough for a D × D eigh (its cost grows as D³:
  0.05 s at 784, seconds at 3,072) and the randomized method would span more than a quarter of
  D (its products then cost more than the Gram matrix), else `_randomized_svd`."""
  n, dim = np.shape(rows)
  if dim <= 1024 and 4 * _range_width(rank, n, dim) > dim:
    return _covariance_svd(rows, rank=rank)
  return _randomized_svd(rows, rank=rank, n_iter=n_iter, seed=seed)


def _orth_err(basis) -> float:
  """An upper bound on ‖VᵀV − I‖ (Frobenius, which bounds the spectral norm) of the float32
  basis, measured in float64 on the host: a float32 Gram matrix would carry rounding errors
  up to γ_D·r, far above the ~1e-5 that two orthonormalisation passes leave."""
  b64 = np.asarray(basis, np.float64)
  return float(np.linalg.norm(b64.T @ b64 - np.eye(b64.shape[1]))) * 1.01 + 1e-12


def _reduce_slice(bank, mu, offset, n_valid, basis, orth_err, *, batch):
  """Search rows (x̂, ‖x − μ‖²) of one device's bank slice and the slice's bound maxima.

  In batches of `batch` rows (lax.map): the centred rows are a batch × D temporary, never a
  bank-sized one. Padding rows get ‖x − μ‖² = inf and stay out of the maxima.
  """
  rows, dim = bank.shape

  def one(x):
    xc = x - mu
    norm2 = jnp.sum(xc * xc, axis=1)
    return _reduce(xc, norm2, basis, orth_err) + (norm2,)
  hat, pn, eta, norm2 = (a.reshape((rows,) + a.shape[2:]) for a in
                         lax.map(one, bank.reshape(rows // batch, batch, dim)))
  row = offset + lax.axis_index(parallel.BANK) * rows + jnp.arange(rows, dtype=jnp.int32)
  valid = row < offset + n_valid
  maxima = jnp.stack([jnp.max(jnp.where(valid, jnp.sum(hat * hat, axis=1), 0.0)),
                      jnp.max(jnp.where(valid, pn, 0.0)), jnp.max(jnp.where(valid, eta, 0.0))])
  return hat, jnp.where(valid, norm2, jnp.inf), lax.pmax(maxima, parallel.BANK)


@functools.lru_cache(maxsize=16)
def _reduce_fn(mesh, batch):
  """_reduce_slice over the mesh, jitted once per (mesh, batch): builds share compilations."""
  return jax.jit(jax.shard_map(
      functools.partial(_reduce_slice, batch=batch), mesh=mesh,
      in_specs=(P(parallel.BANK, None), P(), P(), P(), P(), P()),
      out_specs=(P(parallel.BANK, None), P(parallel.BANK), P()), check_vma=False))


def _auto_cap(dim: int) -> int:
  """The largest r + 1 'auto' may choose: a multiple of 64, <= min(REDUCE_MAX_DIM, D / 2)."""
  return min(REDUCE_MAX_DIM, dim // 2) // 64 * 64


def _reduction_sample(flat: np.ndarray, search_dim):
  """The bank sample the reduced search's basis comes from, or None for the full-space search
  (search_dim None, or 'auto' with a small D or bank). Raises on a bad search_dim."""
  n, dim = flat.shape
  if search_dim is None:
    return None
  if search_dim == "auto":
    cap = _auto_cap(dim)
    if dim < REDUCE_MIN_DIM or cap < 64 or n < 2 * cap:
      return None
  elif not (isinstance(search_dim, (int, np.integer)) and 1 <= search_dim < dim):
    raise ValueError(f"search_dim must be 'auto', None or an int in [1, {dim - 1}]; got "
                     f"{search_dim!r}")
  # float32 and a 4,096-row sample: the basis only steers speed, never the answer.
  return flat[_sample_rows(n, 4096, 0)]


def _reduction_basis(sample: np.ndarray, search_dim):
  """(V [D, r], ‖VᵀV − I‖ bound) of the bank sample, or (None, None) when 'auto' finds the
  bank's energy not concentrated enough for REDUCE_RESIDUAL within the caps (host, one core)."""
  dim = sample.shape[1]
  with _one_blas_thread():
    if search_dim == "auto":
      cap = _auto_cap(dim)
      # One power iteration where the SVD is randomized (D > 1024): the choice of r reads the
      # energy spectrum, which a second iteration changed in the fourth digit on digits (and
      # any V keeps answers exact).
      basis, sv, total = _top_directions(sample, rank=cap - 1, n_iter=1, seed=0)
      residual = 1.0 - np.cumsum(np.asarray(sv, np.float64) ** 2) / max(total, 1e-30)
      fits = [s - 1 for s in range(64, cap + 1, 64) if residual[s - 2] <= REDUCE_RESIDUAL]
      if not fits:
        return None, None
      basis = np.ascontiguousarray(basis[:, :fits[0]])
    else:
      basis, _, _ = _top_directions(sample, rank=min(int(search_dim), *sample.shape), n_iter=4,
                                    seed=0)
    return basis, _orth_err(basis)


@contextlib.contextmanager
def _one_blas_thread():
  """One BLAS thread for the host SVD and the float64 check of the basis when XLA computes on
  the CPU too: OpenBLAS's spinning threads fought XLA's and other processes' for the cores (on
  the loaded 2-core CPU a 0.3 s SVD took 7-14 s with two threads at load 7). With an
  accelerator the host's cores are free: BLAS keeps its threads. NumPy's and SciPy's BLAS are
  loaded first: threadpoolctl limits loaded libraries only."""
  if jax.default_backend() != "cpu":
    yield
    return
  import scipy.linalg.cython_lapack  # pylint: disable=g-import-not-at-top,unused-import
  import threadpoolctl  # pylint: disable=g-import-not-at-top
  with threadpoolctl.threadpool_limits(1, user_api="blas"):
    yield


def _reduction(basis_job, mean, placement: BankPlacement, worker, meanwhile=None):
  """The reduced search for a bank (module doc): (V [D, r], ReducedConsts), or None.

  basis_job: a future of ``_reduction_basis`` (None when 'auto' finds the bank's energy not
  concentrated enough). The bank is reduced on the devices, slice by slice, and its search
  rows stay with the bank (`placement.set_search_rows`). A resident bank's reduction compiles
  and is dispatched in the `worker` thread while this one calls meanwhile(search_rows,
  (V, ReducedConsts)) with shape-only search rows and constants (to compile the first
  call's kernel): two compilations on two cores, then the reduction overlaps the rest.
  """
  basis, orth_err = basis_job.result()
  if basis is None:
    return None
  mesh = placement.mesh
  replicated = NamedSharding(mesh, P())
  basis = jax.device_put(basis, replicated)
  orth = np.float32(orth_err)
  slice_rows = placement.slice_rows
  tiles = slice_rows // placement.tile
  # Rows per lax.map step (the largest multiple of the tile that divides the slice and fits):
  # on the CPU a few thousand rows, whose centred copy stays in cache (the reduction ran 1.4x
  # faster than in 51,200-row steps, in CPU seconds at 784 and 3,072 dims); large batches on
  # accelerators.
  limit = max(_REDUCE_BATCH.get(jax.default_backend(), 65536), placement.tile)
  batch = placement.tile * max(d for d in range(1, tiles + 1)
                               if tiles % d == 0 and placement.tile * d <= limit)
  reduce_fn = _reduce_fn(mesh, batch)
  chunks, maxima = [], np.zeros(3, np.float32)
  if not placement.streamed:
    args = (placement.bank, mean, np.int32(0), np.int32(placement.size), basis, orth)
    job = worker.submit(lambda: reduce_fn.lower(*args).compile()(*args))  # dispatched, not awaited
    if meanwhile is not None:
      f32 = lambda shape, spec: jax.ShapeDtypeStruct(shape, jnp.float32,
                                                     sharding=NamedSharding(mesh, spec))
      rows = placement.chunk_rows
      meanwhile((f32((rows, basis.shape[1] + 1), P(parallel.BANK, None)),
                 f32((rows,), P(parallel.BANK))),
                (basis, ReducedConsts(*[f32((), P())] * 4)))
    hat, norm2, maxima = job.result()
    chunks.append((hat, norm2))
  for start in range(0, placement.size if placement.streamed else 0, placement.chunk_rows):
    n_valid = min(placement.chunk_rows, placement.size - start)
    hat, norm2, m = reduce_fn(placement.put(placement.host_bank, start), mean, np.int32(start),
                              np.int32(n_valid), basis, orth)
    # To the host at once: a streamed bank's rows never pile up on the devices.
    chunks.append((np.asarray(hat)[:n_valid], np.asarray(norm2)[:n_valid]))
    maxima = np.maximum(maxima, np.asarray(m))
  placement.set_search_rows(chunks)
  maxima = jnp.asarray(maxima, jnp.float32)
  # Replicated like the shapes the first call's kernel was compiled for: no recompilation.
  consts = ReducedConsts(*jax.device_put([maxima[0], maxima[1], maxima[2], orth], replicated))
  return basis, consts


def _round_up(x: int, m: int) -> int:
  return -(-x // m) * m
