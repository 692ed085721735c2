"""The fused Pallas candidate search (interpret mode on the CPU) against the XLA tile scan.

Both must give IDENTICAL candidates, hence identical indices, distances and certificates.
Sizes stay small: interpret mode runs every grid step as XLA ops.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fpjax
from fpjax import autotune
from fpjax import manifold as manifold_lib
from fpjax import pallas_search


def _xla_candidates(qs, bs, bn, c, tile, search_dtype):
  precision = jax.lax.Precision.HIGHEST if search_dtype == jnp.float32 else None
  return jax.jit(lambda q, b, n: manifold_lib._scan_tiles(
      q, q, b, None, n, tile=tile, c=c, search_dtype=search_dtype, precision=precision))(qs, bs, bn)


@pytest.mark.parametrize("search_dtype", [jnp.bfloat16, jnp.float32])
def test_kernel_matches_xla_scan_with_padding_and_ties(search_dtype, rng):
  rows, dim, c = 1024, 48, 16
  bank = rng.normal(size=(rows, dim)).astype(np.float32)
  bank[700:710] = bank[3]           # exact ties across groups: the lower group must win
  bank[40:48] = bank[0:8]           # a whole tied group
  bn = np.sum(bank.astype(np.float64) ** 2, axis=1).astype(np.float32)
  bn[1000:] = np.inf                # padding rows
  queries = np.concatenate([bank[[3, 0, 5]], rng.normal(size=(197, dim))]).astype(np.float32)
  qs, bs, bnj = jnp.asarray(queries, search_dtype), jnp.asarray(bank, search_dtype), jnp.asarray(bn)
  want_d, want_g = _xla_candidates(qs, bs, bnj, c, 256, search_dtype)
  precision = jax.lax.Precision.HIGHEST if search_dtype == jnp.float32 else None
  for block_q, block_b in ((64, 256), (128, 512)):
    got_d, got_g = pallas_search.group_candidates(qs, bs, bnj, c=c, block_q=block_q,
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
  manifold._config = lambda q, search_dtype, reduced: config if search_dtype is not None else xla
  return manifold


def _pallas(manifold, block_q=64):
  return autotune.Config("pallas", manifold.tile, block_q, interpret=True)


def _project_both(make, queries, batch_size=None, block_q=64):
  xla = make()
  pal = make()
  _force(pal, _pallas(pal, block_q))
  a = xla.project_embedded(queries, batch_size=batch_size)
  b = pal.project_embedded(queries, batch_size=batch_size)
  np.testing.assert_array_equal(np.asarray(b.index), np.asarray(a.index))
  np.testing.assert_array_equal(np.asarray(b.distance), np.asarray(a.distance))
  assert pal.stats == xla.stats  # the same queries were certified at every stage
  return xla, pal, a


def _certificates_equal(xla, pal, queries, search_dtype, reduced):
  q = jnp.asarray(queries.reshape(len(queries), -1), jnp.float32)
  a = xla._search_all(q, search_dtype, reduced)
  b = pal._search_all(q, search_dtype, reduced)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
  return np.asarray(a[2])


@pytest.mark.parametrize("k", [1, 3])
def test_digits_reduced_and_full_space_identical(k, mnist):
  bank = np.asarray(fpjax.embed(mnist[0][:2000], "rgb")).reshape(2000, -1)
  queries = np.asarray(fpjax.embed(mnist[0][4000:4200], "rgb")).reshape(200, -1)
  for search_dim in ("auto", None):
    make = lambda: fpjax.Manifold.from_embeddings(bank, k=k, tile=256, search_dim=search_dim)
    xla, pal, _ = _project_both(make, queries)
    assert (xla.basis is not None) == (search_dim == "auto")
    certified = _certificates_equal(xla, pal, queries, jnp.bfloat16, xla.basis is not None)
    assert certified.mean() > 0.9
    _certificates_equal(xla, pal, queries[:64], jnp.float32, False)


def test_random_rows_large_k_padded_batch(rng):
  # k = 20: 6 candidate groups more than the default 16; 150 queries in batches of 64 (padded).
  bank = rng.random((1500, 40)).astype(np.float32)
  queries = rng.random((150, 40)).astype(np.float32)
  make = lambda: fpjax.Manifold.from_embeddings(bank, k=20, tile=128)
  _, _, proj = _project_both(make, queries, batch_size=64, block_q=32)
  ref = np.argsort(((queries[:, None].astype(np.float64) - bank[None]) ** 2).sum(-1), axis=1,
                   kind="stable")[:, :20]
  np.testing.assert_array_equal(np.asarray(proj.index), ref)


def test_streamed_bank_and_uncertified_fallbacks(rng):
  # Two tight clusters: bfloat16 cannot certify, so the float32 Pallas stage runs as well.
  base = np.where(np.arange(900)[:, None] % 2, 1.0, -1.0) * np.ones((1, 64))
  bank = (base + rng.normal(scale=1e-4, size=(900, 64))).astype(np.float32)
  queries = (base[:40] + rng.normal(scale=1e-4, size=(40, 64))).astype(np.float32)
  make = lambda: fpjax.Manifold.from_embeddings(bank, k=2, tile=128,
                                                device_bank_bytes=256 * 64 * 4)
  xla, pal, _ = _project_both(make, queries, batch_size=32, block_q=16)
  assert pal.bank is None and pal.chunk_rows < 900
  assert pal.stats["float32"] > 0

