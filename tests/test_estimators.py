"""Manifold estimators against float64 numpy references (random rows, real digits, degenerate
neighbourhoods), their keys and grids, and the precision rule for their jitted functions."""
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

from fpjax import estimators as E
from fpjax.errors import UserInputError

from _precision_check import default_precision_ops


# ------------------------------------------------------------------------------ references


def ref_knn_mean(q, rows, d2, k):
  return rows[:, :k].mean(1)


def ref_local_pca(q, rows, d2, k, m):
  out = []
  for qi, r in zip(q, rows[:, :k]):
    mu = r.mean(0)
    _, s, vt = np.linalg.svd(r - mu, full_matrices=False)
    keep = s[:m] > E.LOCAL_PCA_RTOL * s[0] if s[0] > 1e-9 * np.abs(r).max() else np.zeros(0, bool)
    v = vt[:m][keep].T
    out.append(mu + v @ (v.T @ (qi - mu)))
  return np.stack(out)


def ref_kernel(q, rows, d2, k, bandwidth):
  d2 = d2[:, :k]
  h2 = bandwidth ** 2 * d2[:, -1:]
  w = np.exp(-d2 / (2 * h2))  # float64, unshifted: independent of the shift the code uses
  w /= w.sum(1, keepdims=True)
  return np.einsum("nk,nkd->nd", w, rows[:, :k])


REFS = {"nn": lambda q, rows, d2, est: rows[:, 0],
        "knn_mean": lambda q, rows, d2, est: ref_knn_mean(q, rows, d2, est.k),
        "local_pca": lambda q, rows, d2, est: ref_local_pca(q, rows, d2, est.k, est.m),
        "kernel": lambda q, rows, d2, est: ref_kernel(q, rows, d2, est.k, est.bandwidth),
        "input": lambda q, rows, d2, est: np.zeros_like(q)}


def knn64(queries, bank, k):
  """Exact float64 k nearest rows (rows [n, k, D], squared distances [n, k])."""
  d2 = ((queries[:, None, :] - bank[None]) ** 2).sum(-1)
  idx = np.argsort(d2, axis=1, kind="stable")[:, :k]
  return bank[idx], np.take_along_axis(d2, idx, 1)


def digits_neighbours(k=20, n=40):
  x = load_digits().data.astype(np.float64) / 16.0
  bank, rest = x[:1500], x[1500:1500 + n]
  rng = np.random.default_rng(0)
  q = np.clip(rest + rng.normal(0, 0.1, rest.shape), 0, 1)
  rows, d2 = knn64(q, bank, k)
  return q, rows, d2


def random_neighbours(n=16, k=20, dim=300, seed=0):
  rng = np.random.default_rng(seed)
  # Rows near a 6-dimensional plane plus noise, and queries off it: a spread spectrum.
  basis = rng.normal(size=(6, dim))
  rows = (rng.normal(size=(n, k, 6)) * np.array([5, 4, 3, 2, 1, 0.5])) @ basis
  rows += rng.normal(0, 0.05, rows.shape) + rng.normal(size=(n, 1, dim))
  q = rows.mean(1) + rng.normal(size=(n, dim))
  d2 = ((q[:, None] - rows) ** 2).sum(-1)
  order = np.argsort(d2, axis=1)
  return q, np.take_along_axis(rows, order[..., None], 1), np.take_along_axis(d2, order, 1)


CANDIDATES = [E.Estimator("nn"), E.Estimator("input"), *E.grid("knn_mean"), *E.grid("local_pca"),
              *E.grid("kernel"), E.Estimator("kernel", k=7, bandwidth=0.25),
              E.Estimator("local_pca", k=20, m=20)]


