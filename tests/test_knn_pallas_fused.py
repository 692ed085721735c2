"""The fused Pallas candidate search (interpret mode on the CPU) against the XLA tile scan.

Both must give IDENTICAL candidates, hence identical indices, distances and certificates.
Sizes stay small: interpret mode runs every grid step as XLA ops.

Bitwise-identical candidates are a CPU property (XLA:CPU's bfloat16 products do not depend on
the block shape); on a GPU two product shapes may round differently, so there only the final
'exact' answers are compared, and the compiled kernel is tested against the XLA scan.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fpjax
from fpjax.knn import autotune
from fpjax.knn import scan
from fpjax.knn import pallas_fused

ON_CPU = jax.default_backend() == "cpu"
cpu_only = pytest.mark.skipif(not ON_CPU, reason="bitwise candidate identity is a CPU property")


def _xla_candidates(qs, bs, bn, c, tile, search_dtype):
  precision = jax.lax.Precision.HIGHEST if search_dtype == jnp.float32 else None
  return jax.jit(lambda q, b, n: scan.scan_tiles(
      q, q, b, None, n, tile=tile, c=c, search_dtype=search_dtype, precision=precision))(qs, bs, bn)


@cpu_only
@pytest.mark.parametrize("search_dtype", [jnp.bfloat16, jnp.float32])
def test_kernel_matches_xla_scan_with_padding_and_ties(search_dtype, rng):
  rows, dim, c = 2048, 48, 16
  bank = rng.normal(size=(rows, dim)).astype(np.float32)
  bank[700:710] = bank[3]           # exact ties across groups: the lower group must win
  bank[40:48] = bank[0:8]           # a whole tied group
  bn = np.sum(bank.astype(np.float64) ** 2, axis=1).astype(np.float32)
  bn[2000:] = np.inf                # padding rows
  queries = np.concatenate([bank[[3, 0, 5]], rng.normal(size=(197, dim))]).astype(np.float32)
  qs, bs, bnj = jnp.asarray(queries, search_dtype), jnp.asarray(bank, search_dtype), jnp.asarray(bn)
  want_d, want_g = _xla_candidates(qs, bs, bnj, c, 512, search_dtype)
  precision = jax.lax.Precision.HIGHEST if search_dtype == jnp.float32 else None
  # XLA:CPU rounds float32 products of fewer than 64 columns differently, so the float32
  # comparison uses bank blocks of >= 64 groups; bfloat16 products agree at every width.
  blocks = ((64, 512), (128, 1024)) if search_dtype == jnp.float32 else ((64, 256), (128, 512))
  for block_q, block_b in blocks:
    got_d, got_g = pallas_fused.group_candidates(qs, bs, bnj, c=c, block_q=block_q,
                                                  block_b=block_b, precision=precision,
                                                  interpret=True)
    np.testing.assert_array_equal(np.asarray(got_d), np.asarray(want_d))
    np.testing.assert_array_equal(np.asarray(got_g), np.asarray(want_g))
  # Independent check of the tie rule: sort every group minimum by (value, group id).
  gmin = (bn[None, :] - 2.0 * np.asarray(jax.lax.dot_general(
      qs, bs, (((1,), (1,)), ((), ())), precision=precision,
      preferred_element_type=jnp.float32))).reshape(len(queries), -1, 8).min(axis=2)
  order = np.lexsort((np.broadcast_to(np.arange(gmin.shape[1]), gmin.shape), gmin), axis=1)
  np.testing.assert_array_equal(np.asarray(want_g), order[:, :c])


def _force(manifold, config):
  """Makes `manifold` run `config` for its matmul stages (the direct stage stays XLA)."""
  xla = autotune.Config("xla", manifold.tile)
  manifold._config = lambda q, search_dtype, reduced, tune=False, **kw: (
      config if search_dtype is not None else xla)
  return manifold


def _pallas(manifold, block_q=64):
  return autotune.Config("pallas", manifold.tile, block_q, interpret=True)


def _project_both(make, queries, batch_size=None, block_q=64, k=1):
  xla = make()
  pal = make()
  _force(pal, _pallas(pal, block_q))
  a = xla.project_embedded(queries, k=k, batch_size=batch_size)
  b = pal.project_embedded(queries, k=k, batch_size=batch_size)
  np.testing.assert_array_equal(np.asarray(b.index), np.asarray(a.index))
  np.testing.assert_array_equal(np.asarray(b.sq_distance), np.asarray(a.sq_distance))
  if ON_CPU:
    assert pal.stats == xla.stats  # the same queries were certified at every stage
  return xla, pal, a


def _certificates_equal(xla, pal, queries, search_dtype, reduced, k=1):
  q = jnp.asarray(queries.reshape(len(queries), -1), jnp.float32)
  a = xla._search_all(q, search_dtype, xla._reduced if reduced else None, k=k)
  b = pal._search_all(q, search_dtype, pal._reduced if reduced else None, k=k)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
  return np.asarray(a[2])


@pytest.mark.parametrize("k", [1, 3])
def test_digits_reduced_and_full_space_identical(k, mnist):
  bank = np.asarray(fpjax.embed(mnist[0][:2000], "rgb")).reshape(2000, -1)
  queries = np.asarray(fpjax.embed(mnist[0][4000:4200], "rgb")).reshape(200, -1)
  for search_dim in ("auto", None):
    make = lambda: fpjax.Manifold.from_embeddings(bank, tile=512, search_dim=search_dim)
    xla, pal, _ = _project_both(make, queries, k=k)
    assert (xla.basis is not None) == (search_dim == "auto")
    if ON_CPU:
      certified = _certificates_equal(xla, pal, queries, jnp.bfloat16, xla.basis is not None, k)
      assert certified.mean() > 0.9
      _certificates_equal(xla, pal, queries[:64], jnp.float32, False, k)


def test_random_rows_large_k_padded_batch(rng):
  # k = 20: 6 candidate groups more than the default 16; 150 queries in batches of 64 (padded).
  bank = rng.random((1500, 40)).astype(np.float32)
  queries = rng.random((150, 40)).astype(np.float32)
  make = lambda: fpjax.Manifold.from_embeddings(bank, tile=512)
  _, _, proj = _project_both(make, queries, batch_size=64, block_q=32, k=20)
  ref = np.argsort(((queries[:, None].astype(np.float64) - bank[None]) ** 2).sum(-1), axis=1,
                   kind="stable")[:, :20]
  np.testing.assert_array_equal(np.asarray(proj.index), ref)


def test_streamed_bank_and_uncertified_fallbacks(rng):
  # Two tight clusters: bfloat16 cannot certify, so the float32 Pallas stage runs as well.
  base = np.where(np.arange(900)[:, None] % 2, 1.0, -1.0) * np.ones((1, 64))
  bank = (base + rng.normal(scale=1e-4, size=(900, 64))).astype(np.float32)
  queries = (base[:40] + rng.normal(scale=1e-4, size=(40, 64))).astype(np.float32)
  make = lambda: fpjax.Manifold.from_embeddings(bank, tile=512,
                                                device_bank_bytes=512 * 64 * 4)
  xla, pal, _ = _project_both(make, queries, batch_size=32, block_q=16, k=2)
  assert pal.bank is None and pal.chunk_rows < 900
  assert pal.stats["float32"] > 0


@pytest.mark.skipif(ON_CPU, reason="the compiled (not interpreted) kernel needs a GPU or TPU")
def test_compiled_kernel_gives_the_xla_answers(mnist):
  # Run by benchmarks/accelerator.py on a GPU or TPU (tests/aot compiles the same candidates
  # without one): every kernel configuration the autotuner may pick here.
  # 16,384 rows (a Mosaic GPU tile): 4,096 digits, flipped and rolled.
  d = mnist[0][:4096]
  images = np.concatenate([d, d[:, ::-1], d[:, :, ::-1], np.roll(d, 3, axis=2)])
  bank = np.asarray(fpjax.embed(images, "rgb")).reshape(16384, -1)
  queries = np.asarray(fpjax.embed(mnist[0][4096:4608], "rgb")).reshape(512, -1)
  for search_dim in ("auto", None):
    make = lambda: fpjax.Manifold.from_embeddings(bank, tile=2048, search_dim=search_dim,
                                                  autotune=False)
    xla = make()
    a = xla.project_embedded(queries, k=3)
    dim = xla.dim if xla.basis is None else xla.basis.shape[1] + 1
    kernels = [c for c in xla._candidate_configs(512, dim) if c.variant != "xla"]
    assert kernels
    for config in kernels:
      pal = _force(make(), config)
      b = pal.project_embedded(queries, k=3)
      np.testing.assert_array_equal(np.asarray(b.index), np.asarray(a.index), err_msg=str(config))
      np.testing.assert_array_equal(np.asarray(b.sq_distance), np.asarray(a.sq_distance))


# ---- autotuning ------------------------------------------------------------------------------
def test_autotune_switch(monkeypatch):
  monkeypatch.delenv("FPJAX_AUTOTUNE", raising=False)
  assert autotune.enabled(None) is (jax.default_backend() != "cpu")  # off on the CPU
  assert autotune.enabled(True) and not autotune.enabled(False)
  monkeypatch.setenv("FPJAX_AUTOTUNE", "0")
  assert not autotune.enabled(True)
  monkeypatch.setenv("FPJAX_AUTOTUNE", "1")
  assert autotune.enabled(None)


def _wrong_kernel_for(monkeypatch, block_q):
  """Makes the Pallas kernel at `block_q` lose each query's nearest candidate group (a bug the
  certificate cannot see: the remaining groups still look far enough to certify)."""
  real = pallas_fused.group_candidates

  def patched(qs, bs, bn, **kw):
    d, g = real(qs, bs, bn, **kw)
    if kw["block_q"] != block_q:
      return d, g
    return (jnp.concatenate([d[:, 1:], jnp.full_like(d[:, :1], jnp.inf)], axis=1),
            jnp.concatenate([g[:, 1:], jnp.zeros_like(g[:, :1])], axis=1))
  monkeypatch.setattr(pallas_fused, "group_candidates", patched)


def test_autotune_drops_uncompilable_and_wrong_candidates_caches_and_never_changes_answers(
    tmp_path, monkeypatch, caplog, mnist):
  monkeypatch.setenv("FPJAX_CACHE_DIR", str(tmp_path))
  monkeypatch.delenv("FPJAX_AUTOTUNE", raising=False)
  bank = np.asarray(fpjax.embed(mnist[0][:1500], "rgb")).reshape(1500, -1)
  queries = np.asarray(fpjax.embed(mnist[0][4000:4100], "rgb")).reshape(100, -1)
  off = fpjax.Manifold.from_embeddings(bank, tile=512, search_dim=None, autotune=False)
  want = off.project_embedded(queries, k=2, batch_size=128)

  # The XLA scan at two tiles, the Pallas kernel in interpret mode (right, and wrong at
  # block_q 32), and the Pallas kernel compiled for real, which cannot lower on the CPU.
  good = [autotune.Config("xla", 512), autotune.Config("xla", 256),
          autotune.Config("pallas", 512, 64, interpret=True)]
  wrong = autotune.Config("pallas", 512, 32, interpret=True)
  uncompilable = autotune.Config("pallas", 512, 64, interpret=False)
  configs = good + [wrong, uncompilable]
  monkeypatch.setattr(fpjax.Manifold, "_candidate_configs", lambda self, n, dim: configs)
  _wrong_kernel_for(monkeypatch, 32)
  timed = []
  real_time = autotune.Tuner._time
  monkeypatch.setattr(autotune.Tuner, "_time", staticmethod(
      lambda config, run, repeats: timed.append(config) or real_time(config, run, repeats)))

  with caplog.at_level("WARNING"):
    on = fpjax.Manifold.from_embeddings(bank, tile=512, search_dim=None, autotune=True)
    got = on.project_embedded(queries, k=2, batch_size=128)
    got2 = on.project_embedded(queries[:50], k=2, batch_size=128)  # same shape: no new tuning
  np.testing.assert_array_equal(np.asarray(got.index), np.asarray(want.index))
  np.testing.assert_array_equal(np.asarray(got.sq_distance), np.asarray(want.sq_distance))
  np.testing.assert_array_equal(np.asarray(got2.index), np.asarray(want.index)[:50])

  path = tmp_path / "autotune.json"
  kind = str(jax.devices()[0].device_kind)
  entries = json.loads(path.read_text())[kind]
  # One key per stage and batch shape; only the three good candidates were ever timed (the
  # others were dropped before timing), each once per key, and never chosen.
  assert len(timed) == 3 * len(entries) >= 3
  assert set(timed) == set(good)
  tuner = autotune.Tuner(str(path))
  for name, entry in entries.items():
    assert autotune.Config(**entry["choice"]) in good
    dropped = tuner.dropped(kind, json.loads(name))
    assert set(dropped) == {repr(wrong), repr(uncompilable)}
    assert dropped[repr(wrong)].startswith("disagrees with the XLA scan")
    assert dropped[repr(uncompilable)].startswith("does not compile")
  assert len([r for r in caplog.records if "dropping" in r.getMessage()]) == 2
  # A new Manifold of the same shape reuses the cached choice: nothing is checked or timed.
  timed.clear()
  again = fpjax.Manifold.from_embeddings(bank, tile=512, search_dim=None, autotune=True)
  got3 = again.project_embedded(queries, k=2, batch_size=128)
  assert timed == []
  np.testing.assert_array_equal(np.asarray(got3.index), np.asarray(want.index))


def test_autotune_retunes_an_old_format_cache_entry(tmp_path):
  tuner = autotune.Tuner(str(tmp_path / "autotune.json"))
  key = {"bank_rows": 512}
  tuner._load().setdefault("cpu", {})[json.dumps(key)] = {"variant": "pallas", "tile": 512,
                                                          "block_q": 64}
  runs = []
  choice = tuner.choose("cpu", key, [autotune.Config("xla", 512)],
                        run=lambda c: runs.append(c) or 0, compile_only=lambda c: None,
                        agree=lambda a, b: None)
  assert choice == autotune.Config("xla", 512) and runs  # checked and timed afresh


@cpu_only
def test_dim_block_zero_padding_against_float64(rng):
  # dim 100 padded with zero features to 128 for dot slices of 32: the float32 kernel's group
  # minima and their order match float64 (well-separated random rows: no near-ties).
  rows, dim, c = 1024, 100, 16
  bank = rng.normal(size=(rows, dim)).astype(np.float32)
  queries = rng.normal(size=(40, dim)).astype(np.float32)
  bn = np.sum(bank.astype(np.float64) ** 2, axis=1)
  d64 = bn[None] - 2.0 * queries.astype(np.float64) @ bank.astype(np.float64).T
  gmin = d64.reshape(len(queries), -1, 8).min(axis=2)
  order = np.argsort(gmin, axis=1, kind="stable")[:, :c]
  got_d, got_g = pallas_fused.group_candidates(
      jnp.asarray(queries), jnp.asarray(bank), jnp.asarray(bn, jnp.float32), c=c, block_q=16,
      block_b=256, precision=jax.lax.Precision.HIGHEST, dim_block=32, interpret=True)
  np.testing.assert_array_equal(np.asarray(got_g), order)
  np.testing.assert_allclose(np.asarray(got_d), np.take_along_axis(gmin, order, axis=1),
                             rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("rows,block_b,block_q", [(1000, 512, 64), (1024, 100, 64),
                                                  (1024, 512, 0)])
def test_block_sizes_that_do_not_tile_are_refused(rows, block_b, block_q):
  x = jnp.zeros((8, 16), jnp.float32)
  with pytest.raises(ValueError):
    pallas_fused.group_candidates(x, jnp.zeros((rows, 16), jnp.float32),
                                   jnp.zeros((rows,), jnp.float32), c=4, block_q=block_q,
                                   block_b=block_b, interpret=True)


def test_the_compiled_kernel_does_not_lower_on_the_cpu():
  # One traced program with TPU and CUDA bodies only: on the CPU lowering fails (the autotuner's
  # compile check drops such a candidate; the CPU runs the XLA scan).
  x = jnp.zeros((64, 128), jnp.bfloat16)
  fn = jax.jit(lambda q, b, n: pallas_fused.group_candidates(q, b, n, c=16, block_q=64,
                                                               block_b=512))
  with pytest.raises(Exception):
    fn.lower(x, jnp.zeros((512, 128), jnp.bfloat16), jnp.zeros((512,), jnp.float32)).compile()


def test_candidates_by_platform_dimension_and_generation():
  gpu = lambda cc: type("Device", (), {"platform": "gpu", "compute_capability": cc})()
  # Hopper: large bank slices are padded to the Mosaic GPU kernel's tile, which is then a
  # candidate; an A100 or a small slice keeps the bank tile and has no Mosaic GPU candidate.
  assert autotune.slice_unit(gpu("9.0"), 1_000_000, 2048) == autotune.MOSAIC_GPU_TILES[0]
  assert autotune.slice_unit(gpu("8.0"), 1_000_000, 2048) == 2048
  assert autotune.slice_unit(gpu("9.0"), 50_000, 2048) == 2048
  assert autotune.slice_unit(jax.devices()[0], 1_000_000, 2048) == 2048  # this CPU
  variants = lambda cc: {c.variant for c in autotune.candidates("gpu", 1 << 20, 2048, 1024,
                                                                784, cc)}
  assert variants("9.0") == {"xla", "pallas", "mosaic_gpu"}
  assert variants("8.0") == {"xla", "pallas"}
  assert {c.variant for c in autotune.candidates("cpu", 1 << 20, 2048, 1024)} == {"xla"}
  # TPU blocks hold the whole dimension in VMEM: fewer and smaller ones at 3,072 than at 784.
  tpu = lambda dim: [c for c in autotune.candidates("tpu", 1 << 20, 2048, 1024, dim)
                     if c.variant == "pallas"]
  assert len(tpu(3072)) < len(tpu(784))
  assert max(c.tile * c.block_q for c in tpu(3072)) < max(c.tile * c.block_q for c in tpu(784))


def test_kernel_groups_rows_like_the_scan():
  # The candidates are groups of GROUP rows; the kernel and the scan must mean the same groups.
  assert pallas_fused.GROUP == scan.GROUP
