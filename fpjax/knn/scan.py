"""The sharded k-NN kernel: candidate search over bank tiles, exact re-rank, certificate.

The kernel (``search_slice``) runs under ``jax.shard_map`` on a mesh with a query ('data')
axis and a bank axis: each device holds a slice of the bank and a slice of the query batch,
scans its bank slice in tiles with ‖q‖² + ‖b‖² − 2 q·b and a running top-c of groups of GROUP
rows, re-ranks those c candidate groups with the exact difference form in float32, and the
per-slice top-k are all-gathered over the bank axis and merged. Memory per device is its bank
slice plus one queries × tile block; a queries × bank matrix never exists.

The candidate search has implementations that return identical candidates: the XLA lax.scan
here (the CPU path and the fallback), the fused Pallas kernel (fpjax.knn.pallas_fused) and the
Mosaic GPU tile kernel (fpjax.knn.mosaic_gpu); fpjax.knn.autotune times them once per device
kind and shape. The certificate (fpjax.knn.bounds) and the re-rank are shared, so the choice
never changes an answer.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P

from fpjax.knn import bounds

# Rows are grouped GROUP at a time; the CANDIDATE_GROUPS (at least 2k) groups with the smallest
# minimum are re-ranked exactly.
GROUP = 8
CANDIDATE_GROUPS = 16
# The exact re-rank takes the first RERANK_FIRST candidate groups of every query, then the
# rest for the queries that need them, a 1/RERANK_CHUNKS of the batch at a time.
RERANK_FIRST = 4
RERANK_CHUNKS = 16
RERANK_ROWS = 256


def scan_tiles(qc, qs, bank, mu, bn, *, tile, c, search_dtype, precision, group_minima=None):
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


def top_k_rows(d, i, *, k):
  """The k smallest (d, i) pairs of each row, in (distance, index) order: ties go to the
  lower index. k = 1 by two vector minima: XLA:CPU's sort of (d, i) pairs calls a comparator
  per comparison, a sizeable part of the search at k = 1."""
  if k == 1:
    dmin = jnp.min(d, axis=1, keepdims=True)
    imin = jnp.min(jnp.where(d == dmin, i, jnp.iinfo(i.dtype).max), axis=1, keepdims=True)
    return dmin, imin
  d, i = lax.sort((d, i), dimension=1, num_keys=2)
  return d[:, :k], i[:, :k]


def merge_topk(d1, i1, d2, i2, k):
  """The k smallest of two (squared distances, indices) lists [q, *] (ties: lower index)."""
  return top_k_rows(jnp.concatenate([d1, d2], 1), jnp.concatenate([i1, i2], 1), k=k)


def _candidates(config, qc, qs, search_bank, search_mu, bn, *, c, search_dtype, precision):
  """Group minima [q, c] and group ids of the candidate search `config` picks (same result
  whichever runs)."""
  if config.variant == "pallas" and search_dtype is not None:
    # Imported here: jax.experimental.pallas is not loaded by `import fpjax` on the CPU path.
    from fpjax.knn import pallas_fused  # pylint: disable=g-import-not-at-top
    bs = search_bank if search_mu is None else search_bank - search_mu
    return pallas_fused.group_candidates(
        qs, bs.astype(search_dtype), bn, c=c, block_q=config.block_q, block_b=config.tile,
        precision=precision, dim_block=config.dim_block, interpret=config.interpret)
  group_minima = None
  if config.variant == "mosaic_gpu" and search_dtype == jnp.bfloat16:
    from fpjax.knn import mosaic_gpu  # pylint: disable=g-import-not-at-top
    kw = {}
    if config.interpret:
      kw["interpret"], kw["bank_kn"] = mosaic_gpu.interpret_params()
    group_minima = functools.partial(mosaic_gpu.group_minima, tile_q=config.block_q, **kw)
  return scan_tiles(qc, qs, search_bank, search_mu, bn, tile=config.tile, c=c,
                    search_dtype=search_dtype, precision=precision, group_minima=group_minima)


def _rerank_fn(bank, shard_offset, offset, n_valid):
  """rerank(qr [m, D], groups [m, j], their minima [m, j]) -> exact ‖q − b‖² and global rows
  [m, j·GROUP] of the groups' rows (inf for padding rows and never-filled slots)."""
  def rerank_rows(qr, gg, gd):
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
    # In chunks of at most RERANK_ROWS queries: the gathered rows of one group step stay in
    # cache (1.3x faster than a step over 1,024 queries on the 2-core CPU); same sums.
    m = qr.shape[0]
    per = max(r for r in range(1, min(m, RERANK_ROWS) + 1) if m % r == 0)
    if per == m or 4 * per < RERANK_ROWS:  # one step, or no good divisor of m
      return rerank_rows(qr, gg, gd)
    split = lambda x: x.reshape((m // per, per) + x.shape[1:])
    ed, ei = lax.map(lambda a: rerank_rows(*a), (split(qr), split(gg), split(gd)))
    return ed.reshape(m, -1), ei.reshape(m, -1)
  return rerank


def _two_stage_rerank(q, group_d, group_g, bound, rerank, *, k, dim, c, direct):
  """Top-k [q, k] of the exact re-rank of the candidate groups.

  In two stages where the groups are many: the first c1 groups (smallest minima) for every
  query, then the other c − c1 only for the queries whose k-th distance after the first
  stage does not beat excluded(c1) (a quarter of them on random rows, fewer on images): the
  rows left out cannot be among the k nearest (nor tie), so the answer is the one the re-rank
  of all c groups gives, with far fewer bank rows gathered. Not in the direct stage, whose
  bound depends on the c-th minimum.
  """
  top = functools.partial(top_k_rows, k=k)
  nq = q.shape[0]
  c1 = max(RERANK_FIRST, -(-k // GROUP))
  if direct or c1 >= c:
    return top(*rerank(q, group_g, group_d))
  d, i = top(*rerank(q, group_g[:, :c1], group_d[:, :c1]))
  need = ~bounds.beats(bounds.excluded(group_d[:, c1], bound), d[:, -1], dim)
  # The queries that need the other groups, first (in order), in chunks of `chunk` (a divisor
  # of the batch: chunks never overlap); as many chunks as they fill.
  order = jnp.argsort(~need, stable=True).astype(jnp.int32)
  chunk = max(m for m in range(1, max(8, nq // RERANK_CHUNKS) + 1) if nq % m == 0)
  n_chunks = (jnp.sum(need.astype(jnp.int32)) + chunk - 1) // chunk

  def more(j, carry):
    d, i = carry
    sel = lax.dynamic_slice_in_dim(order, j * chunk, chunk)
    dm, im = top(*(jnp.concatenate(a, axis=1) for a in zip(
        (d[sel], i[sel]), rerank(q[sel], group_g[sel, c1:], group_d[sel, c1:]))))
    keep = need[sel][:, None]
    return (d.at[sel].set(jnp.where(keep, dm, d[sel])),
            i.at[sel].set(jnp.where(keep, im, i[sel])))
  return lax.fori_loop(0, n_chunks, more, (d, i))


def search_slice(q, bank, mu, offset, n_valid, reduced=None, *, k, config, search_dtype, groups,
                 bank_axis="bank"):
  """Per-device top-k of local queries [q, D] against the local bank slice [rows, D].

  `reduced` (reduced search, fpjax.knn.reduced): (search rows x̂ of the bank slice
  [rows, r+1], their ‖b − μ‖² [rows] (inf on padding rows), the basis V [D, r], and the
  bank-wide ReducedConsts).
  `offset` and `n_valid` (int32 scalars: one compilation serves every chunk of a streamed
  bank) say which global rows this call's bank holds and how many are real.
  `config` (fpjax.knn.autotune.Config) picks the candidate search; search_dtype: bfloat16 or
  float32 products, or None for direct differences.
  Returns, merged over `bank_axis` (identical on every bank device): squared distances [q, k]
  (float32, exact difference form), global indices [q, k] (int32), and `certified` [q]: True
  where the rounding-error bound proves that no row left out of the exact re-rank could be
  among the k nearest.
  """
  rows, dim = bank.shape
  shard_offset = offset + lax.axis_index(bank_axis) * rows
  c = min(groups, rows // GROUP)
  # Centring on the bank mean keeps ‖q‖², ‖b‖² and q·b small, so the expansion loses little to
  # cancellation; it does not change any distance.
  qc = q - mu
  qn = jnp.sum(qc * qc, axis=1)
  precision = lax.Precision.HIGHEST if search_dtype == jnp.float32 else None
  reduced_q = None
  if reduced is not None:
    search_bank, bn, basis, consts = reduced  # bn: ‖b − μ‖², inf on padding rows
    q_hat, q_pn, q_eta = bounds.reduce_rows(qc, qn, basis, consts.orth_err)
    qs, search_mu = q_hat.astype(search_dtype), None
    reduced_q = (q_hat, q_pn, q_eta, consts)
  else:
    qs = qc.astype(search_dtype or jnp.float32)
    row = shard_offset + jnp.arange(rows, dtype=jnp.int32)
    # Padding rows get ‖b‖² = inf: masked through a [rows] vector, not a [q, tile] select.
    bn = jnp.where(row < offset + n_valid, jnp.sum(jnp.square(bank - mu), axis=1), jnp.inf)
    search_bank, search_mu = bank, mu
  # The largest real ‖b‖² of the slice feeds the rounding-error bound.
  bmax2 = jnp.max(jnp.where(jnp.isinf(bn), 0.0, bn))
  group_d, group_g = _candidates(config, qc, qs, search_bank, search_mu, bn, c=c,
                                 search_dtype=search_dtype, precision=precision)
  if search_dtype is not None:
    group_d = group_d + qn[:, None]
  # Every row outside the kept groups has a searched distance >= the c-th kept group minimum;
  # its true distance is at least that minus the bound.
  bound = bounds.exclusion_bound(dim=dim, qn=qn, bmax2=bmax2, search_dtype=search_dtype,
                                 last_minimum=group_d[:, -1], reduced=reduced_q)
  rerank = _rerank_fn(bank, shard_offset, offset, n_valid)
  d, i = _two_stage_rerank(q, group_d, group_g, bound, rerank, k=k, dim=dim, c=c,
                           direct=search_dtype is None)
  all_kept = rows // GROUP <= c
  lower = jnp.where(all_kept, jnp.inf, bounds.excluded(group_d[:, -1], bound))
  # Merge the slices: every bank device ends with the same global top-k.
  d = lax.all_gather(d, bank_axis, axis=1, tiled=True)
  i = lax.all_gather(i, bank_axis, axis=1, tiled=True)
  d, i = top_k_rows(d, i, k=k)
  lower = lax.pmin(lower, bank_axis)
  return d, i, bounds.beats(lower, d[:, -1], dim)


def candidate_groups(k: int) -> int:
  """Candidate groups kept per query for k neighbours.

  The k nearest rows may lie in k different groups, and the certificate needs the c-th group
  minimum above the k-th distance: c = 2k groups (at least CANDIDATE_GROUPS) keeps a margin
  (with fewer than k groups even the direct stage cannot certify spread-out neighbours).
  """
  return max(CANDIDATE_GROUPS, 2 * k)


def search_specs(data_axis="data", bank_axis="bank", reduced=False):
  """shard_map in_specs of ``search_slice``'s arguments (see ``search_program``)."""
  specs = (P(data_axis, None), P(bank_axis, None), P(), P(), P())
  if reduced:
    specs += ((P(bank_axis, None), P(bank_axis), P(), P()),)
  return specs


def search_program(mesh, *, k: int, config, search_dtype, reduced: bool = False,
                   data_axis: str = "data", bank_axis: str = "bank", jit: bool = True):
  """The sharded search of one kernel call: ``search_slice`` under ``jax.shard_map``.

  Arguments of the returned function: queries [q, D] (sharded over `data_axis`), the bank
  chunk [rows, D] (over `bank_axis`), the bank mean [D], the chunk's first global row and real
  rows (int32 scalars), and with `reduced` (x̂ [rows, r+1], ‖b − μ‖² [rows], V [D, r],
  ReducedConsts). Returns squared distances [q, k], indices [q, k] and `certified` [q], split
  over `data_axis`. Jitted unless `jit` is False (then it traces into the caller's program).
  Built here, not in a class, so that tests/aot can compile it for chips it does not have.
  """
  kernel = functools.partial(search_slice, k=k, config=config, search_dtype=search_dtype,
                             groups=candidate_groups(k), bank_axis=bank_axis)
  out = P(data_axis, None)
  fn = jax.shard_map(
      kernel, mesh=mesh, in_specs=search_specs(data_axis, bank_axis, reduced),
      out_specs=(out, out, P(data_axis)),
      # Replication over the bank axis comes from the all_gather/pmin merge; the varying-axes
      # type check is off because its API still moves between releases.
      check_vma=False)
  return jax.jit(fn) if jit else fn


def same_certified_answers(reference, results) -> str | None:
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


def gather_rows(index, bank, *, bank_axis="bank"):
  """The bank rows [q, j, D] of global row indices [q, j]: each bank device fills the rows
  its slice holds (zeros elsewhere) and a psum over `bank_axis` assembles them."""
  rows = bank.shape[0]
  start = lax.axis_index(bank_axis) * rows
  local = index - start
  mine = (local >= 0) & (local < rows)
  picked = jnp.take(bank, jnp.clip(local, 0, rows - 1), axis=0) * mine[..., None]
  return lax.psum(picked, bank_axis)


def gather_program(mesh, *, data_axis="data", bank_axis="bank", jit=True):
  """``gather_rows`` under shard_map: (indices [q, j] over `data_axis`, bank [rows, D] over
  `bank_axis`) -> rows [q, j, D]."""
  fn = jax.shard_map(functools.partial(gather_rows, bank_axis=bank_axis), mesh=mesh,
                     in_specs=(P(data_axis, None), P(bank_axis, None)),
                     out_specs=P(data_axis, None, None), check_vma=False)
  return jax.jit(fn) if jit else fn
