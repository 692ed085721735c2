"""Group minima of the k-NN candidate search as a Pallas Mosaic GPU kernel (Hopper, sm_90a).

out[q, g] = min_{s < GROUP} (bn[GROUP*g + s] - 2 * <qs[q], bs[GROUP*g + s]>)   (float32)

One CTA (one warpgroup, 128 threads) computes a [tile_q, tile_n] block of out: tile_q
queries x tile_n groups. For each s in 0..GROUP-1 (unrolled) it runs a TMA pipeline over the
feature dimension (plgpu.emit_pipeline, tile_k features per step, 128B swizzle) that feeds
plgpu.wgmma (bf16 x bf16 -> f32 accumulator, A = query tile, B = transposed bank tile), then
folds bn - 2*acc into a running elementwise minimum held in registers (WGMMA layout). The
bank is read in place as a strided [groups, GROUP, D] view: the sub-block of rows s of
groups g0..g0+tile_n is a 2-D TMA box with row stride GROUP*D, so no permuted copy of the
bank is made (only bn, [rows] f32, is transposed to [GROUP, groups] in XLA). Nothing of size
[q, rows] is ever written; the running top-c merge is left to XLA (lax.top_k) outside:
``scan.scan_tiles`` calls this kernel for each bank tile (autotune variant 'mosaic_gpu').

Why not the fused kernel of fpjax.knn.pallas_fused: under Mosaic GPU a pallas_call stages its
blocks whole in shared memory, and a bank block with its full feature dimension does not fit
(smem 1.0-2.1 MB asked, 227 KB available, docs/accelerators.md); here the feature dimension is
pipelined through shared memory instead (64 features a step, 4 steps in flight: 135 KB).

Checked: compiled ahead of time for an H100 at JAX 0.10.2 and 0.12.0 (tests/aot; custom call
`mosaic_gpu_v2`, 176-184 registers, no spills), and in Mosaic GPU's interpret mode against
float64 (tests/test_knn_mosaic_gpu.py; JAX 0.10's interpreter lacks wgmma with a
transposed operand, so there the test reads the bank pre-transposed, `bank_kn=True`, and the
in-place form is interpreted in the JAX 0.12 environment of tests/aot). Not yet run on a GPU.
"""
from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

GROUP = 8  # rows per group: the same as scan.GROUP


def interpret_params():
  """`interpret=` for Mosaic GPU's interpreter (any backend: the CPU tests), and the `bank_kn`
  this JAX's interpreter needs (JAX 0.10's has no wgmma on a transposed operand)."""
  if hasattr(plgpu, "InterpretGPUParams"):
    params = plgpu.InterpretGPUParams()
  else:
    from jax._src.pallas.mosaic_gpu.interpret.params import InterpretGPUParams  # pylint: disable=g-import-not-at-top
    params = InterpretGPUParams()
  return params, jax.__version__.startswith("0.10.")


