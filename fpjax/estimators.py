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

Distances: every argument named d2 holds SQUARED Euclidean distances (FAISS's convention).

Shapes: `Estimator.point` and `artifacts` (the entry points; `artifacts` is the one call the
manifold makes) take queries [n, *embedding_shape], rows [n, j, *embedding_shape] (j >= k,
nearest first) and d2 [n, j], flat or image-shaped alike, and return [n, *embedding_shape]; the
formulas below (`knn_mean_point`, `local_pca_point(s)`, `kernel_point`) take the flattened
[n, D], [n, k, D], [n, k]. All are float32, every dot product at lax.Precision.HIGHEST (GPUs
default to TF32), and traceable under jit, vmap and lax.scan (their checks are on shapes and
dtypes only). An `Estimator` is a name with its hyperparameters and a `key` ('knn_mean-k10')
that names its artifact array in the store; `grid(name)` lists the candidates an evaluation
chooses from on an inner validation split; `parse_estimators` and `resolve` read flag values
(eager, host).
"""
from __future__ import annotations

import dataclasses
import functools
import math
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
# Names that average k >= 2 of them (k required; with k = 1 each would be nn).
_AVERAGING_NAMES = ("knn_mean", "local_pca", "kernel")


@dataclasses.dataclass(frozen=True)
class Estimator:
  """A manifold estimator (or the control) with its hyperparameters; see the module doc.

  name: one of ESTIMATORS or CONTROL. k: the neighbours it averages, required (>= 2) for
  knn_mean, local_pca and kernel (with k = 1 each is 'nn'); nn, learned and input take no k
  (it reads 1). m: local_pca's principal directions (>= 1). bandwidth: kernel's h / d_k (> 0).
  A frozen, hashable value: usable as a static argument of jax.jit.
  Raises UserInputError on a missing or invalid hyperparameter.
  """
  name: str
  k: int | None = None
  m: int | None = None
  bandwidth: float | None = None

  def __post_init__(self):
    def bad(why):
      raise UserInputError(f"estimator {self.name!r} (k={self.k}, m={self.m}, "
                           f"bandwidth={self.bandwidth}): {why}")
    if self.name not in NAMES:
      raise UserInputError(f"unknown estimator {self.name!r}; expected one of {list(NAMES)}.")
    if self.name in _AVERAGING_NAMES:
      if self.k is None:
        bad(f"needs k, the number of neighbours (e.g. {grid(self.name)[0].key!r})")
      if not isinstance(self.k, (int, np.integer)) or isinstance(self.k, bool) or self.k < 1:
        bad("k must be a positive integer")
      if self.k == 1:
        bad("k=1 uses the nearest row only, which is the estimator 'nn': use Estimator('nn')")
    elif self.k not in (None, 1):
      bad("takes no k")
    object.__setattr__(self, "k", 1 if self.k is None else int(self.k))
    if self.name == "local_pca":
      if not isinstance(self.m, (int, np.integer)) or isinstance(self.m, bool) or self.m < 1:
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
    if name in _AVERAGING_NAMES and "k" not in params:
      raise UserInputError(f"estimator key {key!r}: {name} needs k (e.g. {grid(name)[0].key!r}).")
    est = cls(name, **params)
    if est.key != key:  # one spelling per estimator: 'knn_mean-k010' is refused
      raise UserInputError(f"estimator key {key!r}: write it {est.key!r}.")
    return est

  def point(self, queries, rows=None, d2=None, autoencoder=None) -> jax.Array:
    """The manifold point p(x) of each query (module doc), float32 [n, *embedding_shape].

    Traceable (jit, vmap, lax.scan): every check below is on shapes and dtypes.

    Args:
      queries: floating embeddings φ(x) [n, *embedding_shape] (flat [n, D] or image-shaped
        [n, H, W, C]; the formulas run on the flattened rows and the shape is restored).
      rows: floating [n, j, *embedding_shape], j >= k: each query's nearest bank rows, nearest
        first (nn, knn_mean, local_pca, kernel).
      d2: [n, j] the SQUARED Euclidean distances to those rows (kernel needs them; the others
        ignore them, but a given d2 must have that shape).
      autoencoder: the trained `ManifoldAutoencoder` of 'learned'.
    Raises:
      UserInputError: integer (not embedded) inputs, mismatched shapes, fewer than k rows,
        a missing autoencoder.
    """
    queries = _embedding(queries, "queries")
    shape = queries.shape
    if self.name == CONTROL:
      return jnp.zeros_like(queries)
    if self.name == "learned":
      if autoencoder is None:
        raise UserInputError("the 'learned' estimator needs its trained autoencoder "
                             "(autoencoder=)")
      if math.prod(autoencoder.input_shape) != math.prod(shape[1:]):
        raise UserInputError(f"the autoencoder takes {tuple(autoencoder.input_shape)}; got "
                             f"queries of shape {tuple(shape)}")
      # The autoencoder takes the space's own shape ([n, H, W, C] for image spaces).
      points = autoencoder.reconstruct(queries.reshape((-1,) + tuple(autoencoder.input_shape)))
      return points.reshape(shape)
    rows, d2 = _neighbour_inputs(self.key, self.k, queries, rows, d2)
    n = shape[0]
    flat_q = queries.reshape(n, -1)
    flat_rows = rows[:, :self.k].reshape(n, self.k, -1)
    d2 = None if d2 is None else d2[:, :self.k]
    if self.name == "nn":
      p = flat_rows[:, 0]
    elif self.name == "knn_mean":
      p = knn_mean_point(flat_q, flat_rows, d2)
    elif self.name == "local_pca":
      p = local_pca_point(flat_q, flat_rows, d2, m=self.m)
    else:
      if d2 is None:
        raise UserInputError(f"{self.key} needs d2, the squared distances [n, j] to the rows")
      p = kernel_point(flat_q, flat_rows, d2, jnp.float32(self.bandwidth))
    return p.reshape(shape)


def _embedding(a, what: str) -> jax.Array:
  """a as float32 [n, ...] (n >= 0, at least 2-D); integer inputs are refused: images must be
  embedded (fpjax.embed) before they are projected."""
  dtype = getattr(a, "dtype", None)
  if dtype is None:
    a = np.asarray(a)
    dtype = a.dtype
  if not jnp.issubdtype(dtype, jnp.floating):
    raise UserInputError(f"{what} must be floating embeddings; got dtype {dtype} (embed images "
                         f"first with fpjax.embed)")
  if len(a.shape) < 2:
    raise UserInputError(f"{what} must be [n, *embedding_shape]; got shape {tuple(a.shape)}")
  return jnp.asarray(a, jnp.float32)


def _neighbour_inputs(key: str, k: int, queries, rows, d2):
  """rows [n, j >= k, *embedding_shape] and d2 [n, j] (or None) checked against queries."""
  n, emb = queries.shape[0], tuple(queries.shape[1:])
  if rows is None:
    raise UserInputError(f"{key} needs rows [n, j >= {k}, *embedding_shape], the nearest bank "
                         f"rows of each query")
  rows = _embedding(rows, "rows")
  if rows.shape[0] != n or tuple(rows.shape[2:]) != emb:
    raise UserInputError(f"rows must be [n={n}, j, {', '.join(map(str, emb))}] to match queries "
                         f"{tuple(queries.shape)}; got {tuple(rows.shape)}")
  if rows.shape[1] < k:
    raise UserInputError(f"{key} needs the {k} nearest bank rows; got {rows.shape[1]}")
  if d2 is not None:
    d2 = _embedding(d2, "d2 (squared distances)")
    if tuple(d2.shape) != tuple(rows.shape[:2]):
      raise UserInputError(f"d2, the squared distances, must be [n, j] = {tuple(rows.shape[:2])} "
                           f"like rows; got {tuple(d2.shape)}")
  return rows, d2


def _check_flat(queries, rows, d2) -> None:
  """The formulas' shape rule: queries [n, D], rows [n, k, D], d2 [n, k] or None."""
  ok = (queries.ndim == 2 and rows.ndim == 3 and rows.shape[0] == queries.shape[0]
        and rows.shape[2] == queries.shape[1]
        and (d2 is None or tuple(d2.shape) == tuple(rows.shape[:2])))
  if not ok:
    raise UserInputError(
        f"the formulas take flat queries [n, D], rows [n, k, D] and d2 [n, k]; got "
        f"{tuple(queries.shape)}, {tuple(rows.shape)}, {None if d2 is None else tuple(d2.shape)}"
        f" (Estimator.point and artifacts take embedding-shaped arrays)")


# ------------------------------------------------------------------------------ the formulas


@jax.jit
def knn_mean_point(queries, rows, d2=None):
  """p = (1/k) Σ_j b_j: queries [n, D], rows [n, k, D], d2 [n, k] squared distances (unused)
  -> [n, D]. Flat arrays (`Estimator.point` flattens); jitted, traceable."""
  _check_flat(queries, rows, d2)
  del queries, d2
  return jnp.mean(rows, axis=1)


def local_pca_point(queries, rows, d2=None, *, m):
  """p = μ + V Vᵀ (q − μ) for queries [n, D], rows [n, k, D] (d2 [n, k], squared distances,
  unused) -> [n, D]; flat arrays, traceable. μ the mean of the k rows, V [D, m'] the top-m
  right singular vectors of the centred rows C = [b_j − μ] [k, D] whose singular value passes
  the rank test below.

  V comes from an orthonormal basis Q [D, k] of Cᵀ's columns (`_orthonormal_columns`),
  R = Qᵀ Cᵀ and the SVD of the small R = U S Wᵀ:
  C = W S Uᵀ Qᵀ, so V = Q U_m. (The k×k Gram matrix C Cᵀ would square the condition number:
  in float32 its small eigenvectors were off by ~1 %.) A direction is kept when
  σ_j > LOCAL_PCA_RTOL · σ_1 and σ_j > 8 k ε ‖b‖_max (above the rounding of the centring), so
  k equal rows give p = μ and m above the rank of C projects onto the affine span.
  """
  return local_pca_points(queries, rows, d2, ms=(m,))[0]


@functools.partial(jax.jit, static_argnames="ms")
def local_pca_points(queries, rows, d2=None, *, ms):
  """`local_pca_point` for each m of `ms` at the same k (queries [n, D], rows [n, k, D]; d2
  unused): μ, Q and the SVD of R do not depend on m, so they are computed once and each m only
  truncates U (the grid has two m at k = 20; the factorisation is most of the cost). Returns a
  tuple of [n, D], one per m. Jitted, traceable."""
  _check_flat(queries, rows, d2)
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
  """p = Σ_j w_j b_j, w = softmax(−(d_j² − d_1²) / (2h²)), h = bandwidth · d_k.

  queries [n, D] (unused), rows [n, k, D], d2 [n, k] the SQUARED distances to the rows,
  bandwidth a scalar -> [n, D]. Flat arrays (`Estimator.point` flattens); jitted, traceable.
  """
  _check_flat(queries, rows, d2)
  del queries
  d2 = jnp.maximum(d2, 0.0)
  h2 = jnp.square(bandwidth) * d2[:, -1:]
  shifted = d2 - jnp.min(d2, axis=1, keepdims=True)
  logits = jnp.where(h2 > 0, -shifted / (2.0 * jnp.where(h2 > 0, h2, 1.0)), 0.0)
  w = jax.nn.softmax(logits, axis=1)
  return jnp.einsum("nk,nkd->nd", w, rows, precision=HIGHEST)


# ------------------------------------------------------------------------------ sets of them


def artifacts(estimators, queries, rows=None, d2=None, autoencoder=None) -> dict:
  """{key: artifact φ(x) − p(x)} of each estimator: the one call the manifold makes.

  Traceable (jit, vmap, lax.scan): the checks are on shapes and dtypes only.

  Args:
    estimators: Estimator objects or keys ('nn', 'knn_mean-k10', ...), in the order wanted.
    queries: floating embeddings φ(x) [n, *embedding_shape].
    rows: [n, j, *embedding_shape], j >= max(e.neighbours): each query's nearest bank rows,
      nearest first (needed by nn, knn_mean, local_pca, kernel).
    d2: [n, j] the SQUARED Euclidean distances to those rows (needed by kernel).
    autoencoder: the trained `ManifoldAutoencoder` (needed by learned).
  Returns:
    a dict key -> float32 [n, *embedding_shape], in the order of `estimators`.
  Raises:
    UserInputError: an unknown key, integer (not embedded) inputs, mismatched shapes, too few
      rows, a missing d2 or autoencoder.
  """
  if isinstance(estimators, (str, Estimator)):
    estimators = [estimators]
  estimators = [e if isinstance(e, Estimator) else Estimator.from_key(e) for e in estimators]
  queries = _embedding(queries, "queries")
  shape = queries.shape
  flat = queries.reshape(shape[0], -1)
  points = {}
  # local_pca: one factorisation per k, shared by every m at that k (`local_pca_points`).
  pca = [e for e in estimators if e.name == "local_pca"]
  for k in dict.fromkeys(e.k for e in pca):
    at_k = [e for e in pca if e.k == k]
    rows, d2 = _neighbour_inputs(at_k[0].key, k, queries, rows, d2)
    got = local_pca_points(flat, rows[:, :k].reshape(shape[0], k, -1),
                           None if d2 is None else d2[:, :k], ms=tuple(e.m for e in at_k))
    points.update((e, p.reshape(shape)) for e, p in zip(at_k, got))
  out = {}
  for est in estimators:
    p = points[est] if est in points else est.point(queries, rows, d2, autoencoder)
    out[est.key] = queries - p
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