def _check(est, q, rows, d2, rtol):
  got = np.asarray(est.point(q.astype(np.float32), rows.astype(np.float32),
                             d2.astype(np.float32)), np.float64)
  want = REFS[est.name](q, rows, d2, est)
  scale = np.abs(rows).max()
  np.testing.assert_allclose(got, want, atol=rtol * scale, rtol=0, err_msg=est.key)
  art = E.artifacts([est], q.astype(np.float32), rows.astype(np.float32), d2.astype(np.float32))
  np.testing.assert_allclose(np.asarray(art[est.key], np.float64), q - want,
                             atol=rtol * scale, err_msg=est.key)


@pytest.mark.parametrize("est", CANDIDATES, ids=lambda e: e.key)
def test_matches_float64_on_real_digits(est):
  q, rows, d2 = digits_neighbours()
  _check(est, q, rows, d2, 2e-5)


@pytest.mark.parametrize("est", CANDIDATES, ids=lambda e: e.key)
def test_matches_float64_on_random_rows(est):
  q, rows, d2 = random_neighbours()
  _check(est, q, rows, d2, 2e-5)


def test_local_pca_shares_its_factorisation_per_k_and_keeps_every_m_right():
  # The store's grid (k10-m2, k20-m4, k20-m2) in one call: the two m at k = 20 share one
  # factorisation; each must still match the float64 reference and its own single-m point.
  q, rows, d2 = digits_neighbours()
  q32, rows32, d232 = (a.astype(np.float32) for a in (q, rows, d2))
  grid = E.grid("local_pca") + [E.Estimator("local_pca", k=20, m=20)]
  art = E.artifacts(grid, q32, rows32, d232)
  scale = np.abs(rows).max()
  for est in grid:
    want = q - ref_local_pca(q, rows, d2, est.k, est.m)
    np.testing.assert_allclose(np.asarray(art[est.key], np.float64), want, atol=2e-5 * scale,
                               rtol=0, err_msg=est.key)
    alone = q32 - np.asarray(est.point(q32, rows32, d232))
    np.testing.assert_allclose(art[est.key], alone, atol=1e-6 * scale, rtol=0, err_msg=est.key)
  with pytest.raises(UserInputError):  # needs the 20 nearest rows
    E.artifacts(grid, q32, rows32[:, :10], d232[:, :10])


def test_artifacts_keep_the_embedding_shape_and_use_only_k_rows():
  q, rows, d2 = digits_neighbours(k=20, n=6)
  img_q, img_rows = q.reshape(6, 8, 8, 1), rows.reshape(6, 20, 8, 8, 1)
  ests = [E.Estimator("knn_mean", k=5), E.Estimator("nn"), E.Estimator("input")]
  art = E.artifacts(ests, img_q.astype(np.float32), img_rows.astype(np.float32),
                    d2.astype(np.float32))
  assert list(art) == ["knn_mean-k5", "nn", "input"]
  assert all(a.shape == (6, 8, 8, 1) for a in art.values())
  np.testing.assert_allclose(art["knn_mean-k5"], img_q - img_rows[:, :5].mean(1), atol=1e-6)
  np.testing.assert_array_equal(art["input"], img_q.astype(np.float32))
  with pytest.raises(UserInputError):  # needs the 5 nearest rows
    E.Estimator("knn_mean", k=5).point(q, rows[:, :3], d2[:, :3])


