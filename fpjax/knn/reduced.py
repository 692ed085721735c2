"""Reduced search: the bank's principal basis (a host SVD) and the bank reduced on it.

Real images concentrate in a few principal directions of the bank. When the top r directions V
hold all but ``REDUCE_RESIDUAL`` of the bank's energy, the candidate search runs on
x̂ = [Vᵀx, ρ(x)] (r + 1 values instead of D), where ρ(x) bounds the norm of the residual
x − V Vᵀx (fpjax.knn.bounds): it ranks rows by a *lower bound* of their distance, the
candidates are re-ranked exactly in the full space, and the certificate holds unchanged with
the rounding of the reduction added to its error bound. Answers stay float32-exact; V only has
to be good, not exact.

Building it is work the full-space search does not need: an SVD of a 4,096-row bank sample on
the host (float32 BLAS/LAPACK, one core, nothing to compile: the eigh of its D × D Gram matrix
for D <= 1024, a randomized SVD above, ``top_directions``) while the bank is placed on the
devices; then one pass over the bank with a single bank-sized matmul, p = Vᵀ(x − μ), on the
devices (ρ and the other error terms come from norms, ``bounds.reduce_rows``), compiled in a
worker thread while the first call's kernel compiles (``reduction``).
"""
from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from fpjax.knn import bounds
from fpjax.knn.placement import BankPlacement, sample_rows

# Reduced search: only for D >= REDUCE_MIN_DIM, with r + 1 a multiple of 64 (matmul tiles),
# r + 1 <= min(REDUCE_MAX_DIM, D / 2), and the smallest r whose residual energy on a bank
# sample is <= REDUCE_RESIDUAL (2 %: on digits >= 99.5 % of queries are then certified).
REDUCE_MIN_DIM = 256
REDUCE_MAX_DIM = 512
REDUCE_RESIDUAL = 0.02
# Bank rows per step of the bank's reduction, by backend (other backends: 65,536).
_REDUCE_BATCH = {"cpu": 4096}


def orthonormalise(y, passes=2):
  """Orthonormal columns spanning y [n, w]: y ← y U Λ^(-1/2) Uᵀ with U Λ Uᵀ = yᵀy, `passes`
  times (Löwdin: the orthonormal columns nearest to y's, in the same order).

  Two passes give orthonormal columns to float32 accuracy, one suffices inside power
  iterations (which only need a well-scaled basis of the range). Eigenvalues below 1e-6 of
  the largest are raised to it, which keeps rank-deficient samples finite (their noise
  directions come out shorter than 1, never blown up).
  """
  for _ in range(passes):
    lam, u = np.linalg.eigh(y.T @ y)
    lam = np.maximum(lam, lam[-1] * 1e-6 + 1e-30)
    y = y @ ((u / np.sqrt(lam)) @ u.T)
  return y


def range_width(rank, n, dim):
  """Columns of the randomized SVD's range finder: the rank plus 10 of oversampling."""
  return min(rank + 10, n, dim)


def centred(rows):
  """The rows centred in float32 (mean taken in float64) and their total energy ‖x‖²_F."""
  x = np.asarray(rows, np.float32)
  x = x - x.mean(axis=0, dtype=np.float64).astype(np.float32)
  return x, float(np.sum(x * x, dtype=np.float64))


def randomized_svd(rows, *, rank, n_iter, seed):
  """Top `rank` right singular vectors V [D, rank] (orthonormal columns, in order), singular
  values and total energy of the centred rows: float32 numpy on the host.

  Halko, Martinsson & Tropp (2011): a Gaussian range finder with `n_iter` power iterations,
  each re-orthonormalised (which keeps float32 from losing the small directions), then the
  SVD of the small projected matrix B = Qᵀx through its w × w Gram matrix. V only steers
  speed (the error bounds use its measured ‖VᵀV − I‖, see `orth_err_bound`), never an answer.
  The rows are a sample of a few thousand: on the host (BLAS, LAPACK) there is nothing to
  compile, where the same program on the device compiled for 0.6–1.1 s (six w × w eigh calls)
  and ran no faster; host float32 products are full float32 on every backend.
  """
  x, total = centred(rows)
  n, dim = x.shape
  width = range_width(rank, n, dim)
  omega = np.random.default_rng(seed).standard_normal((dim, width), dtype=np.float32)
  y = orthonormalise(x @ omega, 1)
  for _ in range(n_iter):
    z = orthonormalise(x.T @ y, 1)
    y = orthonormalise(x @ z, 1)
  y = orthonormalise(y, 1)  # its second pass
  b = y.T @ x  # [w, D]
  lam, u = np.linalg.eigh(b @ b.T)
  lam, u = lam[::-1][:rank], u[:, ::-1][:, :rank]  # descending
  sv = np.sqrt(np.maximum(lam, 0.0))
  vt = (u / np.maximum(sv, sv[0] * 1e-6 + 1e-30)).T @ b
  # Löwdin keeps the columns in order, so any leading r of them are orthonormal too.
  return orthonormalise(np.ascontiguousarray(vt.T)), sv, total


