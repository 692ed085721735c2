"""The projection's programs compiled ahead of time for an H100, an A100 and TPU v5e / v6e (one
chip and an 8-chip slice), without any of them attached.

What a user of a GPU or TPU relies on, checked where no GPU or TPU is: every configuration the
autotuner may pick compiles, with the fused Pallas kernel in the program (not the XLA scan);
the float32 stages keep HIGHEST precision; the projection fits the chip's memory at production
shapes. The kernel's numbers are checked on the CPU (tests/test_knn_pallas_fused.py, interpret
mode).
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from fpjax import aot
from fpjax import parallel
from fpjax.knn import autotune
from fpjax.knn import bounds
from fpjax.knn import placement as placement_lib
from fpjax.knn import scan

# The custom call each kernel variant leaves in a compiled program, by platform.
KERNEL_CALL = {("pallas", "tpu"): "tpu_custom_call", ("pallas", "cuda"): "__gpu$xla.gpu.triton",
               ("mosaic_gpu", "cuda"): "mosaic_gpu_v2"}


def _kernel_call(target, config):
  return KERNEL_CALL[(config.variant, aot.target(target).platform)]
TILE = 2048  # Manifold's default bank tile


def _backend(target):
  return "gpu" if aot.target(target).platform == "cuda" else "tpu"


def _slice_rows(bank_rows, shards, target=None):
  """Rows of one device's bank slice, as BankPlacement pads them on the target's devices."""
  per_shard = -(-bank_rows // shards)
  unit = TILE if target is None else autotune.slice_unit(aot.devices(target)[0], per_shard, TILE)
  return -(-per_shard // unit) * unit


def _target_of(mesh):
  """The compile target whose devices `mesh` holds."""
  for name in aot.TARGETS:
    if tuple(mesh.devices.flat) == aot.devices(name):
      return name
  return None


def _args(mesh, *, queries, bank_rows, dim, reduced_dim=None):
  """ShapeDtypeStructs of search_program's arguments for a resident bank on `mesh`."""
  def sds(shape, spec, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))
  target = _target_of(mesh)
  rows = _slice_rows(bank_rows, mesh.shape[parallel.BANK], target) * mesh.shape[parallel.BANK]
  args = (sds((queries, dim), P(parallel.DATA, None)), sds((rows, dim), P(parallel.BANK, None)),
          sds((dim,), P()), sds((), P(), jnp.int32), sds((), P(), jnp.int32))
  if reduced_dim is not None:
    consts = bounds.ReducedConsts(*[sds((), P())] * 4)
    args += ((sds((rows, reduced_dim + 1), P(parallel.BANK, None)), sds((rows,), P(parallel.BANK)),
              sds((dim, reduced_dim), P()), consts),)
  return args


def _compile(target, mesh, config, *, k=1, search_dtype=jnp.bfloat16, reduced_dim=None,
             queries=1024, bank_rows=16384, dim=784):
  fn = scan.search_program(mesh, k=k, config=config, search_dtype=search_dtype,
                           reduced=reduced_dim is not None)
  args = _args(mesh, queries=queries, bank_rows=bank_rows, dim=dim, reduced_dim=reduced_dim)
  return aot.compile(target, fn, *args)


def _pallas_candidates(target, bank_rows=16384, shards=1, queries=1024, dim=784):
  """The autotuner's candidates for this target and shape, and those that are kernels."""
  device = aot.devices(target)[0]
  configs = autotune.candidates(_backend(target), _slice_rows(bank_rows, shards, target), TILE,
                                queries, dim, getattr(device, "compute_capability", None))
  assert configs[0] == autotune.Config("xla", TILE)
  kernels = [c for c in configs if c.variant != "xla"]
  assert kernels, "the autotuner proposes no kernel for this target"
  return configs, kernels