def test_degenerate_neighbourhoods():
  rng = np.random.default_rng(1)
  dim, k = 10, 8
  # k equal rows: every estimator's point is that row (local_pca: μ; kernel: h = 0 if q on it).
  # k = 10: their float32 mean is not exactly the row; the rounding is no direction.
  k = 10
  row = rng.normal(size=dim) * 100
  rows = np.broadcast_to(row, (3, k, dim)).copy()
  q = row + rng.normal(size=(3, dim))
  d2 = ((q[:, None] - rows) ** 2).sum(-1)
  for est in (E.Estimator("knn_mean", k=k), E.Estimator("local_pca", k=k, m=2),
              E.Estimator("kernel", k=k, bandwidth=0.5)):
    got = np.asarray(est.point(q, rows, d2))
    np.testing.assert_allclose(got, np.broadcast_to(row, got.shape), atol=1e-3, err_msg=est.key)
  # The query on k equal rows: every distance 0, h = 0: equal weights, no NaN.
  got = E.Estimator("kernel", k=k, bandwidth=1.0).point(rows[:, 0], rows, np.zeros((3, k)))
  np.testing.assert_allclose(got, rows[:, 0], rtol=1e-6)
  # m >= rank: rows on a 2-D affine plane -> the orthogonal projection onto that plane.
  origin = rng.normal(size=dim)
  plane = np.linalg.qr(rng.normal(size=(dim, 2)))[0]
  rows = origin + rng.normal(size=(3, k, 2)) @ plane.T
  q = origin + rng.normal(size=(3, dim)) * 2
  d2 = ((q[:, None] - rows) ** 2).sum(-1)
  want = origin + (q - origin) @ plane @ plane.T
  for m in (2, 4, k, k + 3):
    got = np.asarray(E.Estimator("local_pca", k=k, m=m).point(q, rows, d2))
    np.testing.assert_allclose(got, want, atol=2e-5, err_msg=f"m={m}")
    np.testing.assert_allclose(got, ref_local_pca(q, rows, d2, k, m), atol=2e-5)
  # m = 1 on that plane: the projection onto its principal line only.
  np.testing.assert_allclose(E.Estimator("local_pca", k=k, m=1).point(q, rows, d2),
                             ref_local_pca(q, rows, d2, k, 1), atol=2e-5)


def test_kernel_is_stable_for_narrow_bandwidths_and_far_queries():
  q, rows, d2 = random_neighbours(n=4, k=10, dim=50)
  q, rows = q * 1e3, rows * 1e3  # squared distances ~1e8: unshifted exp(−d²/2h²) underflows
  d2 = d2 * 1e6
  est = E.Estimator("kernel", k=10, bandwidth=0.05)
  with np.errstate(under="ignore"):
    want = ref_kernel(q, rows, d2, 10, 0.05)
  got = np.asarray(est.point(q, rows, d2))
  assert np.isfinite(got).all()
  np.testing.assert_allclose(got, want, atol=2e-5 * np.abs(rows).max())
  # A narrow bandwidth weighs the nearest row most.
  w_nearest = np.abs(got - rows[:, 0]).max() < np.abs(got - rows.mean(1)).max()
  assert w_nearest


@pytest.mark.skipif(importlib.util.find_spec("fpjax.models.autoencoder") is None,
                    reason="fpjax.models.autoencoder (helper D) not there yet")
def test_learned_is_input_minus_reconstruction():
  from fpjax.models import autoencoder
  x = load_digits().data.astype(np.float32).reshape(-1, 8, 8, 1) / 16.0
  ae = autoencoder.train_manifold_autoencoder(x[:500], steps=5, seed=0)
  q = x[500:510]
  art = E.artifacts([E.Estimator("learned")], q, autoencoder=ae)["learned"]
  np.testing.assert_allclose(np.asarray(art), q - np.asarray(ae.reconstruct(q)), atol=1e-6)
  flat = E.Estimator("learned").point(q.reshape(10, 64), autoencoder=ae)
  np.testing.assert_allclose(np.asarray(flat).reshape(q.shape), np.asarray(ae.reconstruct(q)),
                             atol=1e-6)
  with pytest.raises(UserInputError):  # no autoencoder
    E.artifacts([E.Estimator("learned")], q)


def test_jitted_estimators_ask_for_highest_precision():
  q = jnp.ones((4, 16), jnp.float32)
  rows = jnp.ones((4, 6, 16), jnp.float32)
  d2 = jnp.ones((4, 6), jnp.float32)
  assert default_precision_ops(E.knn_mean_point, q, rows, d2) == []
  assert default_precision_ops(lambda *a: E.local_pca_point(*a, m=3), q, rows, d2) == []
  assert default_precision_ops(E.kernel_point, q, rows, d2, jnp.float32(0.5)) == []
  # The checker sees these functions' matmuls (it is not vacuous here).
  from _precision_check import count_ops
  # local_pca: 4 in the Gram-Schmidt loop body, R = QᵀCᵀ, V = Q U, Vᵀ(q − μ), V(...).
  assert count_ops(lambda *a: E.local_pca_point(*a, m=3), q, rows, d2) == 8
  assert count_ops(E.kernel_point, q, rows, d2, jnp.float32(0.5)) == 1


