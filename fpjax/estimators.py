"""Manifold estimators: where on the real manifold a generated sample's artifact starts.

The artifact of a sample x is φ(x) − p(x), where p(x) is an estimate of the point of the real
manifold that φ(x) came from. The paper (ManiFPT) takes the nearest real image; the others use
the k nearest bank rows b_1 .. b_k (nearest first, squared distances d_1² <= .. <= d_k²) that the
one sharded k-NN search returns, or a model of the bank:

  nn         p = b_1: the nearest bank row (the paper's estimator).
  knn_mean   p = (1/k) Σ_j b_j: the mean of the k nearest.
  local_pca  p = μ + V Vᵀ (φ(x) − μ), μ = (1/k) Σ_j b_j, V [D, m] the top-m right singular
             vectors of the centred rows C = [b_j − μ]: the orthogonal projection of φ(x) onto
             the m-dimensional principal plane of its neighbours (a local tangent plane). With
             m >= the rank of C it is the projection onto their affine span. V = Q U_m from
             the thin QR Cᵀ = Q R and the k×k SVD R = U S Wᵀ; directions with a singular
             value under LOCAL_PCA_RTOL = 1e-4 of the largest (or at the rounding level of
             the centring) count as absent, so k equal rows give p = μ.
  kernel     p = Σ_j w_j b_j, w_j = exp(−d_j² / (2h²)) / Σ_i exp(−d_i² / (2h²)), with the
             bandwidth h = bandwidth · d_k (the distance to the k-th neighbour): a softmin-
             weighted mean. Evaluated as exp(−(d_j² − d_1²)/(2h²)) (no underflow); h = 0 (k
             neighbours at distance 0) gives equal weights.
  learned    p = D(E(φ(x))): the reconstruction by an autoencoder trained on the bank's
             embeddings in that space (fpjax.models.autoencoder); the decoder's range is the
             estimated manifold.
  input      (the control, no manifold) p = 0: the artifact is φ(x) itself.

The k-neighbour estimators are jitted functions of (queries [n, D], neighbour rows [n, k, D],
squared distances [n, k]) in float32, every dot product at lax.Precision.HIGHEST (GPUs default
to TF32); `Estimator.point` and `artifacts` are the entry points. An `Estimator` is a name with
its hyperparameters and a `key` ('knn_mean-k10') that names its artifact array in the store;
`grid(name)` lists the candidates an evaluation chooses from on an inner validation split.
"""
from __future__ import annotations

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fpjax.errors import UserInputError

ESTIMATORS = ("nn", "knn_mean", "local_pca", "kernel", "learned")  # manifold estimators
CONTROL = "input"  # the control: artifact = φ(x) itself (no projection)
NAMES = ESTIMATORS + (CONTROL,)
# local_pca: singular values of the centred neighbours below this fraction of the largest
# count as absent (a rank-deficient neighbourhood; float32 cannot place such directions).
LOCAL_PCA_RTOL = 1e-4
_F32_EPS = 2.0 ** -24
HIGHEST = lax.Precision.HIGHEST
# Names whose estimate uses the k nearest bank rows (nn: the nearest one).
_NEIGHBOUR_NAMES = ("nn", "knn_mean", "local_pca", "kernel")