# Triton compiles of the fused kernel for an A100 take ~10 minutes on JAX 0.10 on this 2-core
# machine (~1 minute on 0.12): the A100 (Triton's only GPU target before Hopper) is compiled on
# the newer line; the H100 and the TPUs on both.
NEWER_LINE = not jax.__version__.startswith("0.10.")


@pytest.mark.parametrize("target,dim", [
    ("h100", 784),
    pytest.param("a100", 784, marks=pytest.mark.skipif(
        not NEWER_LINE, reason="the A100 is compiled on the newer JAX line")),
    ("v5e-1", 784), ("v6e-1", 784), ("v5e-1", 3072), ("v5e-1", 320)])
def test_every_autotune_candidate_compiles_with_the_fused_kernel(target, dim):
  # The XLA scans differ only in their tile (one compiles for all); every kernel configuration
  # the autotuner may pick is compiled. On TPU the blocks hold the whole dimension, so the
  # choice depends on it: v5e (the smallest VMEM) at 784 and 3,072 dims and a reduced search's
  # 320. GPU kernels slice the dimension: their resources do not depend on it.
  mesh = aot.mesh(target)
  configs, kernels = _pallas_candidates(target, dim=dim)
  assert not set(KERNEL_CALL.values()) & aot.custom_calls(_compile(target, mesh, configs[0],
                                                                   dim=dim))
  if target == "h100":  # Hopper: the Mosaic GPU kernel is among them (not on the A100)
    assert {c.variant for c in kernels} == {"pallas", "mosaic_gpu"}
  for config in kernels:
    calls = aot.custom_calls(_compile(target, mesh, config, dim=dim))
    assert _kernel_call(target, config) in calls, (config, calls)


@pytest.mark.parametrize("target", ["h100", "v5e-8", "v6e-8"])
@pytest.mark.parametrize("stage", ["exact", "reduced", "k5", "float32"])
def test_projection_stages_compile_with_the_fused_kernel(target, stage):
  # The first search of a batch (the one the autotuner tunes): full space, reduced search,
  # k > 1, and the float32 matmul stage; sharded over 8 chips on the TPU slices.
  mesh = aot.mesh(target)
  _, kernels = _pallas_candidates(target, shards=mesh.shape[parallel.BANK])
  kw = {"exact": {}, "reduced": {"reduced_dim": 319}, "k5": {"k": 5},
        "float32": {"search_dtype": jnp.float32}}[stage]
  pallas = [c for c in kernels if c.variant == "pallas"]
  config = pallas[-1]  # the smallest blocks: the quickest compile
  compiled = _compile(target, mesh, config, **kw)
  assert _kernel_call(target, config) in aot.custom_calls(compiled)
  mosaic = [c for c in kernels if c.variant == "mosaic_gpu"]
  if mosaic and stage != "float32":  # the Mosaic GPU kernel is bfloat16 only
    compiled = _compile(target, mesh, mosaic[0], **kw)
    assert _kernel_call(target, mosaic[0]) in aot.custom_calls(compiled)


@pytest.mark.parametrize("target", ["h100", "v5e-8"])
def test_fallback_stages_compile(target):
  # The 'exact' fallback stages (never tuned) run the XLA scan: float32, then direct.
  mesh = aot.mesh(target)
  for search_dtype in (jnp.float32, None):
    _compile(target, mesh, autotune.Config("xla", TILE), search_dtype=search_dtype, k=3)


def _dot_precisions(lowered_text):
  """The precision_config of every dot_general in a lowered program ('' where it has none)."""
  out = []
  for line in lowered_text.splitlines():
    if "stablehlo.dot_general" in line:
      m = re.search(r"precision(?:_config)? = \[([^\]]*)\]", line)
      out.append(m.group(1) if m else "")
  return out


