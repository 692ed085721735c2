"""Manifold (the eager projection, its fallback ladder) and the kernel pieces it runs
(fpjax.knn: scan, bounds, reduced, placement) against a float64 brute force and FAISS."""
import faiss
import numpy as np
import pytest

import fpjax
from fpjax.knn import placement, reduced, scan
from _precision_check import count_ops, default_precision_ops


def brute_force(bank, queries, k):
  """float64 squared distances and the k nearest rows (ties: lowest row)."""
  b = bank.reshape(len(bank), -1).astype(np.float64)
  q = queries.reshape(len(queries), -1).astype(np.float64)
  d2 = (q * q).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * q @ b.T
  d2 = np.maximum(d2, 0)
  # Recompute the leading candidates in the difference form: exact in float64.
  order = np.argsort(d2, axis=1, kind="stable")[:, :k + 8]
  exact = ((q[:, None, :] - b[order]) ** 2).sum(-1)
  idx = np.empty((len(q), k), np.int64)
  dist = np.empty((len(q), k))
  for r in range(len(q)):
    o = np.lexsort((order[r], exact[r]))[:k]
    idx[r], dist[r] = order[r][o], exact[r][o]
  return idx, np.sqrt(dist), d2


def assert_same_neighbours(got_idx, got_dist, ref_idx, ref_dist, d2, rel=1e-5):
  """Indices equal the reference except on float32 ties, where distances agree."""
  same = got_idx == ref_idx
  rows = np.nonzero(~same.all(1))[0]
  for r in rows:
    ours = np.sqrt(d2[r, got_idx[r]])
    np.testing.assert_allclose(ours, ref_dist[r], rtol=rel, atol=1e-6,
                               err_msg=f"query {r}: not a tie, a wrong neighbour")
  np.testing.assert_allclose(got_dist, ref_dist, rtol=1e-5, atol=1e-5)
  return len(rows)


@pytest.mark.parametrize("k", [1, 4])
def test_exact_matches_float64_on_random_data(k, rng):
  bank = rng.random((1500, 6, 6, 3)).astype(np.float32)
  queries = rng.random((300, 6, 6, 3)).astype(np.float32)
  proj = fpjax.Manifold.from_images(bank, "rgb", tile=256).project(queries, k=k, batch_size=128)
  ref_idx, ref_dist, d2 = brute_force(bank, queries, k)
  ties = assert_same_neighbours(np.asarray(proj.index), np.sqrt(proj.sq_distance), ref_idx,
                                ref_dist, d2)
  assert ties == 0  # continuous random data has no float32 ties
  assert proj.index.dtype == np.int32 and proj.sq_distance.dtype == np.float32


@pytest.mark.parametrize("space", ["rgb", "freq", "dct"])
def test_exact_on_real_digits_matches_float64_and_faiss(space, mnist):
  images = mnist[0]
  bank_images, query_images = images[:3000], images[4000:4400]
  manifold = fpjax.Manifold.from_images(bank_images, space)
  proj = manifold.project(query_images, k=3)
  bank = np.asarray(fpjax.embed(bank_images, space))
  queries = np.asarray(fpjax.embed(query_images, space))
  ref_idx, ref_dist, d2 = brute_force(bank, queries, 3)
  assert_same_neighbours(np.asarray(proj.index), np.sqrt(proj.sq_distance), ref_idx, ref_dist, d2)
  # FAISS as an independent oracle for the nearest row.
  index = faiss.IndexFlatL2(bank[0].size)
  index.add(bank.reshape(len(bank), -1))
  fd, fi = index.search(queries.reshape(len(queries), -1), 1)
  disagree = np.asarray(proj.index)[:, 0] != fi[:, 0]
  np.testing.assert_allclose(np.sqrt(d2[np.nonzero(disagree)[0], fi[disagree, 0]]),
                             ref_dist[disagree, 0], rtol=1e-4)
  assert disagree.mean() < 0.01