def covariance_svd(rows, *, rank):
  """`randomized_svd`'s outputs computed exactly: the eigendecomposition of the centred rows'
  D × D Gram matrix xᵀx (float32 numpy on the host), whose eigenvalues are the squared singular
  values.

  One product and one eigh: cheaper than the randomized range finder when the rank asked for
  is a large part of D (the reduced search's r + 10 of 784 dims: 0.10 s against 0.29 s on one
  core of the 2-core CPU), and exact.
  """
  x, total = centred(rows)
  lam, u = np.linalg.eigh(x.T @ x)
  lam, u = lam[::-1][:rank], u[:, ::-1][:, :rank]  # descending
  sv = np.sqrt(np.maximum(lam, 0.0))
  return np.ascontiguousarray(u), sv, total


def top_directions(rows, *, rank, n_iter, seed):
  """The top `rank` right singular vectors of the centred rows, their singular values and total
  energy: `covariance_svd` when D is small enough for a D × D eigh (its cost grows as D³:
  0.05 s at 784, seconds at 3,072) and the randomized method would span more than a quarter of
  D (its products then cost more than the Gram matrix), else `randomized_svd`."""
  n, dim = np.shape(rows)
  if dim <= 1024 and 4 * range_width(rank, n, dim) > dim:
    return covariance_svd(rows, rank=rank)
  return randomized_svd(rows, rank=rank, n_iter=n_iter, seed=seed)


def orth_err_bound(basis) -> float:
  """An upper bound on ‖VᵀV − I‖ (Frobenius, which bounds the spectral norm) of the float32
  basis, measured in float64 on the host: a float32 Gram matrix would carry rounding errors
  up to γ_D·r, far above the ~1e-5 that two orthonormalisation passes leave."""
  b64 = np.asarray(basis, np.float64)
  return float(np.linalg.norm(b64.T @ b64 - np.eye(b64.shape[1]))) * 1.01 + 1e-12


