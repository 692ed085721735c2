"""The estimated real manifold and the projection of samples onto it.

The projection x* of a sample x is its nearest row of the real *bank* in the embedding space
φ; its artifact is φ(x) − φ(x*) (ManiFPT, CVPR 2024), or φ(x) − p(x) for another manifold
estimator p (fpjax.estimators).

``Manifold`` is the eager front end: it embeds and checks inputs, holds the bank on a device
mesh (or streams it from host RAM), searches in padded batches with an autotuned kernel, and
certifies every answer with the host-driven fallback ladder: queries the certificate cannot
prove exact are searched again in the full space (after a reduced search), then with float32
products, then with direct differences (always certified). The search itself lives in
fpjax.knn; its traceable functional form is ``fpjax.knn.search``.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from fpjax import estimators as estimators_lib
from fpjax import parallel
from fpjax import spaces
from fpjax.errors import UserInputError
from fpjax.knn import autotune as autotune_lib
from fpjax.knn import index as index_lib
from fpjax.knn import placement as placement_lib
from fpjax.knn import reduced as reduced_lib
from fpjax.knn import scan

MAX_K = index_lib.MAX_K
# The old `precision` strings: one boolean, whether to certify every answer.
_PRECISION_CERTIFY = {"exact": True, "fast": False}
_DEFAULT_BATCH = 1024  # queries per 'data' device per kernel call


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Projection:
  """Result of projecting samples onto the manifold.

  index: int32 [N, k], global bank rows, nearest first (ties: lowest row).
  sq_distance: float32 [N, k], SQUARED Euclidean (L2) distance in the embedding space, as
    FAISS's IndexFlatL2 and the estimators take it (the old `distance` field held its root).
  nearest: [N, *embedding_shape], φ(x*), the nearest row (Manifold.neighbour_rows gives all k).
  artifact: [N, *embedding_shape], φ(x) − p(x) of the estimator asked for (default 'nn':
    φ(x) − nearest).
  """
  index: jax.Array
  sq_distance: jax.Array
  nearest: jax.Array
  artifact: jax.Array


def certify_flag(certify, precision) -> bool:
  """The one boolean: certify every answer (True) or return the candidate search's answers
  (False). `precision` is the old spelling ('exact' = True, 'fast' = False)."""
  if precision is not None:
    if precision not in _PRECISION_CERTIFY:
      raise UserInputError(f"precision must be 'exact' or 'fast' (old spelling of certify=True/"
                           f"False); got {precision!r}")
    return _PRECISION_CERTIFY[precision]
  if not isinstance(certify, bool):
    raise UserInputError(f"certify must be True or False; got {certify!r}")
  return certify


def resolve_estimator(estimator, k):
  """(Estimator, neighbours to search) for project's `estimator` and `k` arguments.

  estimator: None ('nn'), an fpjax.estimators.Estimator, a key ('kernel-k20-s1'), or a bare
  name ('kernel': the default of estimators.grid, with its k replaced by `k` when given).
  """
  if estimator is None:
    estimator = "nn"
  if isinstance(estimator, str):
    if "-" not in estimator and estimator in ("knn_mean", "local_pca", "kernel"):
      est = estimators_lib.grid(estimator)[0]
      if k is not None:
        est = dataclasses.replace(est, k=k)
    else:
      est = estimators_lib.Estimator.from_key(estimator)
  elif isinstance(estimator, estimators_lib.Estimator):
    est = estimator
  else:
    raise UserInputError(f"estimator must be an fpjax.estimators.Estimator, a key or a name; "
                         f"got {type(estimator).__name__}")
  k = max(est.neighbours, 1) if k is None else k
  if k < est.neighbours:
    raise UserInputError(f"estimator {est.key} needs {est.neighbours} neighbours; k = {k}")
  return est, k


class Manifold:
  """A bank of embedded real samples on a device mesh, and the projection onto it. Eager.

  Build with ``Manifold.from_images`` or ``Manifold.from_embeddings``; see ``__init__``.
  """

  def __init__(self, bank, *, space: spaces.Space = "rgb", mesh=None, certify: bool = True,
               precision: str | None = None, data_axis: str = parallel.DATA,
               bank_axis: str = parallel.BANK, image_shape=None, tile: int = 2048,
               device_bank_bytes: int | None = None, search_dim: int | str | None = "auto",
               autotune: bool | None = None, k=None):
    """Holds `bank` (float [N, *embedding_shape] embeddings of real samples) as the bank.

    Args:
      space: the embedding space the bank is in (fpjax.spaces; None: project_embedded only).
      mesh: a jax.sharding.Mesh (``jax.make_mesh``: Auto or Explicit axes, any names); default
        every device on the bank axis. data_axis / bank_axis name its query and bank axes.
      certify: True: every answer is proved exact (uncertified queries searched again);
        False: the bfloat16 candidate search's answers. `precision` ('exact' | 'fast') is its
        old spelling.
      image_shape: [H, W, C] of the images the bank was embedded from (project checks it).
      tile: bank rows per step of the XLA scan (a multiple of 8).
      device_bank_bytes: most bytes of bank per device; a larger slice stays in host RAM and
        is streamed in chunks (eager only). None: the bank is resident.
      search_dim: 'auto' (the reduced search when the bank is compressible), an int r, or None
        (full space); answers are the same, only speed differs.
      autotune: time kernel configurations the first time a shape is seen (fpjax.knn.autotune);
        None: on for GPU and TPU, off on the CPU (env FPJAX_AUTOTUNE=0: off).
      k: removed (k is per call now: ``search(queries, k)``, ``project(x, k=...)``).
    Raises: UserInputError for a bad bank, mesh or setting.
    """
    if k is not None:
      raise TypeError("Manifold(k=...) was removed in fpjax 0.2: k is chosen per call, "
                      "search(queries, k) and project(x, k=...)")
    self.certify = certify_flag(certify, precision)
    flat = index_lib.check_bank(bank, tile)
    self.space = space
    self.axes = placement_lib.check_mesh(mesh if mesh is not None else parallel.make_mesh(),
                                         data_axis, bank_axis)
    # Host-side bookkeeping of the ladder (gathers, updates) needs Auto sharding types.
    self.mesh = placement_lib.auto_mesh(mesh if mesh is not None else parallel.make_mesh())
    self.size = flat.shape[0]
    self.embedding_shape = tuple(bank.shape[1:])
    self.image_shape = tuple(image_shape) if image_shape is not None else None
    self.dim = math.prod(self.embedding_shape)
    self.autotune = autotune_lib.enabled(autotune)
    self._tuner = autotune_lib.Tuner() if self.autotune else None
    self._configs, self._fns = {}, {}
    compile_first = None if self.autotune else self._compile_first
    self.mean, self.placement, self._reduced = index_lib.place_bank(
        flat, self.mesh, self.axes, tile=tile, device_bank_bytes=device_bank_bytes,
        search_dim=search_dim, compile_first=compile_first)
    # Queries projected, searched again (not certified by the first search), and how many
    # reached each fallback stage (the benchmark reports them).
    self.stats = {"queries": 0, "researched": 0, "bfloat16": 0, "float32": 0, "direct": 0}

  # The bank's placement, as attributes (the artifact job and the benchmarks read them).
  bank = property(lambda self: self.placement.bank,
                  doc="the padded bank on the devices, float32 [rows, D]; None when streamed")
  tile = property(lambda self: self.placement.tile, doc="bank rows per step of the XLA scan")
  chunk_rows = property(lambda self: self.placement.chunk_rows,
                        doc="bank rows per kernel call (all of them unless streamed), padded")
  basis = property(lambda self: self._reduced[0] if self._reduced else None,
                   doc="the reduced search's basis V [D, r]; None: full-space search")
  reduce_consts = property(lambda self: self._reduced[1] if self._reduced else None,
                           doc="the reduced search's ReducedConsts; None: full-space search")

  @property
  def index(self) -> index_lib.Index:
    """The bank as an ``fpjax.knn.Index`` for the traceable ``fpjax.knn.search`` (on this
    Manifold's mesh with Auto axes; a streamed bank has none: UserInputError)."""
    return index_lib.index_of(self.placement, self.mean, self._reduced, self.embedding_shape)

  def _compile_first(self, placement, mean, search_rows, reduced):
    """Compiles the first call's kernel (k = 1, default batch, untuned XLA scan) while a worker
    compiles the bank's reduction: two compilations on two cores."""
    sharding = NamedSharding(self.mesh, P(self.axes.data, None))
    q = jax.ShapeDtypeStruct((self._batch(None), self.dim), jnp.float32, sharding=sharding)
    config = autotune_lib.Config("xla", placement.tile)
    self._search_fn(jnp.bfloat16, True, config, k=1).lower(
        q, placement.bank, mean, np.int32(0), np.int32(placement.size),
        search_rows + tuple(reduced)).compile()

  # ---- construction ---------------------------------------------------------------------
  @classmethod
  def from_images(cls, real_images, space: spaces.Space = "rgb", *, mesh=None,
                  certify: bool = True, precision: str | None = None, batch_size: int = 4096,
                  data_axis: str = parallel.DATA, bank_axis: str = parallel.BANK,
                  tile: int = 2048, device_bank_bytes: int | None = None,
                  search_dim: int | str | None = "auto", autotune: bool | None = None,
                  k=None) -> "Manifold":
    """Embeds real images (uint8 or float [N, H, W, C]) in `space` and holds them as the bank.

    batch_size: images per embedding call. tile, device_bank_bytes, search_dim, autotune,
    mesh, data_axis, bank_axis, certify, precision, k: as in ``Manifold.__init__`` (tile: bank
    rows per scan step; device_bank_bytes: stream the bank from host RAM above this many
    bytes per device; search_dim: 'auto' | int | None, the reduced search; autotune: time
    kernel configurations).
    """
    index_lib.check_batch_size(batch_size)
    bank = spaces.embed(real_images, space, batch_size=batch_size)
    return cls(bank, space=space, mesh=mesh, certify=certify, precision=precision,
               data_axis=data_axis, bank_axis=bank_axis, image_shape=real_images.shape[1:],
               tile=tile, device_bank_bytes=device_bank_bytes, search_dim=search_dim,
               autotune=autotune, k=k)

  @classmethod
  def from_embeddings(cls, bank, space: spaces.Space | None = None, **kwargs) -> "Manifold":
    """Holds already-embedded real samples (float [N, ...]) as the bank; kwargs as
    ``Manifold.__init__``."""
    return cls(bank, space=space, **kwargs)

  # ---- the kernels ------------------------------------------------------------------------
  def _search_fn(self, search_dtype, reduced=False, config=None, *, k):
    config = config or autotune_lib.Config("xla", self.tile)
    key = ("search", k, search_dtype and jnp.dtype(search_dtype).name, reduced, config)
    if key not in self._fns:
      self._fns[key] = scan.search_program(self.mesh, k=k, config=config,
                                           search_dtype=search_dtype, reduced=reduced,
                                           data_axis=self.axes.data, bank_axis=self.axes.bank)
    return self._fns[key]

  def _gather_fn(self):
    if "gather" not in self._fns:
      self._fns["gather"] = scan.gather_program(self.mesh, data_axis=self.axes.data,
                                                bank_axis=self.axes.bank)
    return self._fns["gather"]

  def _config(self, q, search_dtype, reduced=None, tune=False, *, k=1):
    """The kernel configuration for this query batch shape and stage (autotuned or default).

    Only the first search of each batch is tuned (`tune`): the fallback stages see few
    queries in ever-changing padded shapes, where timing would cost more than it saves.
    """
    if not (tune and self.autotune) or search_dtype is None:
      return autotune_lib.Config("xla", self.tile)
    n_local = q.shape[0] // self.mesh.shape[self.axes.data]
    key = dict(bank_rows=self.placement.slice_rows,
               dim=self.dim if reduced is None else reduced[0].shape[1] + 1,
               k=k, dtype=jnp.dtype(search_dtype).name,
               stage="full" if reduced is None else "reduced",
               queries=n_local, streamed=self.placement.streamed,
               mesh=[self.mesh.shape[self.axes.data], self.mesh.shape[self.axes.bank]])
    name = repr(sorted(key.items()))
    if name not in self._configs:
      compiled = {}

      def compile_only(config):
        # Compiled once, without running; the executable then serves the checks and timings.
        fn = self._search_fn(search_dtype, reduced is not None, config, k=k)
        args = next(self._chunk_args(q, reduced))
        compiled[config] = fn.lower(*args).compile()

      def run(config):
        return tuple(np.asarray(a) for a in self._search_all(
            q, search_dtype, reduced, config, fn=compiled[config], k=k))
      self._configs[name] = self._tuner.choose(
          str(jax.devices()[0].device_kind), key, self._candidate_configs(n_local, key["dim"]),
          run, compile_only, scan.same_certified_answers)
    return self._configs[name]

  def _candidate_configs(self, n_queries, dim):
    """Configurations the autotuner checks and times for queries searched in `dim` dimensions;
    the first (the XLA scan at `tile`) is the default."""
    device = self.mesh.devices.flat[0]
    return autotune_lib.candidates(device.platform, self.placement.slice_rows, self.tile,
                                   n_queries, dim, getattr(device, "compute_capability", None))

  def _chunk_args(self, q, reduced):
    """The search program's arguments for each bank chunk (one chunk unless streamed)."""
    for bank, search_rows, start, n_valid in self.placement.chunks(reduced is not None):
      args = (q, bank, self.mean, np.int32(start), np.int32(n_valid))
      if reduced is not None:
        args += (search_rows + tuple(reduced),)
      yield args

  def _search_all(self, q, search_dtype, reduced=None, config=None, tune=False, fn=None, *,
                  k=1):
    """Top-k of one padded query batch over the whole bank (streamed if on host).

    reduced: None (full-space search) or (V, ReducedConsts) of a built reduced search.
    fn: the search program compiled for this shape (autotuning), else the jitted one.
    Returns (squared distances [q, k], indices [q, k], certified [q]).
    """
    if config is None:
      config = self._config(q, search_dtype, reduced, tune, k=k)
    search = fn or self._search_fn(search_dtype, reduced is not None, config, k=k)
    best = None
    for args in self._chunk_args(q, reduced):
      d, i, ok = search(*args)
      if best is None:
        best = (d, i, ok)
      else:
        best = scan.merge_topk(best[0], best[1], d, i, k) + (best[2] & ok,)
    return best

  def _nearest(self, q_all, batch, k):
    """Top-k squared distances and indices [n, k] of all queries [n, dim], in padded batches,
    every answer certified when self.certify (the fallback ladder, module doc)."""
    sharding = NamedSharding(self.mesh, P(self.axes.data, None))
    nd = self.mesh.shape[self.axes.data]
    n = q_all.shape[0]

    def search(rows, size, search_dtype, reduced=None, tune=False):
      # Pads to `size` rows: one shape per call, a single compilation.
      q = jnp.pad(rows, ((0, size - rows.shape[0]), (0, 0))) if rows.shape[0] < size else rows
      d, i, ok = self._search_all(jax.device_put(q, sharding), search_dtype, reduced,
                                  tune=tune, k=k)
      return d[:rows.shape[0]], i[:rows.shape[0]], ok[:rows.shape[0]]

    reduced = self._reduced
    parts = [search(q_all[s:s + batch], batch, jnp.bfloat16, reduced, tune=True)
             for s in range(0, n, batch)]
    d, i = (jnp.concatenate(a) for a in list(zip(*parts))[:2])
    if not self.certify:
      return d, i
    self.stats["queries"] += n
    redo = np.flatnonzero(~np.concatenate([parallel.to_host(p[2]) for p in parts]))
    self.stats["researched"] += redo.size
    # Queries whose search the error bound cannot certify are searched again, all batches
    # together: in the full space (after a reduced search), then with a float32 matmul, then
    # with direct differences (which the bound always certifies). Each pass pads to a power of
    # two: few compilations.
    stages = ((("bfloat16", jnp.bfloat16),) if reduced is not None else ()) + (
        ("float32", jnp.float32), ("direct", None))
    for stage, search_dtype in stages:
      if not redo.size:
        break
      self.stats[stage] += redo.size
      parts = []
      for s in range(0, redo.size, batch):
        rows = redo[s:s + batch]
        size = min(batch, placement_lib.round_up(max(8, 1 << (rows.size - 1).bit_length()), nd))
        parts.append(search(q_all[rows], size, search_dtype))
      d = d.at[redo].set(jnp.concatenate([p[0] for p in parts]))
      i = i.at[redo].set(jnp.concatenate([p[1] for p in parts]))
      redo = redo[~np.concatenate([parallel.to_host(p[2]) for p in parts])]
    return d, i

  # ---- public API ---------------------------------------------------------------------------
  def search(self, queries, k: int, *, batch_size: int | None = None):
    """The k nearest bank rows of embedded queries, FAISS-shaped (``D, I = index.search(x, k)``).

    Args:
      queries: float [N, *embedding_shape] embeddings (raw images are refused: use ``project``
        or embed them with fpjax.embed first).
      k: neighbours per query, required, in [1, min(MAX_K, bank size)] (MAX_K = 256).
      batch_size: queries per kernel call (default 1024 per 'data' device).
    Returns: (sq_distances float32 [N, k], indices int32 [N, k]): SQUARED L2 distances in the
      embedding space, ascending (ties: lower row first), and global bank rows. Every answer
      is exact when certify=True. Eager; for a traceable search use ``fpjax.knn.search``.
    Raises: UserInputError for bad queries (dtype, shape, NaN rows, N = 0), k or batch_size.
    """
    k = index_lib.check_k(k, self.size)
    batch_size = index_lib.check_batch_size(batch_size)
    if isinstance(queries, jax.core.Tracer):
      raise UserInputError("Manifold.search is eager (its fallback ladder runs on the host); "
                           "inside jit/vmap/scan use fpjax.knn.search(manifold.index, q, k)")
    q_all = index_lib.check_embeddings(queries, self.embedding_shape)
    d, index = self._nearest(q_all, self._batch(batch_size), k)
    return d, index

  def project(self, images, *, k: int | None = None, estimator=None,
              batch_size: int | None = None, autoencoder=None) -> Projection:
    """Projects generated images onto the manifold; see ``Projection``. Eager.

    Args:
      images: uint8 or float [N, H, W, C] images, the same H, W, C as the bank.
      k: neighbours returned in index / sq_distance (default: what the estimator needs, >= 1).
      estimator: the artifact's manifold estimator: None ('nn'), an fpjax.estimators.Estimator,
        a key ('kernel-k20-s1') or a name ('kernel': its default, with k neighbours if given).
      batch_size: queries per kernel call (default 1024 per 'data' device).
      autoencoder: the 'learned' estimator's model.
    """
    if self.space is None:
      raise UserInputError("this manifold was built from embeddings; use project_embedded")
    if np.ndim(images) < 2 or (self.image_shape is not None
                               and tuple(images.shape[1:]) != self.image_shape):
      raise UserInputError(f"images have shape [H, W, C] = {list(np.shape(images)[1:])} but the "
                           f"real bank was built from {list(self.image_shape)}")
    if images.shape[0] == 0:
      raise UserInputError("no images to project (N = 0): the query batch is empty")
    emb = spaces.embed(images, self.space, batch_size=4096)
    return self.project_embedded(emb, k=k, estimator=estimator, batch_size=batch_size,
                                 autoencoder=autoencoder)

  def project_embedded(self, embeddings, *, k: int | None = None, estimator=None,
                       batch_size: int | None = None, autoencoder=None) -> Projection:
    """Like ``project`` for queries already embedded, float [N, *embedding_shape]. Eager."""
    est, k = resolve_estimator(estimator, k)
    d2, index = self.search(embeddings, k, batch_size=batch_size)
    j = max(est.neighbours, 1)
    rows = self.neighbour_rows(index[:, :j], batch_size=batch_size)
    near = rows[:, 0]
    q = jnp.asarray(embeddings, jnp.float32).reshape(near.shape)
    if est.name == "nn":
      artifact = q - near
    else:
      artifact = estimators_lib.artifacts([est], q, rows, d2[:, :j], autoencoder)[est.key]
    return Projection(index=index, sq_distance=d2, nearest=near, artifact=artifact)

  def neighbour_rows(self, index, batch_size: int | None = None) -> jax.Array:
    """The bank rows of global row indices [n, j] (e.g. ``Projection.index``), float32
    [n, j, *embedding_shape]. Eager.

    A resident bank is gathered on the devices (each bank device contributes the rows of its
    slice), in padded batches of `batch_size` queries: one compilation per j. A streamed
    bank's rows are read from host RAM.
    """
    batch_size = index_lib.check_batch_size(batch_size)
    index = np.asarray(parallel.to_host(index))
    if index.ndim != 2 or not np.issubdtype(index.dtype, np.integer):
      raise UserInputError(f"index must be an integer array [n, j] of bank rows; got "
                           f"{index.dtype} {list(index.shape)}")
    if index.size and (index.min() < 0 or index.max() >= self.size):
      bad = np.flatnonzero(((index < 0) | (index >= self.size)).any(axis=1))
      raise UserInputError(f"index: row(s) {', '.join(map(str, bad[:10]))} hold bank rows "
                           f"outside [0, {self.size})")
    n, j = index.shape
    shape = (n, j) + self.embedding_shape
    if self.placement.streamed:
      return jnp.asarray(self.placement.rows(index)).reshape(shape)
    batch = self._batch(batch_size)
    sharding = NamedSharding(self.mesh, P(self.axes.data, None))
    gather, parts = self._gather_fn(), []
    for s in range(0, n, batch):
      m = min(batch, n - s)  # padded batches: one compilation
      idx = np.zeros((batch, j), np.int32)
      idx[:m] = index[s:s + m]
      parts.append(gather(jax.device_put(idx, sharding), self.bank)[:m])
    if not parts:
      return jnp.zeros(shape, jnp.float32)
    return jnp.concatenate(parts).reshape(shape)

  def _batch(self, batch_size):
    """Queries per kernel call: a multiple of the 'data' devices (default 1024 each)."""
    nd = self.mesh.shape[self.axes.data]
    return placement_lib.round_up(batch_size or _DEFAULT_BATCH * nd, nd)

  def principal_basis(self, dim: int, max_rows: int = 10000, seed: int = 0) -> np.ndarray:
    """Top-`dim` principal directions of the bank, float32 [D, dim]: a basis for fingerprint
    covariance. An SVD (host, float32) of at most `max_rows` bank rows. Eager."""
    rows = self.placement.rows(placement_lib.sample_rows(self.size, max_rows, seed))
    with reduced_lib.one_blas_thread():
      basis, _, _ = reduced_lib.top_directions(rows, rank=min(dim, *rows.shape), n_iter=4,
                                               seed=seed)
      return np.asarray(basis)