def test_artifact_is_embedding_minus_nearest(mnist):
  bank_images, query_images = mnist[0][:2000], mnist[0][2000:2100]
  proj = fpjax.Manifold.from_images(bank_images, "freq").project(query_images)
  bank = np.asarray(fpjax.embed(bank_images, "freq"))
  queries = np.asarray(fpjax.embed(query_images, "freq"))
  idx = np.asarray(proj.index)[:, 0]
  np.testing.assert_array_equal(np.asarray(proj.nearest), bank[idx])
  np.testing.assert_allclose(np.asarray(proj.artifact), queries - bank[idx], atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(proj.artifact).reshape(100, -1), axis=1),
                             np.sqrt(proj.sq_distance)[:, 0], rtol=1e-5)


def test_real_bank_images_have_zero_artifact(mnist):
  bank = mnist[0][:500]
  proj = fpjax.Manifold.from_images(bank, "rgb").project(bank[:50])
  np.testing.assert_array_equal(np.asarray(proj.sq_distance)[:, 0], 0)
  assert not np.asarray(proj.artifact).any()


@pytest.mark.parametrize("device_bank_bytes", [None, 200 * 48 * 4])
def test_neighbour_rows_match_numpy_indexing(device_bank_bytes, rng):
  # Resident (sharded gather) and streamed (host rows) banks; k > 1; 37 queries in padded
  # batches of 16 (3 batches, the last partly padding) share one compilation.
  bank = rng.random((700, 4, 4, 3)).astype(np.float32)
  queries = rng.random((37, 4, 4, 3)).astype(np.float32)
  manifold = fpjax.Manifold.from_embeddings(bank, device_bank_bytes=device_bank_bytes)
  assert manifold.placement.streamed == (device_bank_bytes is not None)
  proj = manifold.project_embedded(queries, k=5, batch_size=16)
  ref_idx, _, _ = brute_force(bank, queries, 5)
  np.testing.assert_array_equal(np.asarray(proj.index), ref_idx)
  before = manifold._gather_fn()._cache_size() if device_bank_bytes is None else 0
  rows = manifold.neighbour_rows(proj.index, batch_size=16)
  if device_bank_bytes is None:  # three batches of 16, one new compilation
    assert manifold._gather_fn()._cache_size() == before + 1
  assert rows.shape == (37, 5, 4, 4, 3) and rows.dtype == np.float32
  np.testing.assert_array_equal(np.asarray(rows), bank[ref_idx])
  np.testing.assert_array_equal(np.asarray(proj.nearest), bank[ref_idx[:, 0]])
  # Any global rows, in any order, including the last row of the bank.
  idx = np.array([[699, 0], [350, 350], [1, 698]])
  np.testing.assert_array_equal(np.asarray(manifold.neighbour_rows(idx)), bank[idx])


def test_neighbour_rows_bad_index(rng):
  manifold = fpjax.Manifold.from_embeddings(rng.random((30, 4)).astype(np.float32))
  with pytest.raises(ValueError, match=r"row\(s\) 1 hold bank rows outside \[0, 30\)"):
    manifold.neighbour_rows(np.array([[0], [30]]))
  with pytest.raises(ValueError, match=r"integer array \[n, j\]"):
    manifold.neighbour_rows(np.zeros(3, np.int32))


def test_exact_ties_resolve_to_lowest_row(rng):
  bank = rng.random((300, 8)).astype(np.float32)
  bank[200] = bank[17]
  bank[250] = bank[17]
  proj = fpjax.Manifold.from_embeddings(bank).project_embedded(bank[[17, 200]], k=3)
  np.testing.assert_array_equal(np.asarray(proj.index), [[17, 200, 250]] * 2)


def test_uncertified_queries_fall_back_to_float32(rng):
  # Rows that differ by less than bfloat16 can resolve: the bf16 search cannot
  # certify its answer, so 'exact' must search again in float32 and still be exact.
  # Two tight clusters far apart: centring on the bank mean cannot shrink the rows.
  base = np.where(np.arange(600)[:, None] % 2, 1.0, -1.0) * np.ones((1, 64))
  bank = (base + rng.normal(scale=1e-4, size=(600, 64))).astype(np.float32)
  queries = (base[:50] + rng.normal(scale=1e-4, size=(50, 64))).astype(np.float32)
  manifold = fpjax.Manifold.from_embeddings(bank, tile=128)
  proj = manifold.project_embedded(queries, batch_size=32)
  ref_idx, ref_dist, d2 = brute_force(bank, queries, 1)
  assert manifold.stats["float32"] > 0 and manifold.stats["direct"] > 0
  assert_same_neighbours(np.asarray(proj.index), np.sqrt(proj.sq_distance), ref_idx, ref_dist, d2,
                         rel=1e-4)


