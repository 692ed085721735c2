"""The Mosaic GPU group-minima kernel in Mosaic GPU's interpret mode, against float64.

The kernel only compiles for Hopper GPUs; tests/aot compiles it for an H100. Here its numbers:
bfloat16 inputs, float32 accumulation, against the float64 minimum over each group of GROUP
bank rows of ‖b‖² − 2 q·b (padding rows, ‖b‖² = inf, never win; a group of padding rows is
inf). JAX 0.10's interpreter has no rule for wgmma with a transposed operand, so there the
bank is read pre-transposed (bank_kn=True); the in-place form is interpreted where it can be.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

mosaic_gpu = pytest.importorskip("fpjax.knn.mosaic_gpu")


def _interpret_params():
  from jax.experimental.pallas import mosaic_gpu as plgpu
  if hasattr(plgpu, "InterpretGPUParams"):
    return plgpu.InterpretGPUParams()
  from jax._src.pallas.mosaic_gpu.interpret.params import InterpretGPUParams  # pylint: disable=g-import-not-at-top
  return InterpretGPUParams()


def _case(nq, rows, dim, seed):
  rng = np.random.default_rng(seed)
  qs = jnp.asarray(rng.normal(size=(nq, dim)), jnp.bfloat16)
  bs = jnp.asarray(rng.normal(size=(rows, dim)), jnp.bfloat16)
  bn = np.sum(np.asarray(bs, np.float64) ** 2, axis=1)
  bn[5] = np.inf               # one padding row inside a group
  bn[-8:] = np.inf             # a whole group of padding rows
  return qs, bs, jnp.asarray(bn, jnp.float32)


def _reference(qs, bs, bn):
  q = np.asarray(qs, np.float64)
  b = np.asarray(bs, np.float64)
  d = np.asarray(bn, np.float64)[None, :] - 2.0 * q @ b.T
  return d.reshape(q.shape[0], -1, mosaic_gpu.GROUP).min(axis=2)


IN_PLACE_INTERPRETED = not jax.__version__.startswith("0.10.")


@pytest.mark.parametrize("bank_kn", [True, pytest.param(False, marks=pytest.mark.skipif(
    not IN_PLACE_INTERPRETED, reason="JAX 0.10's interpreter lacks wgmma on a transposed ref"))])
@pytest.mark.parametrize("nq,rows,dim,steps", [(64, 1024, 64, 4), (100, 2048, 200, 2)])
def test_group_minima_against_float64(bank_kn, nq, rows, dim, steps):
  # 100 queries (padded to 64-row tiles) and dim 200 (padded with zero features to 256).
  qs, bs, bn = _case(nq, rows, dim, seed=nq + dim)
  got = np.asarray(mosaic_gpu.group_minima(
      qs, bs, bn, bank_kn=bank_kn, max_concurrent_steps=steps, interpret=_interpret_params()))
  want = _reference(qs, bs, bn)
  assert got.shape == want.shape == (nq, rows // 8)
  np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
  finite = np.isfinite(want)
  np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-3)


def test_bank_tile_that_does_not_tile_is_refused():
  qs, bs, bn = _case(64, 1000, 64, seed=0)
  with pytest.raises(ValueError):
    mosaic_gpu.group_minima(qs, bs, bn, interpret=_interpret_params())


@pytest.mark.parametrize("k,search_dim", [(1, None), (3, "auto")])
def test_projection_with_the_kernel_equals_the_xla_scan(k, search_dim, mnist):
  # The whole 'exact' projection with the bfloat16 stage's group minima from the kernel
  # (interpreted): the same neighbours, distances and certified queries as the XLA scan.
  import fpjax  # pylint: disable=g-import-not-at-top
  from fpjax.knn import autotune  # pylint: disable=g-import-not-at-top
  bank = np.asarray(fpjax.embed(mnist[0][:2048], "rgb")).reshape(2048, -1)
  queries = np.asarray(fpjax.embed(mnist[0][4000:4064], "rgb")).reshape(64, -1)
  make = lambda: fpjax.Manifold.from_embeddings(bank, tile=1024, search_dim=search_dim,
                                                autotune=False)
  xla, mgpu = make(), make()
  config = autotune.Config("mosaic_gpu", 1024, 64, interpret=True)
  mgpu._config = lambda q, search_dtype, reduced, tune=False, **kw: (
      config if search_dtype is not None else autotune.Config("xla", 1024))
  a, b = xla.project_embedded(queries, k=k), mgpu.project_embedded(queries, k=k)
  np.testing.assert_array_equal(np.asarray(b.index), np.asarray(a.index))
  np.testing.assert_array_equal(np.asarray(b.sq_distance), np.asarray(a.sq_distance))
  assert mgpu.stats["queries"] == xla.stats["queries"] == 64
