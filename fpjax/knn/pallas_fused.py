"""The candidate search of the k-NN kernel as one fused Pallas kernel (GPU and TPU).

It computes what the XLA tile scan in ``scan.search_slice`` computes: for each query, the
`c` groups of GROUP bank rows with the smallest group minimum of the searched distance
    d(q, b) = ‖b‖² − 2 q·b        (‖q‖² is added by the caller),
sorted by (minimum, group id), so on equal minima the lower group comes first. The grid runs
over (query blocks, bank blocks) with the bank axis innermost; the [block_q, c] candidate
list is the output block, resident on chip across the bank axis, and is merged with each
bank block's group minima by c rounds of (min, lowest rank) selection. No queries × tile
distance block ever goes to HBM. The certificate, the exact re-rank and the fallback stages
stay in ``scan.search_slice``; they see the same candidates as with the XLA scan.

Layout. The bank block is stored as [GROUP, block_b / GROUP, dim]: row s of group g of the
block sits at [s, g]. A group minimum is then the elementwise minimum of GROUP dot-product
blocks of width block_b / GROUP, and nothing is reshaped on chip (reshapes that split the
lane dimension are slow or unsupported on Mosaic TPU and Triton).

Lowering, one traced program for every platform (``lax.platform_dependent`` picks the body
when the program is lowered, so one jitted function lowers for CPU, CUDA and TPU):
- TPU: Mosaic TPU, query blocks 'parallel' and the bank axis 'arbitrary' (the candidate list
  stays in VMEM across it); the full feature dimension in one dot.
- NVIDIA (every generation, Hopper included): Triton, with explicit
  ``pallas.triton.CompilerParams``. Triton needs block dimensions that are powers of two, so
  the feature dimension is padded with zeros to a multiple of `dim_block` and each dot runs
  over `dim_block` slices (adding zero products changes no sum). JAX deprecated its Triton
  back end in 0.11 in favour of Mosaic GPU; under Mosaic GPU this kernel's blocks are staged
  whole in shared memory and do not fit (docs/accelerators.md has the lowering errors and
  what a Mosaic GPU version needs), so Triton is what runs on NVIDIA today.
- CPU: only Pallas's interpret mode (`interpret=True`, tests); the compiled CPU program is the
  XLA scan.
Which configurations compile for a target is checked ahead of time (tests/aot, without a GPU
or TPU) and, on a device, by the autotuner before it times anything (fpjax.knn.autotune).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

GROUP = 8  # rows per group: the same as scan.GROUP (tested)
_BIG_RANK = 2 ** 30  # rank of a list entry already taken (or a slot beyond c)


def _merge_kernel(q_ref, b_ref, bn_ref, d_ref, g_ref, *, c, precision, dim_block):
  """One (query block, bank block) step: group minima, then merge into the candidate list."""
  j = pl.program_id(1)
  block_q, c_pad = d_ref.shape
  groups = b_ref.shape[2]  # groups in this bank block

  @pl.when(j == 0)
  def _():
    d_ref[...] = jnp.full((block_q, c_pad), jnp.inf, jnp.float32)
    g_ref[...] = jnp.zeros((block_q, c_pad), jnp.int32)

  dims = (((1,), (1,)), ((), ()))

  def dots(s):
    if dim_block is None:
      return lax.dot_general(q_ref[...], b_ref[0, s], dims, precision=precision,
                             preferred_element_type=jnp.float32)
    def step(kk, acc):
      ks = pl.ds(pl.multiple_of(kk * dim_block, dim_block), dim_block)
      return acc + lax.dot_general(q_ref[:, ks], b_ref[0, s, :, ks], dims, precision=precision,
                                   preferred_element_type=jnp.float32)
    return lax.fori_loop(0, q_ref.shape[1] // dim_block, step,
                         jnp.zeros((block_q, groups), jnp.float32))

  # Group minima: the same float32 values as the XLA scan's bn − 2 q·b, then min over GROUP.
  gmin = None
  for s in range(GROUP):
    d = bn_ref[0, pl.ds(s, 1), :] - 2.0 * dots(s)  # [1, groups]: no 1-D vector on chip
    gmin = d if gmin is None else jnp.minimum(gmin, d)

  best_d = d_ref[...]
  slot = lax.broadcasted_iota(jnp.int32, (block_q, c_pad), 1)
  # The list changes only if some group beats a row's c-th candidate (ties keep the old one).
  cth = jnp.max(jnp.where(slot == c - 1, best_d, -jnp.inf), axis=1, keepdims=True)
  beats = jnp.sum(jnp.where(gmin < cth, 1, 0))

  @pl.when(beats > 0)
  def _():
    # Ranks order the merged list [old candidates (slots 0..c-1), this block's groups] as
    # lax.top_k does on the XLA path: by value, then by position, so the lower group wins.
    best_g = g_ref[...]
    rank_b = jnp.where(slot < c, slot, _BIG_RANK)
    val_b = best_d
    rank_t = lax.broadcasted_iota(jnp.int32, (block_q, groups), 1) + c
    val_t = gmin
    gid0 = j * groups - c  # group id of rank c + p is j * groups + p
    new_d = jnp.full((block_q, c_pad), jnp.inf, jnp.float32)
    new_g = jnp.zeros((block_q, c_pad), jnp.int32)
    for r in range(c):
      m = jnp.minimum(jnp.min(val_b, axis=1, keepdims=True), jnp.min(val_t, axis=1, keepdims=True))
      pick = jnp.minimum(
          jnp.min(jnp.where(val_b == m, rank_b, _BIG_RANK), axis=1, keepdims=True),
          jnp.min(jnp.where(val_t == m, rank_t, _BIG_RANK), axis=1, keepdims=True))
      from_old = jnp.sum(jnp.where(rank_b == pick, best_g, 0), axis=1, keepdims=True)
      gid = jnp.where(pick < c, from_old, gid0 + pick)
      new_d = jnp.where(slot == r, m, new_d)
      new_g = jnp.where(slot == r, gid, new_g)
      # Taken entries leave the race: value inf and a rank after every untaken entry.
      val_b = jnp.where(rank_b == pick, jnp.inf, val_b)
      rank_b = jnp.where(rank_b == pick, _BIG_RANK, rank_b)
      val_t = jnp.where(rank_t == pick, jnp.inf, val_t)
      rank_t = jnp.where(rank_t == pick, _BIG_RANK, rank_t)
    d_ref[...] = new_d
    g_ref[...] = new_g


def _next_pow2(x: int) -> int:
  return 1 << max(0, (x - 1).bit_length())


# Triton launch parameters on NVIDIA: 4 warps and a 2-stage software pipeline keep every
# candidate of autotune.candidates within an H100's and an A100's shared memory (tests/aot).
TRITON_NUM_WARPS = 4
TRITON_NUM_STAGES = 2


def cost(n_q: int, rows: int, dim: int, *, c: int, block_q: int, search_itemsize: int = 2):
  """The kernel's flops and HBM bytes (its `pl.CostEstimate`; benchmarks/aot.py checks it).

  flops: the dot products, 2·q·rows·D (the group minima and the merge add O(q·rows/GROUP),
  under 1 % at D >= 64, not counted). Bytes: the query block is read once per query block
  (its block index does not change along the bank axis), the bank block and its norms once
  per query block, and the candidate lists written once.
  """
  q_blocks = -(-n_q // block_q)
  c_pad = max(16, _next_pow2(c))
  flops = 2 * q_blocks * block_q * rows * dim
  bytes_accessed = (q_blocks * block_q * dim * search_itemsize
                    + q_blocks * rows * (dim * search_itemsize + 4)
                    + q_blocks * block_q * c_pad * 8)
  return pl.CostEstimate(flops=flops, transcendentals=0, bytes_accessed=bytes_accessed)


def _fused(qs, bs, bn, *, c, block_q, block_b, precision, dim_block, platform, interpret):
  """The pallas_call for one platform's lowering ('tpu', 'cuda' or 'interpret')."""
  n_q, dim = qs.shape
  rows = bs.shape[0]
  groups = block_b // GROUP
  n_blocks = rows // block_b
  if platform != "tpu" and dim_block is not None and dim % dim_block:
    pad = dim_block - dim % dim_block  # zero features: every dot product unchanged
    qs = jnp.pad(qs, ((0, 0), (0, pad)))
    bs = jnp.pad(bs, ((0, 0), (0, pad)))
    dim += pad
  if platform == "tpu":
    dim_block = None  # Mosaic TPU takes the full feature dimension in one dot
  q_pad = -n_q % block_q
  if q_pad:
    qs = jnp.pad(qs, ((0, q_pad), (0, 0)))
  # [blocks, GROUP, groups, D]: row s of group g of block t at [t, s, g] (see module doc).
  bs = bs.reshape(n_blocks, groups, GROUP, dim).transpose(0, 2, 1, 3)
  bn = bn.reshape(n_blocks, groups, GROUP).transpose(0, 2, 1)
  c_pad = max(16, _next_pow2(c))  # a power of two for Triton; slots >= c stay unused
  if platform == "tpu":
    from jax.experimental.pallas import tpu as pltpu  # pylint: disable=g-import-not-at-top
    params = pltpu.CompilerParams(dimension_semantics=("parallel", "arbitrary"))
  elif platform == "cuda":
    from jax.experimental.pallas import triton as pltriton  # pylint: disable=g-import-not-at-top
    params = pltriton.CompilerParams(num_warps=TRITON_NUM_WARPS, num_stages=TRITON_NUM_STAGES)
  else:
    params = None
  kernel = functools.partial(_merge_kernel, c=c, precision=precision, dim_block=dim_block)
  d, g = pl.pallas_call(
      kernel,
      grid=(qs.shape[0] // block_q, n_blocks),
      in_specs=[pl.BlockSpec((block_q, dim), lambda i, j: (i, 0)),
                pl.BlockSpec((1, GROUP, groups, dim), lambda i, j: (j, 0, 0, 0)),
                pl.BlockSpec((1, GROUP, groups), lambda i, j: (j, 0, 0))],
      out_specs=[pl.BlockSpec((block_q, c_pad), lambda i, j: (i, 0)),
                 pl.BlockSpec((block_q, c_pad), lambda i, j: (i, 0))],
      out_shape=[jax.ShapeDtypeStruct((qs.shape[0], c_pad), jnp.float32),
                 jax.ShapeDtypeStruct((qs.shape[0], c_pad), jnp.int32)],
      compiler_params=params,
      cost_estimate=cost(n_q, rows, dim, c=c, block_q=block_q,
                         search_itemsize=jnp.dtype(qs.dtype).itemsize),
      interpret=interpret,
      name="fpjax_knn_candidates",
  )(qs, bs, bn)
  return d[:n_q, :c], g[:n_q, :c]


@functools.partial(jax.jit, static_argnames=("c", "block_q", "block_b", "precision",
                                             "dim_block", "interpret"))
def group_candidates(qs, bs, bn, *, c, block_q, block_b, precision=None, dim_block=None,
                     interpret=False):
  """Running top-c group candidates of queries against a bank slice, fused.

  qs: [q, D] search vectors (bfloat16 or float32); bs: [rows, D] bank search vectors of the
  same dtype; bn: [rows] float32 ‖b‖² of the same rows (inf on padding rows). rows must be
  a multiple of block_b, block_b of GROUP. Returns (group minima [q, c] float32 ascending,
  group ids [q, c] int32), identical to the XLA scan on the same inputs.

  One traced program for every platform: the body for TPU (Mosaic TPU) or NVIDIA (Triton,
  `dim_block` feature slices) is chosen when it is lowered; lowering for another platform
  fails. `interpret=True` runs Pallas's interpreter on any backend (the CPU tests).
  """
  rows = bs.shape[0]
  if block_b % GROUP or block_b <= 0 or rows % block_b:
    raise ValueError(f"bank slice of {rows} rows does not split into blocks of {block_b} "
                     f"rows (a multiple of {GROUP})")
  if block_q <= 0:
    raise ValueError(f"block_q must be positive; got {block_q}")
  body = functools.partial(_fused, c=c, block_q=block_q, block_b=block_b, precision=precision,
                           dim_block=dim_block, interpret=interpret)
  if interpret:
    return body(qs, bs, bn, platform="interpret")
  # No default branch: lowering for any other platform (the CPU) is an error, which the
  # autotuner's compile check records; the CPU runs the XLA scan.
  return lax.platform_dependent(qs, bs, bn, tpu=functools.partial(body, platform="tpu"),
                                cuda=functools.partial(body, platform="cuda"))