@dataclasses.dataclass(frozen=True)
class Estimator:
  """A manifold estimator (or the control) with its hyperparameters; see the module doc.

  name: one of ESTIMATORS or CONTROL; k: neighbours used (nn: 1; learned, input: unused, 1);
  m: local_pca's principal directions; bandwidth: kernel's h / d_k.
  """
  name: str
  k: int = 1
  m: int | None = None
  bandwidth: float | None = None

  def __post_init__(self):
    def bad(why):
      raise UserInputError(f"estimator {self.name!r} (k={self.k}, m={self.m}, "
                           f"bandwidth={self.bandwidth}): {why}")
    if self.name not in NAMES:
      raise UserInputError(f"unknown estimator {self.name!r}; expected one of {list(NAMES)}.")
    if not isinstance(self.k, (int, np.integer)) or isinstance(self.k, bool) or self.k < 1:
      bad("k must be a positive integer")
    object.__setattr__(self, "k", int(self.k))
    if self.name in ("nn", "learned", CONTROL) and self.k != 1:
      bad("takes no k")
    if self.name == "local_pca":
      if not isinstance(self.m, (int, np.integer)) or self.m < 1:
        bad("local_pca needs m >= 1 principal directions")
      object.__setattr__(self, "m", int(self.m))
    elif self.m is not None:
      bad("m is for local_pca")
    if self.name == "kernel":
      if self.bandwidth is None or not np.isfinite(self.bandwidth) or self.bandwidth <= 0:
        bad("kernel needs a bandwidth > 0")
      object.__setattr__(self, "bandwidth", float(self.bandwidth))
    elif self.bandwidth is not None:
      bad("bandwidth is for kernel")

  @property
  def key(self) -> str:
    """Unique, folder- and JSON-safe: 'nn', 'knn_mean-k10', 'local_pca-k20-m4', 'kernel-k20-s1',
    'learned', 'input'."""
    if self.name == "knn_mean":
      return f"knn_mean-k{self.k}"
    if self.name == "local_pca":
      return f"local_pca-k{self.k}-m{self.m}"
    if self.name == "kernel":
      return f"kernel-k{self.k}-s{np.format_float_positional(self.bandwidth, trim='-')}"
    return self.name

  @property
  def neighbours(self) -> int:
    """Bank rows the k-NN search must return for it (learned, input: 0)."""
    return self.k if self.name in _NEIGHBOUR_NAMES else 0

  @classmethod
  def from_key(cls, key: str) -> "Estimator":
    """The Estimator of a key (inverse of `key`); a UserInputError names a malformed one."""
    name, *parts = str(key).split("-")
    params = {}
    spelled = {"k": ("k", int), "m": ("m", int), "s": ("bandwidth", float)}
    for part in parts:
      match = re.fullmatch(r"([kms])([0-9.]+)", part)
      if not match or spelled[match.group(1)][0] in params:
        raise UserInputError(f"estimator key {key!r}: cannot read {part!r} (expected e.g. "
                             f"'knn_mean-k10', 'local_pca-k20-m4', 'kernel-k20-s0.5').")
      field, kind = spelled[match.group(1)]
      try:
        params[field] = kind(match.group(2))
      except ValueError:
        raise UserInputError(f"estimator key {key!r}: {part!r} is not a number.") from None
    if name not in NAMES:
      where = "" if name == key else f" in {key!r}"
      raise UserInputError(f"unknown estimator {name!r}{where}; expected one of "
                           f"{list(NAMES)} (or a key such as 'knn_mean-k10').")
    if name in ("knn_mean", "local_pca", "kernel") and "k" not in params:
      raise UserInputError(f"estimator key {key!r}: {name} needs k (e.g. {grid(name)[0].key!r}).")
    est = cls(name, **params)
    if est.key != key:  # one spelling per estimator: 'knn_mean-k010' is refused
      raise UserInputError(f"estimator key {key!r}: write it {est.key!r}.")
    return est

  def point(self, queries, rows=None, d2=None, autoencoder=None) -> jax.Array:
    """The manifold point p [n, D] of queries [n, D] (module doc).

    rows [n, j, D] and d2 [n, j] (j >= k): the nearest bank rows and their squared distances,
    nearest first, for the k-neighbour estimators; autoencoder: the trained
    `ManifoldAutoencoder` for 'learned'.
    """
    queries = jnp.asarray(queries, jnp.float32)
    if self.name == CONTROL:
      return jnp.zeros_like(queries)
    if self.name == "learned":
      if autoencoder is None:
        raise ValueError("the 'learned' estimator needs its trained autoencoder")
      # The autoencoder takes the space's own shape ([n, H, W, C] for image spaces).
      points = autoencoder.reconstruct(queries.reshape((-1,) + autoencoder.input_shape))
      return points.reshape(queries.shape)
    if rows is None or rows.shape[1] < self.k:
      raise ValueError(f"{self.key} needs the {self.k} nearest bank rows; got "
                       f"{None if rows is None else rows.shape[1]}")
    rows = jnp.asarray(rows, jnp.float32)[:, :self.k]
    d2 = jnp.asarray(d2, jnp.float32)[:, :self.k]
    if self.name == "nn":
      return rows[:, 0]
    if self.name == "knn_mean":
      return knn_mean_point(queries, rows, d2)
    if self.name == "local_pca":
      return local_pca_point(queries, rows, d2, m=self.m)
    return kernel_point(queries, rows, d2, jnp.float32(self.bandwidth))


# ------------------------------------------------------------------------------ the formulas


@jax.jit
def knn_mean_point(queries, rows, d2):
  """p = (1/k) Σ_j b_j. rows [n, k, D] -> [n, D]."""
  del queries, d2
  return jnp.mean(rows, axis=1)


