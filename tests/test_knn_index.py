"""The functional index (fpjax.knn) and the FAISS-shaped Manifold.search, against float64
numpy and FAISS IndexFlatL2; traceability (jit, vmap, scan, shard_map); input checks.

N-device meshes (2x2, 1x4, Explicit and Auto axes, any names) run in their own process:
tests/test_multidevice.py.
"""
import faiss
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

import fpjax
from fpjax import estimators
from fpjax.errors import UserInputError


def brute_force(bank, queries, k):
  """float64 squared distances [n, k] and indices [n, k] (ties: lowest row)."""
  b = bank.reshape(len(bank), -1).astype(np.float64)
  q = queries.reshape(len(queries), -1).astype(np.float64)
  d2 = ((q[:, None, :] - b[None]) ** 2).sum(-1)
  idx = np.argsort(d2, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(d2, idx, 1), idx


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  return rng.random((900, 24)).astype(np.float32), rng.random((64, 24)).astype(np.float32)


@pytest.fixture(scope="module")
def index(data):
  return fpjax.knn.build_index(data[0], tile=128, search_dim=None)


@pytest.fixture(scope="module")
def manifold(data):
  return fpjax.Manifold.from_embeddings(data[0], tile=128)


def test_search_is_faiss_shaped_and_exact(data, index):
  bank, queries = data
  d, i, ok = fpjax.knn.search(index, queries, 4)
  ref_d, ref_i = brute_force(bank, queries, 4)
  assert d.dtype == jnp.float32 and i.dtype == jnp.int32 and ok.dtype == jnp.bool_
  assert np.asarray(ok).all()
  np.testing.assert_array_equal(np.asarray(i), ref_i)
  np.testing.assert_allclose(np.asarray(d), ref_d, rtol=1e-5, atol=1e-6)
  faiss_index = faiss.IndexFlatL2(bank.shape[1])
  faiss_index.add(bank)
  fd, fi = faiss_index.search(queries, 4)  # FAISS: (squared distances, indices)
  np.testing.assert_array_equal(np.asarray(i), fi)
  np.testing.assert_allclose(np.asarray(d), fd, rtol=1e-4, atol=1e-5)


def test_search_and_gather_trace_under_jit_vmap_scan_and_shard_map(data, index):
  bank, queries = data
  ref_d, ref_i = brute_force(bank, queries, 3)
  d, i, ok = jax.jit(lambda q: fpjax.knn.search(index, q, 3))(queries)
  np.testing.assert_array_equal(np.asarray(i), ref_i)
  assert np.asarray(ok).all()
  _, i, _ = jax.vmap(lambda q: fpjax.knn.search(index, q, 3))(queries.reshape(4, 16, 24))
  np.testing.assert_array_equal(np.asarray(i).reshape(64, 3), ref_i)

  def step(total, q):
    d, i, ok = fpjax.knn.search(index, q, 3)
    return total + jnp.sum(d[:, 0]), (i, fpjax.knn.gather(index, i))
  total, (i, rows) = jax.jit(lambda b: jax.lax.scan(step, 0.0, b))(queries.reshape(4, 16, 24))
  np.testing.assert_array_equal(np.asarray(i).reshape(64, 3), ref_i)
  np.testing.assert_array_equal(np.asarray(rows).reshape(64, 3, 24), bank[ref_i])
  np.testing.assert_allclose(float(total), ref_d[:, 0].sum(), rtol=1e-5)
  in_map = jax.jit(jax.shard_map(
      lambda ix, q: fpjax.knn.search(ix, q, 3)[1], mesh=index.mesh,
      in_specs=(fpjax.knn.index_specs(index), P("data")), out_specs=P("data"), check_vma=False))
  np.testing.assert_array_equal(np.asarray(in_map(index, jnp.asarray(queries))), ref_i)


def test_traced_search_skips_the_host_nan_check_and_reports_certificates(data, index):
  queries = data[1].copy()
  queries[5] = np.nan
  with pytest.raises(UserInputError, match=r"rows 5"):  # eager: named
    fpjax.knn.search(index, queries, 1)
  _, _, ok = jax.jit(lambda q: fpjax.knn.search(index, q, 1))(queries)  # no ConcretizationError
  assert np.asarray(ok).shape == (64,)


def test_uncertified_answers_are_flagged_in_a_trace():
  # Two tight clusters closer than bfloat16 resolves: the traced search cannot certify, and
  # says so; every answer it does certify is the float64 one (the eager Manifold searches the
  # rest again: tests/test_manifold.py).
  rng = np.random.default_rng(1)
  base = np.where(np.arange(600)[:, None] % 2, 1.0, -1.0) * np.ones((1, 64))
  spread = 5.0 + rng.normal(size=(600, 64))  # and rows far apart, whose answers certify
  bank = np.concatenate([base + rng.normal(scale=1e-4, size=(600, 64)), spread])
  bank = bank.astype(np.float32)
  queries = np.concatenate([base[:32] + rng.normal(scale=1e-4, size=(32, 64)),
                            spread[:32] + 0.01 * rng.normal(size=(32, 64))]).astype(np.float32)
  index = fpjax.knn.build_index(bank, tile=128)
  ref_i = brute_force(bank, queries, 1)[1]
  for search_dtype in (jnp.bfloat16, jnp.float32, None):
    _, i, ok = jax.jit(lambda q, s=search_dtype: fpjax.knn.search(index, q, 1, search_dtype=s))(
        queries)
    ok = np.asarray(ok)
    assert not ok[:32].all() and ok[32:].all(), search_dtype
    np.testing.assert_array_equal(np.asarray(i)[ok], ref_i[ok])


def test_manifold_search_k_per_call_one_bank(data, manifold):
  bank, queries = data
  for k in (1, 5):  # one Manifold, one embedded bank
    d, i = manifold.search(queries, k)
    ref_d, ref_i = brute_force(bank, queries, k)
    np.testing.assert_array_equal(np.asarray(i), ref_i)
    np.testing.assert_allclose(np.asarray(d), ref_d, rtol=1e-5, atol=1e-6)  # squared L2
  with pytest.raises(TypeError):  # the old search(x) -> (index, distance) fails loudly
    manifold.search(queries)
  with pytest.raises(TypeError):
    fpjax.Manifold.from_embeddings(bank, k=3)
  for bad in (0, -1, fpjax.knn.MAX_K + 1):
    with pytest.raises(UserInputError):
      manifold.search(queries, bad)
  with pytest.raises(TypeError):
    manifold.search(queries, 2.0)
  with pytest.raises(UserInputError):
    fpjax.knn.search(fpjax.knn.build_index(bank[:5], tile=8), queries, 6)


def test_eager_manifold_search_refuses_a_trace(manifold, data):
  with pytest.raises(UserInputError):
    jax.jit(lambda q: manifold.search(q, 1))(data[1])
  # ... and its index is traceable.
  _, i, _ = jax.jit(lambda q: fpjax.knn.search(manifold.index, q, 2))(data[1])
  np.testing.assert_array_equal(np.asarray(i), brute_force(*data, 2)[1])


def test_streamed_bank_has_no_traceable_index(data):
  m = fpjax.Manifold.from_embeddings(data[0], tile=128, device_bank_bytes=200 * 24 * 4)
  assert m.placement.streamed
  with pytest.raises(UserInputError):
    m.index  # pylint: disable=pointless-statement


@pytest.mark.parametrize("bad", ["uint8", "int32", "bool"])
def test_raw_images_where_embeddings_are_expected_are_refused(bad, manifold, index):
  raw = (np.arange(64 * 24).reshape(64, 24) % 255).astype(bad)
  with pytest.raises(UserInputError):
    manifold.search(raw, 1)
  with pytest.raises(UserInputError):
    manifold.project_embedded(raw)
  with pytest.raises(UserInputError):
    fpjax.knn.search(index, raw, 1)
  with pytest.raises(UserInputError):
    fpjax.knn.build_index(raw)


def test_wrong_shapes_nan_rows_and_batch_size_are_refused(data, manifold):
  bank, queries = data
  for bad in (queries[:, :20], queries[0], queries.reshape(64, 4, 6), queries[:0]):
    with pytest.raises(UserInputError):
      manifold.search(bad, 1)
  nan = queries.copy()
  nan[[3, 9]] = np.nan
  with pytest.raises(UserInputError, match=r"queries: 2 row\(s\).*rows 3, 9"):
    manifold.search(nan, 1)
  for batch_size in (0, -4, 2.5):
    with pytest.raises(UserInputError):
      manifold.search(queries, 1, batch_size=batch_size)
    with pytest.raises(UserInputError):
      manifold.neighbour_rows(np.zeros((2, 1), np.int32), batch_size=batch_size)
  with pytest.raises(UserInputError):
    fpjax.Manifold.from_images(np.zeros((8, 4, 4, 1), np.uint8), batch_size=0)
  with pytest.raises(UserInputError):
    fpjax.knn.gather(fpjax.knn.build_index(bank, tile=128), np.array([[0], [900]]))


def test_certify_is_one_boolean_and_old_precision_strings_map_to_it(data):
  bank, queries = data
  fast = fpjax.Manifold.from_embeddings(bank, tile=128, precision="fast")
  assert fast.certify is False
  assert fpjax.Manifold.from_embeddings(bank, tile=128, precision="exact").certify is True
  off = fpjax.Manifold.from_embeddings(bank, tile=128, certify=False)
  np.testing.assert_array_equal(np.asarray(off.search(queries, 2)[1]),
                                np.asarray(fast.search(queries, 2)[1]))
  for bad in (dict(precision="half"), dict(certify="exact")):
    with pytest.raises(UserInputError):
      fpjax.Manifold.from_embeddings(bank, **bad)


def test_project_with_an_estimator_in_one_call(data, manifold):
  bank, queries = data
  ref_d, ref_i = brute_force(bank, queries, 5)
  proj = manifold.project_embedded(queries, estimator="knn_mean", k=5)
  np.testing.assert_array_equal(np.asarray(proj.index), ref_i)
  np.testing.assert_allclose(np.asarray(proj.sq_distance), ref_d, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(proj.artifact), queries - bank[ref_i].mean(1),
                             atol=1e-5)
  kernel = estimators.Estimator("kernel", k=5, bandwidth=0.5)
  proj = manifold.project_embedded(queries, estimator=kernel.key)
  assert proj.index.shape == (64, 5)
  want = estimators.artifacts([kernel], queries, bank[ref_i], ref_d.astype(np.float32))
  np.testing.assert_allclose(np.asarray(proj.artifact), np.asarray(want[kernel.key]), atol=1e-5)
  nn = manifold.project_embedded(queries)
  np.testing.assert_array_equal(np.asarray(nn.artifact), queries - bank[ref_i[:, 0]])
  with pytest.raises(UserInputError):  # kernel-k20 needs 20 neighbours
    manifold.project_embedded(queries, estimator="kernel-k20-s1", k=3)


def test_meshes_are_named_by_argument_or_refused(data):
  # One device here; 2x2 and 1x4 meshes in tests/test_multidevice.py.
  bank, queries = data
  ref_i = brute_force(bank, queries, 2)[1]
  for types in (AxisType.Explicit, AxisType.Auto):
    mesh = jax.make_mesh((1, 1), ("q", "b"), axis_types=(types, types), devices=jax.devices()[:1])
    with pytest.raises(UserInputError):
      fpjax.Manifold.from_embeddings(bank, mesh=mesh)
    m = fpjax.Manifold.from_embeddings(bank, mesh=mesh, data_axis="q", bank_axis="b", tile=128)
    np.testing.assert_array_equal(np.asarray(m.search(queries, 2)[1]), ref_i)
    index = fpjax.knn.build_index(bank, mesh=mesh, data_axis="q", bank_axis="b", tile=128)
    with jax.set_mesh(mesh):
      _, i, _ = jax.jit(lambda q: fpjax.knn.search(index, q, 2))(queries)
    np.testing.assert_array_equal(np.asarray(i), ref_i)