def _kernel(q_gmem, b_gmem, bn_gmem, out_gmem, bn_smem, out_smem, bar, *,
            tile_q, tile_n, tile_k, k_iters, max_concurrent_steps, bank_kn):
  qi = lax.axis_index("q")
  gj = lax.axis_index("g")
  g_slice = pl.ds(gj * tile_n, tile_n)

  # bn of this block's groups, [GROUP, tile_n] f32, one TMA copy.
  plgpu.copy_gmem_to_smem(bn_gmem.at[:, g_slice], bn_smem, bar.at[0])
  plgpu.barrier_wait(bar.at[0])

  swizzle = plgpu.find_swizzle(tile_k * 16)  # bf16: tile_k * 16 bits per row
  transforms = (plgpu.TilingTransform((8, swizzle // 2)), plgpu.SwizzleTransform(swizzle))
  q_blk = q_gmem.at[pl.ds(qi * tile_q, tile_q), :]  # [tile_q, D]

  running = None
  for s in range(GROUP):
    if bank_kn:  # bank pre-transposed in XLA: b_gmem [GROUP, D, groups]
      b_blk = b_gmem.at[s, :, g_slice]  # [D, tile_n]
      b_spec = plgpu.BlockSpec((tile_k, tile_n), lambda k: (k, 0), transforms=transforms)
    else:  # bank in place: b_gmem [groups, GROUP, D]
      b_blk = b_gmem.at[g_slice, s, :]  # [tile_n, D], row stride GROUP * D
      b_spec = plgpu.BlockSpec((tile_n, tile_k), lambda k: (0, k), transforms=transforms)

    def acc_scope(acc_ref):
      def step(_, q_smem, b_smem):
        b_op = b_smem if bank_kn else plgpu.transpose_ref(b_smem, (1, 0))
        plgpu.wgmma(acc_ref, q_smem, b_op)
        plgpu.wgmma_wait(0)

      plgpu.emit_pipeline(
          step,
          grid=(k_iters,),
          in_specs=[
              plgpu.BlockSpec((tile_q, tile_k), lambda k: (0, k), transforms=transforms),
              b_spec,
          ],
          max_concurrent_steps=max_concurrent_steps,
      )(q_blk, b_blk)
      return acc_ref[...]

    acc = pl.run_scoped(acc_scope, plgpu.ACC((tile_q, tile_n), jnp.float32))
    bn_s = bn_smem[s]  # warpgroup semantics: the layout is inferred
    d = lax.broadcast_in_dim(bn_s, (tile_q, tile_n), [1]) - 2.0 * acc
    running = d if running is None else jnp.minimum(running, d)

  out_smem[...] = running
  plgpu.commit_smem()
  plgpu.copy_smem_to_gmem(out_smem, out_gmem.at[pl.ds(qi * tile_q, tile_q), g_slice])
  plgpu.wait_smem_to_gmem(0)


def cost(n_q: int, rows: int, dim: int, *, tile_q: int = 64, tile_n: int = 128):
  """The kernel's flops and HBM bytes (n_q, dim already padded to tile_q, tile_k): each thread
  block reads its query tile once per row of a group (GROUP times: from L2 after the first),
  its tile_n groups of bank rows and their norms once, and writes its minima."""
  blocks = (n_q // tile_q) * (rows // GROUP // tile_n)
  per_block = (GROUP * tile_q * dim * 2 + tile_n * GROUP * (dim * 2 + 4)
               + tile_q * tile_n * 4)
  return pl.CostEstimate(flops=2 * n_q * rows * dim, transcendentals=0,
                         bytes_accessed=blocks * per_block)


# plgpu.kernel takes a cost estimate from JAX 0.11 on.
_TAKES_COST = "cost_estimate" in inspect.signature(plgpu.kernel).parameters


@functools.partial(jax.jit, static_argnames=("tile_q", "tile_n", "tile_k",
                                             "max_concurrent_steps", "bank_kn", "interpret"))
def group_minima(qs, bs, bn, *, tile_q=64, tile_n=128, tile_k=64, max_concurrent_steps=4,
                 bank_kn=False, interpret=None):
  """Group minima [n_q, rows // GROUP] float32 of d(q, b) = bn - 2 q.b over GROUP rows.

  qs [n_q, D] bf16, bs [rows, D] bf16, bn [rows] f32 (inf on padding rows).
  rows // GROUP must be a multiple of tile_n; n_q and D are zero-padded as needed.
  bank_kn: False reads the bank in place (B = transposed SMEM view, plgpu.transpose_ref);
    True transposes it in XLA to [GROUP, D, groups] first (an extra pass over the bank; the
    form jax 0.10's GPU interpreter supports, its wgmma rule has no TransposeTransform).
  interpret: None (compile for the GPU) or a plgpu.InterpretGPUParams.
  """
  n_q, dim = qs.shape
  rows = bs.shape[0]
  if rows % GROUP or (rows // GROUP) % tile_n:
    raise ValueError(f"bank tile of {rows} rows is not a multiple of GROUP * tile_n = "
                     f"{GROUP * tile_n}")
  if tile_q != 64:
    raise ValueError("one warpgroup per CTA: tile_q must be 64")
  groups = rows // GROUP
  dpad = -dim % tile_k
  if dpad:  # zero features change no dot product
    qs = jnp.pad(qs, ((0, 0), (0, dpad)))
    bs = jnp.pad(bs, ((0, 0), (0, dpad)))
  qpad = -n_q % tile_q
  if qpad:
    qs = jnp.pad(qs, ((0, qpad), (0, 0)))
  d_full = dim + dpad
  nq_full = n_q + qpad
  b3 = bs.reshape(groups, GROUP, d_full)  # free (row-major view)
  if bank_kn:
    b3 = b3.transpose(1, 2, 0)  # [GROUP, D, groups]
  bnp = bn.astype(jnp.float32).reshape(groups, GROUP).T  # [GROUP, groups], small copy

  out_swizzle = plgpu.find_swizzle(tile_n * 32)
  out_transforms = (plgpu.TilingTransform((8, out_swizzle // 4)),
                    plgpu.SwizzleTransform(out_swizzle))
  kernel = functools.partial(
      _kernel, tile_q=tile_q, tile_n=tile_n, tile_k=tile_k, k_iters=d_full // tile_k,
      max_concurrent_steps=max_concurrent_steps, bank_kn=bank_kn)
  kw = {} if interpret is None else {"interpret": interpret}
  if _TAKES_COST:
    kw["cost_estimate"] = cost(nq_full, rows, d_full, tile_q=tile_q, tile_n=tile_n)
  f = plgpu.kernel(
      kernel,
      out_type=jax.ShapeDtypeStruct((nq_full, groups), jnp.float32),
      scratch_types=[
          plgpu.SMEM((GROUP, tile_n), jnp.float32),
          plgpu.SMEM((tile_q, tile_n), jnp.float32, transforms=out_transforms),
          plgpu.Barrier(num_arrivals=1, num_barriers=1),
      ],
      grid=(nq_full // tile_q, groups // tile_n),
      grid_names=("q", "g"),
      compiler_params=plgpu.CompilerParams(
          lowering_semantics=plgpu.LoweringSemantics.Warpgroup),
      **kw,
  )
  out = f(qs, b3, bnp)
  return out[:n_q]