def local_pca_point(queries, rows, d2, *, m):
  """p = μ + V Vᵀ (q − μ): μ the mean of the k rows, V [D, m'] the top-m right singular vectors
  of the centred rows C = [b_j − μ] [k, D] whose singular value passes the rank test below.

  V comes from an orthonormal basis Q [D, k] of Cᵀ's columns (`_orthonormal_columns`),
  R = Qᵀ Cᵀ and the SVD of the small R = U S Wᵀ:
  C = W S Uᵀ Qᵀ, so V = Q U_m. (The k×k Gram matrix C Cᵀ would square the condition number:
  in float32 its small eigenvectors were off by ~1 %.) A direction is kept when
  σ_j > LOCAL_PCA_RTOL · σ_1 and σ_j > 8 k ε ‖b‖_max (above the rounding of the centring), so
  k equal rows give p = μ and m above the rank of C projects onto the affine span.
  """
  return local_pca_points(queries, rows, d2, ms=(m,))[0]


@functools.partial(jax.jit, static_argnames="ms")
def local_pca_points(queries, rows, d2, *, ms):
  """`local_pca_point` for each m of `ms` at the same k (rows [n, k, D]): μ, Q and the SVD of R
  do not depend on m, so they are computed once and each m only truncates U (the grid has two
  m at k = 20; the factorisation is most of the cost). Returns a tuple of [n, D], one per m."""
  del d2
  k, dim = rows.shape[1], rows.shape[2]
  mu = jnp.mean(rows, axis=1)
  c = rows - mu[:, None, :]
  qm = _orthonormal_columns(jnp.swapaxes(c, 1, 2))  # [n, D, k'], k' = min(k, D)
  r = jnp.einsum("ndj,nkd->njk", qm, c, precision=HIGHEST)  # [n, k', k]: Cᵀ = Q R
  u_all, s_all, _ = jnp.linalg.svd(r, full_matrices=False)  # descending s
  floor = 8.0 * k * _F32_EPS * jnp.sqrt(jnp.max(jnp.sum(rows * rows, axis=2), axis=1))
  out = []
  for m in ms:
    top = min(m, k, dim)
    u, s = u_all[:, :, :top], s_all[:, :top]
    keep = (s > LOCAL_PCA_RTOL * s[:, :1]) & (s > floor[:, None])
    v = jnp.einsum("ndk,nkm->ndm", qm, u * keep[:, None, :], precision=HIGHEST)
    coef = jnp.einsum("ndm,nd->nm", v, queries - mu, precision=HIGHEST)     # Vᵀ (q − μ)
    out.append(mu + jnp.einsum("ndm,nm->nd", v, coef, precision=HIGHEST))
  return tuple(out)


def _orthonormal_columns(a):
  """Q [n, D, k'] with orthonormal columns spanning those of a [n, D, k] (k' = min(k, D)).

  Classical Gram-Schmidt with one reorthogonalisation ("twice is enough": orthogonal to
  working precision, like Householder QR) in batched matmuls. XLA:CPU's batched QR runs one
  LAPACK call per matrix: 15 s for 1,000 matrices of 784 x 20 on 2 cores, against ~0.1 s here.
  A column left with a norm at the rounding level of the inputs is linearly dependent on the
  earlier ones and gets a zero column (R's row for it is then zero, and the SVD's rank test
  below drops it).
  """
  n, dim, k = a.shape
  k = min(k, dim)
  tiny = 8.0 * dim * _F32_EPS * jnp.max(jnp.linalg.norm(a, axis=1), axis=1)  # [n]
  q = jnp.zeros((n, dim, k), a.dtype)

  def column(j, q):
    # Columns j.. of q are still zero, so projecting on all of q projects on columns < j.
    v = lax.dynamic_index_in_dim(a, j, axis=2, keepdims=False)
    for _ in range(2):
      v = v - jnp.einsum("ndi,ni->nd", q, jnp.einsum("ndi,nd->ni", q, v, precision=HIGHEST),
                         precision=HIGHEST)
    norm = jnp.linalg.norm(v, axis=1)
    keep = norm > tiny
    v = jnp.where(keep[:, None], v / jnp.where(keep, norm, 1.0)[:, None], 0.0)
    return lax.dynamic_update_index_in_dim(q, v, j, axis=2)

  q = lax.fori_loop(0, k, column, q)
  return q


@jax.jit
def kernel_point(queries, rows, d2, bandwidth):
  """p = Σ_j w_j b_j, w = softmax(−(d_j² − d_1²) / (2h²)), h = bandwidth · d_k."""
  del queries
  d2 = jnp.maximum(d2, 0.0)
  h2 = jnp.square(bandwidth) * d2[:, -1:]
  shifted = d2 - jnp.min(d2, axis=1, keepdims=True)
  logits = jnp.where(h2 > 0, -shifted / (2.0 * jnp.where(h2 > 0, h2, 1.0)), 0.0)
  w = jax.nn.softmax(logits, axis=1)
  return jnp.einsum("nk,nkd->nd", w, rows, precision=HIGHEST)