def test_reduced_search_is_exact_on_real_digits(mnist):
  bank_images, query_images = mnist[0][:3000], mnist[0][3000:3500]
  full = fpjax.Manifold.from_images(bank_images, search_dim=None)
  assert full.basis is None
  ref = full.project(query_images, k=2)
  auto = fpjax.Manifold.from_images(bank_images)  # digits: the reduced search is chosen
  assert auto.basis is not None and auto.basis.shape[1] < 784 // 2
  got = auto.project(query_images, k=2)
  np.testing.assert_array_equal(np.asarray(got.index), np.asarray(ref.index))
  np.testing.assert_array_equal(np.asarray(got.sq_distance), np.asarray(ref.sq_distance))
  assert auto.stats["bfloat16"] <= 0.02 * auto.stats["queries"]  # nearly all certified
  # A crude 4-direction search certifies few answers; the fallback keeps them exact.
  crude = fpjax.Manifold.from_images(bank_images, search_dim=4)
  assert crude.basis is not None
  got = crude.project(query_images, k=2)
  assert crude.stats["bfloat16"] > 0
  np.testing.assert_array_equal(np.asarray(got.index), np.asarray(ref.index))
  np.testing.assert_array_equal(np.asarray(got.sq_distance), np.asarray(ref.sq_distance))
  with pytest.raises(ValueError, match="search_dim"):
    fpjax.Manifold.from_images(bank_images, search_dim=784)


@pytest.mark.parametrize("device_bank_bytes", [None, 700 * 784 * 4])
def test_reduced_search_is_used_from_the_first_call(device_bank_bytes, mnist):
  # Built in the constructor (resident and streamed banks): every kernel call of the first
  # projection is a reduced search, with the full-space answers; with a resident bank its
  # kernel was compiled in the constructor too.
  bank_images, query_images = mnist[0][:2500], mnist[0][3000:3300]
  ref = fpjax.Manifold.from_images(bank_images, search_dim=None).project(query_images)
  m = fpjax.Manifold.from_images(bank_images, device_bank_bytes=device_bank_bytes)
  assert m.placement.streamed == (device_bank_bytes is not None)
  assert m.basis is not None and m.basis.shape[1] < 784 // 2
  used = []  # per first-stage kernel call: was it the reduced search?
  search_all = m._search_all
  m._search_all = lambda q, dt, reduced=None, **kw: (
      kw.get("tune") and used.append(reduced is not None) or search_all(q, dt, reduced, **kw))
  if device_bank_bytes is None:  # the first call's kernel compiled during the reduction
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P
    q = jax.device_put(np.zeros((1024, 784), np.float32), NamedSharding(m.mesh, P("data", None)))
    compiles = []
    listener = lambda event, duration, **kw: compiles.append(event)
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
      jax.block_until_ready(search_all(q, jnp.bfloat16, m._reduced))
    finally:
      jax.monitoring.unregister_event_duration_listener(listener)
    assert "/jax/core/compile/backend_compile_duration" not in compiles, compiles
  got = m.project(query_images)
  assert used and all(used)
  np.testing.assert_array_equal(np.asarray(got.index), np.asarray(ref.index))
  np.testing.assert_array_equal(np.asarray(got.sq_distance), np.asarray(ref.sq_distance))
  np.testing.assert_array_equal(np.asarray(got.artifact), np.asarray(ref.artifact))


def test_failed_reduction_keeps_full_space_search(mnist, monkeypatch, caplog):
  def fail(*args):
    raise MemoryError("no room for the search rows")
  monkeypatch.setattr(reduced, "reduction", fail)
  bank_images, query_images = mnist[0][:1500], mnist[0][3000:3100]
  m = fpjax.Manifold.from_images(bank_images)
  assert m.basis is None and m.reduce_consts is None
  assert "building the reduced search failed (MemoryError: no room" in caplog.text
  ref = fpjax.Manifold.from_images(bank_images, search_dim=None).project(query_images, k=2)
  got = m.project(query_images, k=2)
  np.testing.assert_array_equal(np.asarray(got.index), np.asarray(ref.index))
  np.testing.assert_array_equal(np.asarray(got.sq_distance), np.asarray(ref.sq_distance))