@pytest.mark.parametrize("target", ["h100", "v5e-8"])
def test_float32_stages_keep_highest_precision(target):
  # GPUs run float32 matmuls in TF32 and TPUs in bfloat16 passes unless told HIGHEST: the
  # certificate's error bound assumes float32 products in the float32 stage and in the
  # reduced search's projection.
  mesh = aot.mesh(target)
  for kw in ({"search_dtype": jnp.float32}, {"reduced_dim": 319}):
    fn = scan.search_program(mesh, k=1, config=autotune.Config("xla", TILE),
                             search_dtype=kw.get("search_dtype", jnp.bfloat16),
                             reduced="reduced_dim" in kw)
    args = _args(mesh, queries=1024, bank_rows=16384, dim=784, reduced_dim=kw.get("reduced_dim"))
    text = aot.lower(target, fn, *args).as_text()
    precisions = _dot_precisions(text)
    assert precisions, "no dot_general in the program"
    if "search_dtype" in kw:  # every product of the float32 stage
      assert all(p and p.count("HIGHEST") == 2 for p in precisions), precisions
    else:  # the projection onto the basis (float32); the bfloat16 search product is not
      assert sum(bool(p) and p.count("HIGHEST") == 2 for p in precisions) >= 1, precisions


PRODUCTION = [pytest.param(1_000_000, 784, 32_768, id="1Mx784-32768q"),
              pytest.param(500_000, 3072, 8_192, id="500kx3072-8192q")]


@pytest.mark.parametrize("target", ["h100", "v5e-8", "v6e-8"])
@pytest.mark.parametrize("bank_rows,dim,queries", PRODUCTION)
def test_projection_fits_the_chip_at_production_shapes(target, bank_rows, dim, queries):
  # The bank resident on the chips (sharded over 8 on a slice), one call of `queries` queries:
  # the XLA scan, the fused kernel with the largest blocks, and the reduced search.
  mesh = aot.mesh(target)
  shards = mesh.shape[parallel.BANK]
  _, kernels = _pallas_candidates(target, bank_rows=bank_rows, shards=shards, queries=queries,
                                  dim=dim)
  if target == "h100":  # large slices are padded to the Mosaic GPU kernel's tile: a candidate
    assert any(c.variant == "mosaic_gpu" for c in kernels)
  hbm = aot.target(target).hbm_bytes
  bank_bytes = _slice_rows(bank_rows, shards, target) * dim * 4
  # The largest blocks (or tiles) of the platform's main kernel variant: the fused kernel on
  # TPU, the Mosaic GPU kernel on Hopper (the Triton kernel's extra memory is its [q, c]
  # outputs; it was compiled at the other tests' shapes).
  main = "pallas" if aot.target(target).platform == "tpu" else "mosaic_gpu"
  largest = {c.variant: c for c in reversed(kernels) if c.variant == main}
  for config, kw in ((autotune.Config("xla", TILE), {}), *((c, {}) for c in largest.values()),
                     (autotune.Config("xla", TILE), {"reduced_dim": 319})):
    compiled = _compile(target, mesh, config, queries=queries, bank_rows=bank_rows, dim=dim, **kw)
    used = aot.bytes_per_chip(compiled)
    assert bank_bytes <= used <= hbm, (config, kw, used, hbm)


def test_one_v5e_chip_holds_the_million_row_bank():
  # 1M x 784 float32 (3.1 GB) plus its reduced rows on one 16 GiB chip.
  compiled = _compile("v5e-1", aot.mesh("v5e-1"), autotune.Config("xla", TILE),
                      queries=32_768, bank_rows=1_000_000, dim=784, reduced_dim=319)
  assert aot.bytes_per_chip(compiled) <= aot.target("v5e-1").hbm_bytes


def test_unknown_target_is_refused():
  with pytest.raises(ValueError):
    aot.target("v9z-99")


def test_bank_padding_rows_match_the_placement():
  # The shapes these tests compile are the ones BankPlacement builds.
  mesh = jax.make_mesh((1, 1), (parallel.DATA, parallel.BANK), devices=jax.devices()[:1])
  placement = placement_lib.BankPlacement(np.zeros((5000, 4), np.float32), mesh, TILE, None)
  assert placement.chunk_rows == _slice_rows(5000, 1)
