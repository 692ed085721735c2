"""Fingerprints as distributions: Gaussian likelihoods against scipy and dense float64 algebra,
near-Bayes accuracy on separated Gaussians, open-set rejection of a far model."""
import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.metrics import roc_auc_score

from fpjax.attribution.gaussian import GaussianFingerprints


def _gaussians(rng, dim, n, num_models, spread=3.0):
  means = rng.normal(size=(num_models, dim)) * spread
  covs = []
  for _ in range(num_models):
    a = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    covs.append(a @ a.T + 0.1 * np.eye(dim))
  x = np.concatenate([rng.multivariate_normal(means[c], covs[c], n) for c in range(num_models)])
  y = np.repeat(np.arange(num_models), n)
  return x, y, means, np.asarray(covs)


def _dense_logpdf(x, mean, cov):
  r = x - mean
  _, logdet = np.linalg.slogdet(cov)
  quad = np.sum(r * np.linalg.solve(cov, r.T).T, 1)
  return -0.5 * (quad + logdet + len(mean) * np.log(2 * np.pi))


def test_full_rank_matches_scipy(rng):
  x, y, _, _ = _gaussians(rng, dim=6, n=800, num_models=3)
  model = GaussianFingerprints.fit(x, y, rank=6, var_floor=1e-9)
  floored = GaussianFingerprints.fit(x, y, rank=6)
  queries = x[::37]
  got = model.log_likelihood(queries)
  for c in range(3):
    xc = x[y == c]
    sample_cov = np.cov(xc.T, ddof=0)
    np.testing.assert_allclose(model.covariance(c), sample_cov, rtol=1e-4, atol=1e-5)
    # The model's own parameters: the Woodbury path equals scipy's dense logpdf to rounding
    # (psi = 1e-9 * var makes Psi^-1 ~ 1e9 times the covariance's scale: rounding ~1e-7).
    ref = multivariate_normal.logpdf(queries, model.mean[c], model.covariance(c))
    np.testing.assert_allclose(got[:, c], ref, rtol=1e-6)
    ref = multivariate_normal.logpdf(queries, floored.mean[c], floored.covariance(c))
    np.testing.assert_allclose(floored.log_likelihood(queries)[:, c], ref, rtol=1e-10)
    # ... and the statistics streamed in float32 give the sample Gaussian's logpdf.
    ref = multivariate_normal.logpdf(queries, xc.mean(0), sample_cov)
    np.testing.assert_allclose(got[:, c], ref, rtol=1e-4, atol=1e-3)


def test_low_rank_plus_diagonal_matches_dense_float64(rng):
  x, y, _, _ = _gaussians(rng, dim=20, n=600, num_models=4)
  model = GaussianFingerprints.fit(x, y, rank=3)
  assert model.factor.shape == (4, 20, 3)
  got = model.log_likelihood(x[::23])
  for c in range(4):
    cov = model.covariance(c)
    np.testing.assert_allclose(got[:, c], _dense_logpdf(x[::23], model.mean[c], cov),
                               rtol=1e-9, atol=1e-8)
    # What Sigma_c keeps: the per-coordinate variances on its diagonal (where the floor does
    # not bind), and its low-rank part is the model's covariance inside the basis span.
    xc = x[y == c]
    np.testing.assert_allclose(np.diag(cov), xc.var(0), rtol=1e-4)
    u = np.linalg.qr(model.factor[c])[0]
    low_rank = model.factor[c] @ model.factor[c].T
    np.testing.assert_allclose(u.T @ low_rank @ u, u.T @ np.cov(xc.T, ddof=0) @ u, rtol=1e-3,
                               atol=1e-4)


def test_device_path_matches_host_and_diagonal_model(rng):
  x, y, _, _ = _gaussians(rng, dim=12, n=300, num_models=3)
  for rank in (0, 4):
    model = GaussianFingerprints.fit(x, y, rank=rank)
    host = model.log_likelihood(x[:50])
    device = np.asarray(model.log_likelihood_device(x[:50]), np.float64)
    np.testing.assert_allclose(device, host, rtol=1e-4, atol=1e-3)
  diag = GaussianFingerprints.fit(x, y, rank=0)
  for c in range(3):
    ref = multivariate_normal.logpdf(x[:50], diag.mean[c], np.diag(x[y == c].var(0)))
    np.testing.assert_allclose(diag.log_likelihood(x[:50])[:, c], ref, rtol=1e-4, atol=1e-3)


def test_labels_and_absent_models(rng):
  x, y, _, _ = _gaussians(rng, dim=5, n=200, num_models=3)
  model = GaussianFingerprints.fit(x, np.array([2, 7, 9])[y], rank=2)
  np.testing.assert_array_equal(model.labels, [2, 7, 9])
  assert set(np.unique(model.predict(x))) <= {2, 7, 9}
  with pytest.raises(ValueError):
    GaussianFingerprints.fit(x, y[:-1])


def test_accuracy_near_bayes_optimal(rng):
  x, y, means, covs = _gaussians(rng, dim=8, n=1500, num_models=4, spread=0.8)
  train = np.arange(len(x)) % 3 != 0
  model = GaussianFingerprints.fit(x[train], y[train], rank=8, var_floor=1e-6)
  test_x, test_y = x[~train], y[~train]
  accuracy = np.mean(model.predict(test_x) == test_y)
  bayes = np.mean(np.argmax(np.stack([multivariate_normal.logpdf(test_x, means[c], covs[c])
                                      for c in range(4)], 1), 1) == test_y)
  assert 0.5 < bayes < 0.99  # overlapping enough that the test can fail
  assert accuracy >= bayes - 0.02, (accuracy, bayes)


def test_open_set_rejects_a_far_model(rng):
  x, y, _, _ = _gaussians(rng, dim=10, n=500, num_models=3)
  model = GaussianFingerprints.fit(x, y, rank=4)
  known = np.concatenate([x[y == c][:100] for c in range(3)])
  unknown = rng.normal(size=(300, 10)) * 2.0 + 12.0
  score = np.concatenate([model.openset_score(known), model.openset_score(unknown)])
  is_unknown = np.r_[np.zeros(len(known)), np.ones(len(unknown))]
  assert roc_auc_score(is_unknown, -score) > 0.9