def test_fast_mode_is_exact_on_real_digits(mnist):
  bank_images, query_images = mnist[0][:4000], mnist[0][4000:]
  fast = fpjax.Manifold.from_images(bank_images, precision="fast").project(query_images)
  exact = fpjax.Manifold.from_images(bank_images, precision="exact").project(query_images)
  rate = np.mean(np.asarray(fast.index) == np.asarray(exact.index))
  assert rate >= 0.999


def test_bank_streamed_from_host_gives_same_answer(mnist):
  bank_images, query_images = mnist[0][:3000], mnist[0][3000:3300]
  on_device = fpjax.Manifold.from_images(bank_images).project(query_images, k=2)
  streamed_manifold = fpjax.Manifold.from_images(bank_images,
                                                 device_bank_bytes=700 * 784 * 4)
  assert streamed_manifold.bank is None and streamed_manifold.chunk_rows < 3000
  streamed = streamed_manifold.project(query_images, k=2)
  assert len(streamed_manifold._fns) <= 3  # one compiled kernel serves every chunk
  np.testing.assert_array_equal(np.asarray(streamed.index), np.asarray(on_device.index))
  np.testing.assert_array_equal(np.asarray(streamed.artifact), np.asarray(on_device.artifact))


def test_partial_last_chunk_has_no_duplicate_rows(rng):
  # The last streamed chunk holds fewer real groups than the kernel keeps.
  bank = rng.random((1010, 32)).astype(np.float32)
  queries = rng.random((40, 32)).astype(np.float32)
  manifold = fpjax.Manifold.from_embeddings(bank, device_bank_bytes=496 * 32 * 4)
  proj = manifold.project_embedded(queries, k=3)
  ref_idx, ref_dist, d2 = brute_force(bank, queries, 3)
  np.testing.assert_array_equal(np.asarray(proj.index), ref_idx)


def test_batch_size_does_not_change_results(mnist):
  manifold = fpjax.Manifold.from_images(mnist[0][:1000])
  a = manifold.project(mnist[0][1000:1300], batch_size=64)
  b = manifold.project(mnist[0][1000:1300], batch_size=1024)
  np.testing.assert_array_equal(np.asarray(a.index), np.asarray(b.index))


def test_principal_basis_is_orthonormal(mnist):
  basis = np.asarray(fpjax.Manifold.from_images(mnist[0][:500]).principal_basis(8))
  assert basis.shape == (784, 8)
  np.testing.assert_allclose(basis.T @ basis, np.eye(8), atol=1e-4)


def test_reduction_basis_is_deterministic_and_built_in_the_constructor(mnist):
  # The basis comes from a seeded host SVD of a fixed bank sample (run in a worker thread while
  # the bank is placed): every build of the same bank gets the same V, bit for bit.
  bank = np.asarray(fpjax.embed(mnist[0][:3000], "rgb")).reshape(3000, -1)
  m = fpjax.Manifold.from_embeddings(bank)
  sample = reduced.reduction_sample(bank, "auto")
  np.testing.assert_array_equal(sample, bank[placement.sample_rows(3000, 4096, 0)])
  basis, orth_err = reduced.reduction_basis(sample, "auto")
  np.testing.assert_array_equal(np.asarray(m.basis), basis)
  assert float(m.reduce_consts.orth_err) == np.float32(orth_err)
  np.testing.assert_array_equal(reduced.reduction_basis(sample, "auto")[0], basis)
  # Its leading directions are the sample's principal ones (float64 SVD).
  x = sample.astype(np.float64) - sample.mean(0, dtype=np.float64)
  ref_vt = np.linalg.svd(x, full_matrices=False)[2]
  cosines = np.linalg.svd(basis[:, :8].astype(np.float64).T @ ref_vt[:8].T, compute_uv=False)
  assert cosines.min() > 0.99

# ---- bad input -------------------------------------------------------------------------------
def test_k_larger_than_bank(rng):
  manifold = fpjax.Manifold.from_images(rng.random((5, 4, 4, 1)).astype(np.float32))
  with pytest.raises(ValueError, match="larger than the bank"):
    manifold.project(rng.random((2, 4, 4, 1)).astype(np.float32), k=6)