# ------------------------------------------------------------------------------ one shape rule


@pytest.mark.parametrize("est", CANDIDATES, ids=lambda e: e.key)
def test_flat_and_image_shaped_inputs_give_the_same_points(est):
  # Digits are 8 x 8 x 1 images: the same neighbourhoods as [n, 64] rows and as images.
  q, rows, d2 = digits_neighbours(k=20, n=12)
  want = REFS[est.name](q, rows, d2, est)
  scale = np.abs(rows).max()
  img_q, img_rows = q.reshape(12, 8, 8, 1), rows.reshape(12, 20, 8, 8, 1)
  for qq, rr in ((q, rows), (img_q, img_rows)):
    got = est.point(qq.astype(np.float32), rr.astype(np.float32), d2.astype(np.float32))
    assert got.shape == qq.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got, np.float64).reshape(12, -1), want,
                               atol=2e-5 * scale, rtol=0, err_msg=est.key)
    art = E.artifacts([est.key], qq.astype(np.float32), rr.astype(np.float32),
                      d2.astype(np.float32))[est.key]
    assert art.shape == qq.shape
    np.testing.assert_allclose(np.asarray(art, np.float64).reshape(12, -1), q - want,
                               atol=2e-5 * scale, rtol=0, err_msg=est.key)


def test_estimators_trace_under_jit_vmap_and_scan():
  q, rows, d2 = (a.astype(np.float32) for a in digits_neighbours(k=20, n=8))
  ests = [e for e in CANDIDATES if e.name != "input"] + [E.Estimator("input")]
  eager = E.artifacts(ests, q, rows, d2)
  jitted = jax.jit(lambda *a: E.artifacts(ests, *a))(q, rows, d2)
  # vmap over 2 blocks of 4 queries, and lax.scan over them, as a user's step would.
  blocks = [a.reshape((2, 4) + a.shape[1:]) for a in (q, rows, d2)]
  vmapped = jax.vmap(lambda *a: E.artifacts(ests, *a))(*blocks)
  _, scanned = jax.lax.scan(lambda c, a: (c, E.artifacts(ests, *a)), 0, blocks)
  for e in ests:
    scale = np.abs(rows).max()
    for other in (jitted[e.key], np.asarray(vmapped[e.key]).reshape(q.shape),
                  np.asarray(scanned[e.key]).reshape(q.shape)):
      np.testing.assert_allclose(other, eager[e.key], atol=1e-6 * scale, err_msg=e.key)


@pytest.mark.parametrize("call", [
    lambda q, r, d: E.Estimator("nn").point(q.astype(np.uint8), r, d),      # raw images
    lambda q, r, d: E.Estimator("kernel", k=5, bandwidth=1.0).point(q, r.astype(np.int32), d),
    lambda q, r, d: E.Estimator("knn_mean", k=5).point(q[:, 0], r, d),       # queries 1-D
    lambda q, r, d: E.Estimator("knn_mean", k=5).point(q, r[:3], d[:3]),     # n differs
    lambda q, r, d: E.Estimator("local_pca", k=5, m=2).point(q, r[..., :60], d),  # D differs
    lambda q, r, d: E.Estimator("kernel", k=5, bandwidth=1.0).point(q, r, d[:, :4]),  # d2 [n, 4]
    lambda q, r, d: E.Estimator("kernel", k=5, bandwidth=1.0).point(q, r),   # no d2
    lambda q, r, d: E.Estimator("nn").point(q),                               # no rows
    lambda q, r, d: E.knn_mean_point(q.reshape(-1, 8, 8), r, d),             # formulas: flat
    lambda q, r, d: E.kernel_point(q, r.reshape(r.shape[:2] + (8, 8)), d, 1.0),
    lambda q, r, d: E.artifacts(["knn_mean"], q, r, d),                       # a name, no k
])
def test_bad_inputs_are_refused(call):
  q, rows, d2 = (a.astype(np.float32) for a in digits_neighbours(k=5, n=6))
  with pytest.raises(UserInputError):
    call(q, rows, d2)