# ------------------------------------------------------------------------------ sets of them


def artifacts(estimators, queries, rows=None, d2=None, autoencoder=None) -> dict:
  """{key: φ(x) − p(x)} of each estimator for embedded queries [n, *shape] (same shape out).

  rows [n, j, *shape] / d2 [n, j]: the j >= max(neighbours) nearest bank rows of each query.
  """
  queries = jnp.asarray(queries, jnp.float32)
  shape = queries.shape
  flat = queries.reshape(shape[0], -1)
  flat_rows = None if rows is None else jnp.asarray(rows, jnp.float32).reshape(
      rows.shape[0], rows.shape[1], -1)
  points = {}
  # local_pca: one factorisation per k, shared by every m at that k (`local_pca_points`).
  pca = [e for e in estimators if e.name == "local_pca"]
  for k in dict.fromkeys(e.k for e in pca):
    at_k = [e for e in pca if e.k == k]
    if flat_rows is None or flat_rows.shape[1] < k:
      raise ValueError(f"{at_k[0].key} needs the {k} nearest bank rows; got "
                       f"{None if flat_rows is None else flat_rows.shape[1]}")
    got = local_pca_points(flat, flat_rows[:, :k], jnp.asarray(d2, jnp.float32)[:, :k],
                           ms=tuple(e.m for e in at_k))
    points.update(zip(at_k, got))
  out = {}
  for est in estimators:
    p = points[est] if est in points else est.point(flat, flat_rows, d2, autoencoder)
    out[est.key] = (flat - p).reshape(shape)
  return out


def grid(name: str) -> list[Estimator]:
  """The candidate hyperparameters an evaluation chooses from on an inner validation split of
  its training part (never on the reported split), chosen for banks of ~5,000 images; the first
  is the default.

    nn, learned, input: one candidate.
    knn_mean:  k in (10, 5, 20).
    local_pca: (k, m) in ((10, 2), (20, 4), (20, 2)).
    kernel:    k = 20, bandwidth in (1.0, 0.5).
  """
  if name == "knn_mean":
    return [Estimator(name, k=k) for k in (10, 5, 20)]
  if name == "local_pca":
    return [Estimator(name, k=k, m=m) for k, m in ((10, 2), (20, 4), (20, 2))]
  if name == "kernel":
    return [Estimator(name, k=20, bandwidth=s) for s in (1.0, 0.5)]
  if name in NAMES:
    return [Estimator(name)]
  raise UserInputError(f"unknown estimator {name!r}; expected one of {list(NAMES)}.")


def _split(values) -> list[str]:
  if isinstance(values, str):
    values = values.split(",")
  out = []
  for v in values:
    out.extend(p.strip() for p in str(v).split(",") if p.strip())
  return out


def parse_estimators(values) -> list[str]:
  """Estimator names from a flag value (a comma string or a list): 'all' -> list(ESTIMATORS);
  also accepts the control 'input'. Order kept, repeats dropped; a UserInputError names an
  unknown one."""
  names = []
  for v in _split(values):
    for name in (ESTIMATORS if v == "all" else (v,)):
      if name not in NAMES:
        raise UserInputError(f"--estimators: unknown estimator {name!r}; expected 'all' or "
                             f"names from {list(NAMES)}.")
      if name not in names:
        names.append(name)
  if not names:
    raise UserInputError("--estimators: empty; expected 'all' or names from "
                         f"{list(NAMES)}.")
  return names


def resolve(values) -> list[Estimator]:
  """Estimators from keys, names or Estimator objects (a comma string or a list).

  A key ('knn_mean-k10') is that estimator; a bare name stands for its whole `grid` (what an
  evaluation chooses from; 'nn' is just nn); 'all' = the grids of every ESTIMATORS name (the
  control 'input' only when named). Order kept, repeats dropped.
  """
  if isinstance(values, (str, Estimator)):
    values = [values]
  out = []
  for v in values:
    if isinstance(v, Estimator):
      found = [v]
    else:
      found = []
      for part in _split([v]):
        if part == "all" or part in NAMES:
          found += [e for name in parse_estimators([part]) for e in grid(name)]
        else:
          found.append(Estimator.from_key(part))
    for e in found:
      if e not in out:
        out.append(e)
  if not out:
    raise UserInputError("no estimator given; expected keys, names or 'all'.")
  return out