def test_empty_inputs(rng):
  with pytest.raises(ValueError, match="empty"):
    fpjax.Manifold.from_images(np.zeros((0, 4, 4, 1), np.uint8))
  manifold = fpjax.Manifold.from_images(rng.random((5, 4, 4, 1)).astype(np.float32))
  with pytest.raises(ValueError, match="empty"):
    manifold.project(np.zeros((0, 4, 4, 1), np.uint8))


def test_nan_and_inf_rows_are_named(rng):
  bank = rng.random((20, 4, 4, 1)).astype(np.float32)
  bad_bank = bank.copy()
  bad_bank[7, 1, 1, 0] = np.nan
  with pytest.raises(ValueError, match=r"real bank: 1 row\(s\).*rows 7"):
    fpjax.Manifold.from_images(bad_bank)
  queries = rng.random((10, 4, 4, 1)).astype(np.float32)
  queries[3, 0, 0, 0] = np.inf
  queries[8, 2, 2, 0] = np.nan
  with pytest.raises(ValueError, match=r"queries: 2 row\(s\).*rows 3, 8"):
    fpjax.Manifold.from_images(bank).project(queries)


def test_shape_and_channel_mismatch(rng):
  manifold = fpjax.Manifold.from_images(rng.random((20, 8, 8, 1)).astype(np.float32))
  with pytest.raises(ValueError, match=r"\[8, 8, 3\].*\[8, 8, 1\]"):
    manifold.project(rng.random((3, 8, 8, 3)).astype(np.float32))
  with pytest.raises(ValueError, match=r"\[6, 6, 1\]"):
    manifold.project(rng.random((3, 6, 6, 1)).astype(np.float32))


def test_bad_settings(rng):
  bank = rng.random((20, 4)).astype(np.float32)
  with pytest.raises(ValueError, match="precision"):
    fpjax.Manifold.from_embeddings(bank, precision="half")


@pytest.mark.parametrize("search_dim", [None, 63])
def test_kernel_memory_is_bank_plus_tile_not_queries_times_bank(search_dim):
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding, PartitionSpec as P
  temps = []
  for rows in (4096, 32768):
    manifold = fpjax.Manifold.from_embeddings(np.zeros((rows, 128), np.float32), tile=1024,
                                              search_dim=search_dim)
    q = jax.device_put(jnp.zeros((512, 128)), NamedSharding(manifold.mesh, P("data", None)))
    args = (q, manifold.bank, manifold.mean, np.int32(0), np.int32(rows))
    if search_dim:  # the reduced search: its rows, ‖b − μ‖², basis and constants
      assert manifold.basis is not None
      args += (manifold.placement.search_rows + manifold._reduced,)
    compiled = manifold._search_fn(jnp.bfloat16, bool(search_dim), k=1).lower(*args).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:
      pytest.skip("this backend reports no memory analysis")
    temps.append(analysis.temp_size_in_bytes)
  assert temps[0] == temps[1]                  # working memory does not grow with the bank
  assert temps[1] < 4 * 512 * 1024 * 4         # a few queries x tile blocks
  assert temps[1] < 512 * 32768 * 4 / 8        # far below one queries x bank matrix