def test_k_is_required_and_k1_is_nn():
  for name in ("knn_mean", "local_pca", "kernel"):
    extra = dict(m=2) if name == "local_pca" else dict(bandwidth=1.0) if name == "kernel" else {}
    for k in (None, 1, 0, -3, 2.5, True):
      with pytest.raises(UserInputError):
        E.Estimator(name, **({} if k is None else dict(k=k)), **extra)
  assert E.Estimator("knn_mean", k=2).k == 2
  assert E.Estimator("nn").k == E.Estimator("nn", k=1).k == 1
  with pytest.raises(UserInputError):
    E.Estimator("nn", k=3)
  # The one pinned line of a bad hyperparameter.
  with pytest.raises(UserInputError) as e:
    E.Estimator("knn_mean", k=1)
  assert str(e.value) == ("estimator 'knn_mean' (k=1, m=None, bandwidth=None): k=1 uses the "
                          "nearest row only, which is the estimator 'nn': use Estimator('nn')")


# ------------------------------------------------------------------------------ keys and grids


def test_keys_round_trip_and_neighbours():
  keys = ["nn", "knn_mean-k10", "local_pca-k20-m4", "kernel-k20-s1", "kernel-k20-s0.5",
          "learned", "input"]
  for key in keys:
    assert E.Estimator.from_key(key).key == key
  assert [E.Estimator.from_key(k).neighbours for k in keys] == [1, 10, 20, 20, 20, 0, 0]
  assert E.Estimator("kernel", k=20, bandwidth=1.0).key == "kernel-k20-s1"
  for bad in ["knn_mean-k010", "knn_mean", "pca-k3", "knn_mean-k5-k6", "local_pca-k5", "nn-k3",
              "kernel-k5-s0", "knn_mean-kx", "knn_mean-k1", "kernel-k1-s1"]:
    with pytest.raises(UserInputError):
      E.Estimator.from_key(bad)
  # The one pinned line of a malformed key.
  with pytest.raises(UserInputError) as e:
    E.Estimator.from_key("knn_mean-k010")
  assert str(e.value) == "estimator key 'knn_mean-k010': write it 'knn_mean-k10'."


def test_grid_is_small_with_the_default_first():
  for name in E.NAMES:
    g = E.grid(name)
    assert 1 <= len(g) <= 3 and all(e.name == name for e in g)
    assert len({e.key for e in g}) == len(g)
  assert [len(E.grid(n)) for n in ("nn", "learned", "input")] == [1, 1, 1]
  assert E.grid("knn_mean")[0].key == "knn_mean-k10"
  with pytest.raises(UserInputError):
    E.grid("nope")


def test_parse_and_resolve():
  assert E.parse_estimators(["all"]) == list(E.ESTIMATORS)
  assert E.parse_estimators("nn,input,nn") == ["nn", "input"]
  with pytest.raises(UserInputError):
    E.parse_estimators(["nn", "pca"])
  assert [e.key for e in E.resolve("nn,knn_mean-k5")] == ["nn", "knn_mean-k5"]
  assert [e.key for e in E.resolve(["kernel"])] == [e.key for e in E.grid("kernel")]
  everything = [e.key for e in E.resolve("all,input")]
  assert everything == [e.key for n in E.NAMES for e in E.grid(n)]
  assert E.resolve([E.Estimator("nn"), "nn"]) == [E.Estimator("nn")]
  with pytest.raises(UserInputError):
    E.resolve("nn,bogus")
