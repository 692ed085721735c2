"""Fingerprint statistics: streaming, mergeable summaries of each model's artifacts.

A model's fingerprint is the distribution of its artifacts. `FingerprintStats` summarises it
per generative-model label with moments that merge exactly (`merge_moments`, Chan et al.'s
parallel combination, the one implementation of it in fpjax), so partial states from batches,
devices or hosts combine into the statistics of the whole.

Precision: the streaming sums are float32 on the device (float64 with `dtype=jnp.float64` when
JAX runs with x64 enabled), every dot product in them at `lax.Precision.HIGHEST`; `finalize` and
the Fisher discriminant ratio are float64 numpy on the host.

Traceable (jit, vmap, lax.scan): `merge_moments` on JAX arrays, `power_spectrum`,
`azimuthal_average` on JAX arrays, `FingerprintStats.init`, `.update` and `.merge`. Their value
checks (label range, non-finite rows, compatible histogram edges) run at the eager boundary
only, i.e. when they are called on concrete arrays; inside a trace those are preconditions.
Eager only (host numpy): `finalize`, `fdr_from_moments`, `fisher_discriminant_ratio`.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fpjax.errors import UserInputError

# Statistics are promised to match float64 within float32 rounding on every backend, but
# GPUs run float32 matmuls in TF32 and TPUs in bfloat16 passes by default (a covariance in
# a basis came out 6 % off on an H200): every dot product here asks for full float32.
HIGHEST = lax.Precision.HIGHEST
# Label of a row the statistics leave out (padding, a file that could not be decoded).
PADDING_LABEL = -1
# The default distance histogram: this many bins on [0, top), top fitted at the first update.
DEFAULT_DISTANCE_BINS = 64


def merge_moments(count_a, mean_a, m2_a, count_b, mean_b, m2_b, *, outer: bool = False):
  """The moments of the union of two disjoint parts (Chan, Golub & LeVeque's combination).

  Args:
    count_a, count_b: rows in each part, shape [...] (a scalar for one group, [L] for L).
    mean_a, mean_b: their means [..., D].
    m2_a, m2_b: their centred second moments, Σ (x − μ)² per coordinate [..., D], or with
      outer=True the co-moment matrices Σ (x − μ)(x − μ)ᵀ [..., D, D].
  Returns:
    (count, mean, m2) of the union, same shapes; a part with count 0 leaves the other as is.

  Exact up to rounding and stable (no sum-of-squares cancellation). numpy inputs give numpy
  results (eager, e.g. float64 on the host); if any input is a JAX array the result is JAX
  (traceable under jit, vmap, lax.scan).
  """
  xp = jnp if any(isinstance(a, jax.Array)
                  for a in (count_a, mean_a, m2_a, count_b, mean_b, m2_b)) else np
  n = count_a + count_b
  w = xp.asarray(xp.where(n > 0, count_b / xp.maximum(n, 1), 0.0))  # n_b / n
  delta = mean_b - mean_a
  mean = mean_a + delta * w[..., None]
  scale = count_a * w  # n_a n_b / n
  if outer:
    corr = scale[..., None, None] * delta[..., :, None] * delta[..., None, :]
  else:
    corr = scale[..., None] * delta * delta
  return n, mean, m2_a + m2_b + corr


def power_spectrum(x: jax.Array) -> jax.Array:
  """|fftshift(FFT2)|² per channel: x [N, H, W, C] -> float32 [N, C, H, W]. Traceable.

  float32 on CPU and GPU (an FFT is not a matmul, TF32 does not apply); JAX exposes no
  precision for the TPU's FFT (jax-ml/jax#9881).
  """
  f = jnp.fft.fftshift(jnp.fft.fft2(jnp.moveaxis(x, -1, 1), axes=(2, 3)), axes=(2, 3))
  return (f.real ** 2 + f.imag ** 2).astype(jnp.float32)


def _radius_index(h: int, w: int) -> np.ndarray:
  """Integer distance of each frequency from the centre left by fftshift."""
  y, x = np.indices((h, w))
  return np.rint(np.hypot(y - h // 2, x - w // 2)).astype(np.int32)


def azimuthal_average(p):
  """Mean of p [..., H, W] over rings of equal integer radius from the centre: [..., R]
  (Durall20). A JAX array gives float32 JAX (traceable); numpy gives float64 numpy (eager)."""
  h, w = p.shape[-2:]
  r = _radius_index(h, w).ravel()
  n_r = int(r.max()) + 1
  counts = np.bincount(r, minlength=n_r)
  if not isinstance(p, jax.Array):
    flat = np.asarray(p, np.float64).reshape(-1, h * w)
    sums = np.stack([np.bincount(r, row, minlength=n_r) for row in flat]) if flat.size else (
        np.zeros((0, n_r)))
    return (sums / counts).reshape(p.shape[:-2] + (n_r,))
  flat = p.reshape(-1, h * w)
  sums = jax.vmap(lambda v: jax.ops.segment_sum(v, r, num_segments=n_r))(flat)
  return (sums / counts.astype(np.float32)).reshape(p.shape[:-2] + (n_r,))


def _segment_moments(x, labels, num_models):
  """Count, mean and the deviations from it of the rows of x [N, D] per label."""
  n = jax.ops.segment_sum(jnp.ones(x.shape[0], x.dtype), labels, num_models)
  mean = jax.ops.segment_sum(x, labels, num_models) / jnp.maximum(n, 1)[:, None]
  safe = jnp.clip(labels, 0, num_models - 1)
  return n, mean, x - mean[safe]


def _traced(*arrays) -> bool:
  return any(isinstance(a, jax.core.Tracer) for a in jax.tree_util.tree_leaves(arrays))


def _as_array(a, what):
  if a is None or hasattr(a, "dtype"):
    return a
  try:
    return np.asarray(a)
  except Exception as e:  # a ragged list, an object
    raise UserInputError(f"{what} must be an array; got {type(a).__name__}: {e}") from None


def _fitted_edges(n_bins: int, top) -> jax.Array:
  """The default histogram's edges: n_bins bins on [0, top) with top = max(1, ceil(2 top))."""
  return jnp.linspace(0.0, jnp.maximum(1.0, jnp.ceil(2.0 * top)), n_bins + 1)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FingerprintStats:
  """Per-model running statistics of artifacts and of distances to the manifold.

  Build with `init`, add batches with `update`, combine parts with `merge`, read them with
  `finalize`. A pytree (arrays are leaves, artifact_shape is static): it can be a jit argument
  or a lax.scan carry. Label -1 (PADDING_LABEL) marks a row to leave out (padding, a bad
  file); every other label must lie in [0, num_models).
  """
  count: jax.Array          # [L] rows per model
  mean: jax.Array           # [L, D] mean artifact: the model's mean fingerprint
  m2: jax.Array             # [L, D] sum of squared deviations (-> per-dimension variance)
  basis: jax.Array          # [D, p] orthonormal basis for the covariance (p may be 0)
  basis_mean: jax.Array     # [L, p] mean of the artifacts' coordinates in `basis`
  basis_m2: jax.Array       # [L, p, p] co-moment of those coordinates (-> covariance)
  spectrum: jax.Array       # [L, C, H, W] summed power spectra (image-shaped artifacts)
  distance_edges: jax.Array  # [B + 1] histogram bin edges; NaN until fitted by `update`
  distance_hist: jax.Array  # [L, B] counts of distances to the manifold
  artifact_shape: tuple = dataclasses.field(metadata=dict(static=True))

  @classmethod
  def init(cls, num_models: int, artifact_shape, basis=None, distance_edges=None, *,
           dtype=jnp.float32) -> "FingerprintStats":
    """Empty statistics. Traceable (e.g. under jax.eval_shape) given concrete edges.

    Args:
      num_models: number of generative-model labels L (int >= 1).
      artifact_shape: shape of one artifact, e.g. (28, 28, 1) or (512,); image-shaped
        (H, W, C) artifacts also get power spectra.
      basis: [D, p] orthonormal columns for the covariance (e.g.
        `Manifold.principal_basis(p)`); None keeps no covariance.
      distance_edges: strictly increasing finite bin edges [B + 1] of the histogram of
        distances to the manifold; values outside fall into the first or last bin. Parts to
        be merged need the same edges. None: DEFAULT_DISTANCE_BINS bins on [0, top), fixed by
        the first update that has a labelled row: top = max(1, ceil(2 d)), d the largest
        distance of that batch (later, larger distances count in the last bin).
      dtype: the accumulators' dtype: float32, or float64 when JAX runs with x64 enabled.
    """
    if isinstance(num_models, bool) or not isinstance(num_models, (int, np.integer)) or (
        num_models < 1):
      raise UserInputError(f"num_models must be an integer >= 1; got {num_models!r}")
    artifact_shape = tuple(int(s) for s in artifact_shape)
    if not artifact_shape or min(artifact_shape) < 1:
      raise UserInputError(f"artifact_shape must be positive sizes; got {artifact_shape}")
    dtype = jnp.dtype(dtype)
    if dtype not in (jnp.float32, jnp.float64) or jax.dtypes.canonicalize_dtype(dtype) != dtype:
      raise UserInputError(f"dtype must be float32, or float64 with JAX's x64 enabled "
                           f"(jax.config.update('jax_enable_x64', True)); got {dtype}")
    d = math.prod(artifact_shape)
    basis = jnp.zeros((d, 0), dtype) if basis is None else jnp.asarray(basis, dtype)
    if basis.ndim != 2 or basis.shape[0] != d:
      raise UserInputError(f"basis must be [D={d}, p]; got shape {tuple(basis.shape)}")
    if distance_edges is None:
      edges = np.full(DEFAULT_DISTANCE_BINS + 1, np.nan)
    else:
      edges = np.asarray(distance_edges, np.float64)
      if edges.ndim != 1 or edges.size < 2 or not np.isfinite(edges).all() or np.any(
          np.diff(edges) <= 0):
        raise UserInputError("distance_edges must be a strictly increasing, finite 1-D array "
                             "of >= 2 edges")
    p = basis.shape[1]
    spec_shape = ((artifact_shape[2],) + artifact_shape[:2]) if len(artifact_shape) == 3 else (
        0, 0, 0)
    zeros = functools.partial(jnp.zeros, dtype=dtype)
    return cls(count=zeros((num_models,)), mean=zeros((num_models, d)),
               m2=zeros((num_models, d)), basis=basis, basis_mean=zeros((num_models, p)),
               basis_m2=zeros((num_models, p, p)), spectrum=zeros((num_models,) + spec_shape),
               distance_edges=jnp.asarray(edges, dtype),
               distance_hist=zeros((num_models, edges.size - 1)), artifact_shape=artifact_shape)

  @property
  def num_models(self) -> int:
    """L, the number of model labels."""
    return self.count.shape[0]

  def update(self, artifact, distance, labels) -> "FingerprintStats":
    """The statistics with one more batch added. Traceable (jit, vmap, lax.scan).

    Args:
      artifact: floating [N, *artifact_shape].
      distance: the Euclidean (not squared) distance to the manifold point, ‖φ(x) − p(x)‖,
        [N] or [N, k] (column 0 used); None: the artifact's norm, that same distance.
      labels: integer [N], the model of each row; PADDING_LABEL (-1) leaves a row out.
    Raises:
      UserInputError: wrong shapes or dtypes (also inside a trace); at the eager boundary
        also labels outside [0, L) other than -1, and NaN or inf in the artifact or a NaN,
        inf or negative distance of a labelled row. Inside a trace those are preconditions:
        other labels are left out like -1, and non-finite rows make `finalize` raise.
    """
    artifact, distance, labels = self._checked_batch(artifact, distance, labels)
    artifact, distance, labels = (_unsharded(a) for a in (artifact, distance, labels))
    if artifact.shape[0] == 0:
      return self
    state, problems = _update(self, artifact, distance, labels)
    if not _traced(self.count, artifact, distance, labels):
      _raise_problems(np.asarray(problems), self.num_models)
    return state

  def _checked_batch(self, artifact, distance, labels):
    artifact = _as_array(artifact, "artifact")
    labels = _as_array(labels, "labels")
    distance = _as_array(distance, "distance")
    shape = tuple(artifact.shape)
    if len(shape) < 1 or shape[1:] != self.artifact_shape:
      raise UserInputError(f"FingerprintStats.update: artifact must be [N, "
                           f"{', '.join(map(str, self.artifact_shape))}]; got shape {shape}")
    if not jnp.issubdtype(artifact.dtype, jnp.floating):
      raise UserInputError(f"FingerprintStats.update: artifacts are floating (embedding "
                           f"differences); got dtype {artifact.dtype}")
    n = shape[0]
    if not jnp.issubdtype(labels.dtype, jnp.integer):
      raise UserInputError(f"FingerprintStats.update: labels must be integers (model "
                           f"indices, -1 to leave a row out); got dtype {labels.dtype}")
    if tuple(labels.shape) != (n,):
      raise UserInputError(f"FingerprintStats.update: labels must be [N={n}]; got shape "
                           f"{tuple(labels.shape)}")
    if distance is not None and (
        not (jnp.issubdtype(distance.dtype, jnp.floating)
             or jnp.issubdtype(distance.dtype, jnp.integer))
        or distance.ndim not in (1, 2) or distance.shape[0] != n
        or (distance.ndim == 2 and distance.shape[1] == 0)):
      raise UserInputError(f"FingerprintStats.update: distance must be real [N={n}] or "
                           f"[N, k]; got {distance.dtype} {tuple(distance.shape)}")
    return artifact, distance, labels

  def merge(self, other: "FingerprintStats") -> "FingerprintStats":
    """Statistics of the union of the two parts' samples (exact up to rounding). Traceable.

    Both parts need the same num_models, artifact_shape, dtype, basis (to 1e-4) and
    distance_edges (an unfitted default histogram takes the other part's edges). Shapes are checked always;
    the values of basis and edges at the eager boundary only (a precondition inside a trace).
    """
    if not isinstance(other, FingerprintStats):
      raise TypeError(f"FingerprintStats.merge takes a FingerprintStats; got "
                      f"{type(other).__name__}")
    for what, a, b in (("num_models", self.num_models, other.num_models),
                       ("artifact_shape", self.artifact_shape, other.artifact_shape),
                       ("basis shape", self.basis.shape, other.basis.shape),
                       ("histogram bins", self.distance_edges.shape, other.distance_edges.shape),
                       ("dtype", self.mean.dtype, other.mean.dtype)):
      if tuple(np.atleast_1d(a)) != tuple(np.atleast_1d(b)):
        raise UserInputError(f"FingerprintStats.merge: the parts differ in {what} ({a} vs {b})")
    if not _traced(self, other):
      ea, eb = np.asarray(self.distance_edges), np.asarray(other.distance_edges)
      if np.isfinite(ea).all() and np.isfinite(eb).all() and not np.array_equal(ea, eb):
        raise UserInputError("FingerprintStats.merge: the parts' distance histograms have "
                             "different edges; pass the same distance_edges to every part's "
                             "init (the default edges are fitted to each part's first batch)")
      # Hosts may compute the same bank's basis with other rounding: compare to a tolerance.
      if not np.allclose(np.asarray(self.basis), np.asarray(other.basis), rtol=0, atol=1e-4):
        raise UserInputError("FingerprintStats.merge: the parts have different bases")
    return _merge(self, other)

  def finalize(self) -> dict:
    """Numpy summaries per model on the host (population moments, ddof = 0). Eager only.

    Returns a dict of numpy arrays, every statistic float64: count [L] and distance_hist
    [L, B] (int64 counts) with distance_edges [B + 1] (NaN if no labelled row was seen);
    mean and var [L, *artifact_shape]; cov [L, p, p] in `basis`; power_spectrum
    [L, C, H, W] and radial_profile [L, R] (channel-averaged) for image-shaped artifacts;
    fdr, the Fisher discriminant ratio of the models (a float; NaN with fewer than two
    models seen). Raises UserInputError if a model's moments are not finite (a NaN or inf
    artifact added inside a trace, where update does not check).
    """
    n = np.asarray(self.count, np.float64)
    safe = np.maximum(n, 1.0)
    mean = np.asarray(self.mean, np.float64)
    m2 = np.asarray(self.m2, np.float64)
    bad = np.flatnonzero((n > 0) & ~(np.isfinite(mean).all(1) & np.isfinite(m2).all(1)))
    if bad.size:
      raise UserInputError(f"FingerprintStats.finalize: the statistics of model(s) "
                           f"{bad.tolist()} are not finite: an artifact with NaN or inf was "
                           f"added inside a trace, where update does not check its inputs")
    shape = (self.num_models,) + self.artifact_shape
    var = m2 / safe[:, None]
    out = dict(
        count=n.astype(np.int64),
        mean=mean.reshape(shape),
        var=var.reshape(shape),
        cov=np.asarray(self.basis_m2, np.float64) / safe[:, None, None],
        distance_hist=np.asarray(self.distance_hist, np.float64).astype(np.int64),
        distance_edges=np.asarray(self.distance_edges, np.float64),
    )
    out["fdr"] = fdr_from_moments(n, mean, var) if (n > 0).sum() >= 2 else float("nan")
    if len(self.artifact_shape) == 3:
      spec = np.asarray(self.spectrum, np.float64) / safe[:, None, None, None]
      out["power_spectrum"] = spec
      out["radial_profile"] = azimuthal_average(spec.mean(axis=1))
    return out


def _unsharded(x):
  """x gathered whole when its batch is sharded over Explicit mesh axes (a user's
  jax.make_mesh mesh); a no-op otherwise. The per-model sums are scatter-adds, and in Explicit
  mode JAX cannot infer their output sharding from a sharded batch; one batch is small."""
  if x is None:
    return x
  sharding = jax.typeof(x).sharding
  mesh = getattr(sharding, "mesh", None)
  if (mesh is None or mesh.empty or jax.sharding.AxisType.Explicit not in mesh.axis_types
      or all(p is None for p in sharding.spec)):
    return x
  return jax.sharding.reshard(x, jax.sharding.PartitionSpec())


def _first(mask) -> jax.Array:
  """[how many rows of mask are set, the first of them]."""
  return jnp.stack([jnp.sum(mask, dtype=jnp.int32), jnp.argmax(mask).astype(jnp.int32)])


@jax.jit
def _update(state: FingerprintStats, artifact, distance, labels):
  """`FingerprintStats.update` (its inputs checked) -> (state, problems [3, 2]): how many rows
  have, and the first row with, an out-of-range label, a non-finite artifact, a bad distance."""
  L = state.num_models
  x = artifact.reshape(artifact.shape[0], -1).astype(state.mean.dtype)
  labels = labels.astype(jnp.int32)
  valid = (labels >= 0) & (labels < L)
  if distance is None:
    dist = jnp.sqrt(jnp.sum(x * x, axis=1))
  else:
    dist = (distance if distance.ndim == 1 else distance[:, 0]).astype(x.dtype)
  n_b, mean_b, dev = _segment_moments(x, labels, L)
  m2_b = jax.ops.segment_sum(dev * dev, labels, L)
  count, mean, m2 = merge_moments(state.count, state.mean, state.m2, n_b, mean_b, m2_b)

  y = jnp.dot(x, state.basis, precision=HIGHEST)
  _, ymean_b, ydev = _segment_moments(y, labels, L)
  ym2_b = jax.ops.segment_sum(jnp.einsum("ni,nj->nij", ydev, ydev, precision=HIGHEST), labels, L)
  _, basis_mean, basis_m2 = merge_moments(state.count, state.basis_mean, state.basis_m2,
                                          n_b, ymean_b, ym2_b, outer=True)
  spectrum = state.spectrum
  if len(state.artifact_shape) == 3:
    spectrum = spectrum + jax.ops.segment_sum(
        power_spectrum(x.reshape(artifact.shape)).astype(x.dtype), labels, L)

  # The default histogram's edges are fixed by the first batch with a labelled row.
  fitted = jnp.isfinite(state.distance_edges[0]) | ~jnp.any(valid)
  top = jnp.max(jnp.where(valid & jnp.isfinite(dist), dist, 0.0))
  n_bins = state.distance_hist.shape[1]
  edges = jnp.where(fitted, state.distance_edges,
                    _fitted_edges(n_bins, top).astype(x.dtype))
  bins = jnp.clip(jnp.searchsorted(edges, dist, side="right") - 1, 0, n_bins - 1)
  flat = jnp.where(valid, labels * n_bins + bins, -1)
  hist = state.distance_hist + jax.ops.segment_sum(
      jnp.ones_like(dist), flat, L * n_bins).reshape(L, n_bins)
  problems = jnp.stack([
      _first(~valid & (labels != PADDING_LABEL)),
      _first(valid & ~jnp.all(jnp.isfinite(x), axis=1)),
      _first(valid & ~(jnp.isfinite(dist) & (dist >= 0)))])
  return dataclasses.replace(state, count=count, mean=mean, m2=m2, basis_mean=basis_mean,
                             basis_m2=basis_m2, spectrum=spectrum, distance_edges=edges,
                             distance_hist=hist), problems


def _raise_problems(problems: np.ndarray, num_models: int) -> None:
  what = (f"a label outside [0, {num_models}) (label {PADDING_LABEL} leaves a row out)",
          "an artifact with NaN or inf", "a NaN, inf or negative distance")
  for (count, first), why in zip(problems, what):
    if count:
      raise UserInputError(f"FingerprintStats.update: {count} row(s) with {why}; the first is "
                           f"row {first}")


@jax.jit
def _merge(a: FingerprintStats, b: FingerprintStats) -> FingerprintStats:
  count, mean, m2 = merge_moments(a.count, a.mean, a.m2, b.count, b.mean, b.m2)
  _, bmean, bm2 = merge_moments(a.count, a.basis_mean, a.basis_m2,
                                b.count, b.basis_mean, b.basis_m2, outer=True)
  edges = jnp.where(jnp.isfinite(a.distance_edges[0]), a.distance_edges, b.distance_edges)
  return dataclasses.replace(a, count=count, mean=mean, m2=m2, basis_mean=bmean, basis_m2=bm2,
                             spectrum=a.spectrum + b.spectrum, distance_edges=edges,
                             distance_hist=a.distance_hist + b.distance_hist)


def fdr_from_moments(count, mean, var) -> float:
  """trace(S_B) / trace(S_W) from per-class counts [L], means [L, D] and variances [L, D].

  S_B = Σ_c n_c (μ_c − μ)(μ_c − μ)ᵀ and S_W = Σ_c Σ_{i∈c} (x_i − μ_c)(x_i − μ_c)ᵀ; classes
  with no samples are left out. Eager, float64 numpy. Returns inf when S_W = 0. Raises
  UserInputError with fewer than two classes with samples or non-finite moments.
  """
  count = np.asarray(count, np.float64)
  mean, var = np.asarray(mean, np.float64), np.asarray(var, np.float64)
  if count.ndim != 1 or mean.shape[:1] != count.shape or var.shape != mean.shape:
    raise UserInputError(f"fdr_from_moments: count [L], mean and var [L, D]; got shapes "
                         f"{count.shape}, {mean.shape}, {var.shape}")
  keep = count > 0
  n, mu_c, var = count[keep], mean[keep], var[keep]
  if n.size < 2:
    raise UserInputError("the Fisher discriminant ratio needs at least two classes with samples")
  bad = np.flatnonzero(~(np.isfinite(mu_c).all(1) & np.isfinite(var).all(1)))
  if bad.size:
    raise UserInputError(f"the Fisher discriminant ratio of non-finite moments (NaN or inf "
                         f"in class {np.flatnonzero(keep)[bad[0]]})")
  mu = (n[:, None] * mu_c).sum(0) / n.sum()
  between = float((n * ((mu_c - mu) ** 2).sum(1)).sum())
  within = float((n[:, None] * var).sum())
  return between / within if within > 0 else float("inf")


def fisher_discriminant_ratio(features, labels) -> float:
  """Fisher discriminant ratio trace(S_B)/trace(S_W) of features [N, ...] with class labels
  [N] (integers or names; not floats). Eager, float64 numpy on the host. Raises
  UserInputError naming the first row with NaN or inf, or on float or mis-shaped labels."""
  x = np.asarray(features, np.float64)
  x = x.reshape(x.shape[0] if x.ndim else 1, -1)
  labels = np.asarray(labels)
  if labels.shape != (x.shape[0],):
    raise UserInputError(f"{x.shape[0]} feature rows but labels of shape {labels.shape}")
  if np.issubdtype(labels.dtype, np.floating) or np.issubdtype(labels.dtype, np.complexfloating):
    raise UserInputError(f"labels must be integers or names; got dtype {labels.dtype}")
  ok = np.isfinite(x).all(1)
  if not ok.all():
    raise UserInputError(f"features: row {int(np.argmin(ok))} contains NaN or inf")
  classes, inv = np.unique(labels, return_inverse=True)
  n = np.bincount(inv).astype(np.float64)
  mean = np.stack([x[inv == c].mean(0) for c in range(classes.size)])
  var = np.stack([x[inv == c].var(0) for c in range(classes.size)])
  return fdr_from_moments(n, mean, var)