def reduce_slice(bank, mu, offset, n_valid, basis, orth_err, *, batch, bank_axis="bank"):
  """Search rows (x̂, ‖x − μ‖²) of one device's bank slice and the slice's bound maxima.

  In batches of `batch` rows (lax.map): the centred rows are a batch × D temporary, never a
  bank-sized one. Padding rows get ‖x − μ‖² = inf and stay out of the maxima.
  """
  rows, dim = bank.shape

  def one(x):
    xc = x - mu
    norm2 = jnp.sum(xc * xc, axis=1)
    return bounds.reduce_rows(xc, norm2, basis, orth_err) + (norm2,)
  hat, pn, eta, norm2 = (a.reshape((rows,) + a.shape[2:]) for a in
                         lax.map(one, bank.reshape(rows // batch, batch, dim)))
  row = offset + lax.axis_index(bank_axis) * rows + jnp.arange(rows, dtype=jnp.int32)
  valid = row < offset + n_valid
  maxima = jnp.stack([jnp.max(jnp.where(valid, jnp.sum(hat * hat, axis=1), 0.0)),
                      jnp.max(jnp.where(valid, pn, 0.0)), jnp.max(jnp.where(valid, eta, 0.0))])
  return hat, jnp.where(valid, norm2, jnp.inf), lax.pmax(maxima, bank_axis)


@functools.lru_cache(maxsize=16)
def reduce_fn(mesh, batch, bank_axis="bank"):
  """reduce_slice over the mesh, jitted once per (mesh, batch, axis): builds share
  compilations."""
  return jax.jit(jax.shard_map(
      functools.partial(reduce_slice, batch=batch, bank_axis=bank_axis), mesh=mesh,
      in_specs=(P(bank_axis, None), P(), P(), P(), P(), P()),
      out_specs=(P(bank_axis, None), P(bank_axis), P()), check_vma=False))


def auto_cap(dim: int) -> int:
  """The largest r + 1 'auto' may choose: a multiple of 64, <= min(REDUCE_MAX_DIM, D / 2)."""
  return min(REDUCE_MAX_DIM, dim // 2) // 64 * 64


def reduction_sample(flat: np.ndarray, search_dim):
  """The bank sample the reduced search's basis comes from, or None for the full-space search
  (search_dim None, or 'auto' with a small D or bank). Raises on a bad search_dim."""
  n, dim = flat.shape
  if search_dim is None:
    return None
  if search_dim == "auto":
    cap = auto_cap(dim)
    if dim < REDUCE_MIN_DIM or cap < 64 or n < 2 * cap:
      return None
  elif not (isinstance(search_dim, (int, np.integer)) and 1 <= search_dim < dim):
    raise ValueError(f"search_dim must be 'auto', None or an int in [1, {dim - 1}]; got "
                     f"{search_dim!r}")
  # float32 and a 4,096-row sample: the basis only steers speed, never the answer.
  return flat[sample_rows(n, 4096, 0)]


def reduction_basis(sample: np.ndarray, search_dim):
  """(V [D, r], ‖VᵀV − I‖ bound) of the bank sample, or (None, None) when 'auto' finds the
  bank's energy not concentrated enough for REDUCE_RESIDUAL within the caps (host, one core)."""
  dim = sample.shape[1]
  with one_blas_thread():
    if search_dim == "auto":
      cap = auto_cap(dim)
      # One power iteration where the SVD is randomized (D > 1024): the choice of r reads the
      # energy spectrum, which a second iteration changed in the fourth digit on digits (and
      # any V keeps answers exact).
      basis, sv, total = top_directions(sample, rank=cap - 1, n_iter=1, seed=0)
      residual = 1.0 - np.cumsum(np.asarray(sv, np.float64) ** 2) / max(total, 1e-30)
      fits = [s - 1 for s in range(64, cap + 1, 64) if residual[s - 2] <= REDUCE_RESIDUAL]
      if not fits:
        return None, None
      basis = np.ascontiguousarray(basis[:, :fits[0]])
    else:
      basis, _, _ = top_directions(sample, rank=min(int(search_dim), *sample.shape), n_iter=4,
                                    seed=0)
    return basis, orth_err_bound(basis)


@contextlib.contextmanager
def one_blas_thread():
  """One BLAS thread for the host SVD and the float64 check of the basis when XLA computes on
  the CPU too: OpenBLAS's spinning threads fought XLA's and other processes' for the cores (on
  the loaded 2-core CPU a 0.3 s SVD took 7-14 s with two threads at load 7). With an
  accelerator the host's cores are free: BLAS keeps its threads. NumPy's and SciPy's BLAS are
  loaded first: threadpoolctl limits loaded libraries only."""
  if jax.default_backend() != "cpu":
    yield
    return
  import scipy.linalg.cython_lapack  # pylint: disable=g-import-not-at-top,unused-import
  import threadpoolctl  # pylint: disable=g-import-not-at-top
  with threadpoolctl.threadpool_limits(1, user_api="blas"):
    yield


def reduction(basis_job, mean, placement: BankPlacement, worker, meanwhile=None):
  """The reduced search for a bank (module doc): (V [D, r], ReducedConsts), or None.

  basis_job: a future of ``reduction_basis`` (None when 'auto' finds the bank's energy not
  concentrated enough). The bank is reduced on the devices, slice by slice, and its search
  rows stay with the bank (`placement.set_search_rows`). A resident bank's reduction compiles
  and is dispatched in the `worker` thread while this one calls meanwhile(search_rows,
  (V, ReducedConsts)) with shape-only search rows and constants (to compile the first
  call's kernel): two compilations on two cores, then the reduction overlaps the rest.
  """
  basis, orth_err = basis_job.result()
  if basis is None:
    return None
  mesh = placement.mesh
  replicated = NamedSharding(mesh, P())
  basis = jax.device_put(basis, replicated)
  orth = np.float32(orth_err)
  slice_rows = placement.slice_rows
  tiles = slice_rows // placement.tile
  # Rows per lax.map step (the largest multiple of the tile that divides the slice and fits):
  # on the CPU a few thousand rows, whose centred copy stays in cache (the reduction ran 1.4x
  # faster than in 51,200-row steps, in CPU seconds at 784 and 3,072 dims); large batches on
  # accelerators.
  limit = max(_REDUCE_BATCH.get(jax.default_backend(), 65536), placement.tile)
  batch = placement.tile * max(d for d in range(1, tiles + 1)
                               if tiles % d == 0 and placement.tile * d <= limit)
  program = reduce_fn(mesh, batch, placement.axes.bank)
  chunks, maxima = [], np.zeros(3, np.float32)
  if not placement.streamed:
    args = (placement.bank, mean, np.int32(0), np.int32(placement.size), basis, orth)
    job = worker.submit(lambda: program.lower(*args).compile()(*args))  # dispatched, not awaited
    if meanwhile is not None:
      f32 = lambda shape, spec: jax.ShapeDtypeStruct(shape, jnp.float32,
                                                     sharding=NamedSharding(mesh, spec))
      rows = placement.chunk_rows
      meanwhile((f32((rows, basis.shape[1] + 1), P(placement.axes.bank, None)),
                 f32((rows,), P(placement.axes.bank))),
                (basis, bounds.ReducedConsts(*[f32((), P())] * 4)))
    hat, norm2, maxima = job.result()
    chunks.append((hat, norm2))
  for start in range(0, placement.size if placement.streamed else 0, placement.chunk_rows):
    n_valid = min(placement.chunk_rows, placement.size - start)
    hat, norm2, m = program(placement.put(placement.host_bank, start), mean, np.int32(start),
                            np.int32(n_valid), basis, orth)
    # To the host at once: a streamed bank's rows never pile up on the devices.
    chunks.append((np.asarray(hat)[:n_valid], np.asarray(norm2)[:n_valid]))
    maxima = np.maximum(maxima, np.asarray(m))
  placement.set_search_rows(chunks)
  maxima = jnp.asarray(maxima, jnp.float32)
  # Replicated like the shapes the first call's kernel was compiled for: no recompilation.
  consts = bounds.ReducedConsts(*jax.device_put([maxima[0], maxima[1], maxima[2], orth],
                                                replicated))
  return basis, consts