# ---- precision: every float32 product the exactness rests on asks for HIGHEST -----------------
# (The checker's own negative tests are in tests/test_precision.py.)
def test_float32_products_name_highest_precision(mnist):
  # XLA:CPU ignores the precision flag, so no numeric test here can see TF32 or bf16 passes
  # that GPUs and TPUs would use by default; the traced programs can.
  import functools
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding, PartitionSpec as P
  from fpjax import parallel
  from fpjax.knn import autotune
  bank = np.asarray(fpjax.embed(mnist[0][:1024], "rgb")).reshape(1024, -1)
  m = fpjax.Manifold.from_embeddings(bank, tile=256, search_dim=63)
  assert m.basis is not None
  q = jax.device_put(jnp.asarray(bank[:64]), NamedSharding(m.mesh, P("data", None)))
  full = (q, m.bank, m.mean, np.int32(0), np.int32(m.size))
  reduced_args = full + (m.placement.search_rows + (m.basis, m.reduce_consts),)
  pallas = autotune.Config("pallas", 256, 64, interpret=True)
  programs = {
      "float32 stage (XLA)": (m._search_fn(jnp.float32, k=2), full),
      "float32 stage (Pallas)": (m._search_fn(jnp.float32, config=pallas, k=2), full),
      "reduced bfloat16 stage (query reduction, re-rank)": (m._search_fn(jnp.bfloat16, True, k=2),
                                                             reduced_args),
      "direct stage": (m._search_fn(None, k=2), full),
      "bank reduction": (jax.shard_map(
          functools.partial(reduced.reduce_slice, batch=256), mesh=m.mesh,
          in_specs=(P(parallel.BANK, None),) + (P(),) * 5,
          out_specs=(P(parallel.BANK, None), P(parallel.BANK), P()), check_vma=False),
          (m.bank, m.mean, np.int32(0), np.int32(m.size), m.basis, np.float32(1e-6))),
  }
  counts = {}
  for name, (fn, args) in programs.items():
    assert not default_precision_ops(fn, *args), f"{name}: a float32 dot without HIGHEST"
    counts[name] = count_ops(fn, *args)
  # Each program that multiplies float32 matrices was seen doing so.
  assert all(counts[n] > 0 for n in counts if n != "direct stage"), counts


@pytest.mark.parametrize("k", [1, 3, 40])
def test_two_stage_rerank_same_as_full_rerank(k, rng, monkeypatch):
  """The re-rank in two stages (fpjax.knn.scan) returns exactly what the re-rank of
  every candidate group returns (distances, indices, certificates), with tied rows, padding
  and a batch of several chunks. 40 queries have 12 near-duplicate rows each, in 12 groups,
  closer than bfloat16 can tell apart: their nearest row is often in a group past the first
  stage's, so a second stage that skipped queries or chunks would change answers."""
  import jax.numpy as jnp
  dim = 96
  bank = rng.uniform(size=(3000, dim)).astype(np.float32)
  bank[1500:1510] = bank[7]  # exact ties across groups
  near = []
  for j in range(40):
    base = rng.uniform(size=dim)
    bank[(8 * j + 1 + 248 * np.arange(12)) % 3000] = base + 1e-3 * rng.normal(size=(12, dim))
    near.append(base + 1e-3 * rng.normal(size=dim))
  queries = np.concatenate([bank[[7, 0, 2999]], np.asarray(near),
                            rng.uniform(size=(213, dim))]).astype(np.float32)
  results = []
  for first in (scan.RERANK_FIRST, 10 ** 6):  # 10**6: one stage, every group
    monkeypatch.setattr(scan, "RERANK_FIRST", first)
    m = fpjax.Manifold.from_embeddings(bank, tile=512, search_dim=None)
    results.append([np.asarray(a) for a in m._search_all(jnp.asarray(queries), jnp.bfloat16,
                                                          k=k)])
  (d0, i0, ok0), (d1, i1, ok1) = results
  np.testing.assert_array_equal(i0, i1)
  np.testing.assert_array_equal(d0, d1)
  np.testing.assert_array_equal(ok0, ok1)
  ref_idx, ref_dist, d2 = brute_force(bank, queries, k)
  assert ok0.mean() > 0.9
  assert_same_neighbours(i0[ok0], np.sqrt(d0[ok0]), ref_idx[ok0], ref_dist[ok0], d2[ok0])


def test_top_k_rows_one_matches_sort(rng):
  """k = 1 by two minima (fpjax.knn.scan.top_k_rows) equals the sort of (distance, index)
  pairs, ties and inf rows included."""
  import jax.numpy as jnp
  d = rng.integers(0, 4, (64, 24)).astype(np.float32)
  d[5] = np.inf
  d[6, ::2] = np.inf
  i = np.stack([rng.permutation(1000)[:24] for _ in range(64)]).astype(np.int32)
  got = scan.top_k_rows(jnp.asarray(d), jnp.asarray(i), k=1)
  order = np.lexsort((i, d), axis=1)[:, :1]
  np.testing.assert_array_equal(np.asarray(got[0]), np.take_along_axis(d, order, 1))
  np.testing.assert_array_equal(np.asarray(got[1]), np.take_along_axis(i, order, 1))
