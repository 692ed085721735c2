"""The reduced search's host SVD (fpjax.knn.reduced) against float64 numpy."""
import numpy as np

from fpjax.knn import reduced


def test_randomized_svd_matches_float64_svd(mnist):
  rows = mnist[0][:2000].reshape(2000, -1).astype(np.float32) / 255.0
  basis, sv, total = reduced.randomized_svd(rows, rank=16, n_iter=4, seed=0)
  x = rows.astype(np.float64) - rows.mean(0, dtype=np.float64)
  _, ref_sv, ref_vt = np.linalg.svd(x, full_matrices=False)
  np.testing.assert_allclose(sv, ref_sv[:16], rtol=1e-2)
  np.testing.assert_allclose(float(total), np.sum(x * x), rtol=1e-4)
  # The top 8 directions span the same subspace: all principal angles small.
  cosines = np.linalg.svd(np.asarray(basis, np.float64)[:, :8].T @ ref_vt[:8].T, compute_uv=False)
  assert cosines.min() > 0.99
  assert reduced.orth_err_bound(basis) < 1e-4


def test_covariance_svd_matches_float64_svd_and_is_chosen_for_large_ranks(mnist):
  rows = mnist[0][:2000].reshape(2000, -1).astype(np.float32) / 255.0
  basis, sv, total = reduced.covariance_svd(rows, rank=300)
  x = rows.astype(np.float64) - rows.mean(0, dtype=np.float64)
  _, ref_sv, ref_vt = np.linalg.svd(x, full_matrices=False)
  np.testing.assert_allclose(sv[:64], ref_sv[:64], rtol=1e-3)
  np.testing.assert_allclose(float(total), np.sum(x * x), rtol=1e-4)
  # The energy left outside the top r (what 'auto' chooses r by) matches to 1e-3 of the total.
  np.testing.assert_allclose(np.cumsum(sv.astype(np.float64) ** 2) / total,
                             np.cumsum(ref_sv[:300] ** 2) / np.sum(x * x), atol=1e-3)
  cosines = np.linalg.svd(np.asarray(basis, np.float64)[:, :8].T @ ref_vt[:8].T, compute_uv=False)
  assert cosines.min() > 0.999
  assert reduced.orth_err_bound(basis) < 1e-4
  # The dispatcher: the exact eigh for a rank near D/2 at D = 784 (the reduced search's), the
  # randomized SVD for a small rank (principal_basis's).
  exact = reduced.top_directions(rows, rank=300, n_iter=1, seed=0)[0]
  np.testing.assert_array_equal(exact, basis)
  small = reduced.top_directions(rows, rank=16, n_iter=4, seed=0)[0]
  np.testing.assert_array_equal(small, reduced.randomized_svd(rows, rank=16, n_iter=4,
                                                                     seed=0)[0])
