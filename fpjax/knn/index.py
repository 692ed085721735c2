"""The k-NN index as a JAX pytree and pure search functions over it (FAISS-shaped).

    index = fpjax.knn.build_index(bank, mesh=mesh)           # eager: checks, places, reduces
    sq_dist, idx, certified = fpjax.knn.search(index, q, k)   # traceable: jit, vmap, scan
    rows = fpjax.knn.gather(index, idx)                        # traceable: the rows [n, k, D]

`build_index` runs eagerly (it reads the bank on the host, checks it for NaN, computes the
reduced search's basis by a host SVD and places the bank on the mesh). `search` and `gather`
are pure functions of the index and work under ``jax.jit``, ``jax.vmap``, ``lax.scan`` and
inside a user's ``jax.shard_map`` (pass the index with ``in_specs=index_specs(index)`` and
``check_vma=False``). Called eagerly they check their inputs (dtype, shape, NaN rows); inside a
trace only the static checks run (dtype, shape, k) and the preconditions are documented: finite
float queries. They return the per-query certificate flag instead of searching again: where
`certified` is False the answer may miss a row whose distance ties or beats the k-th by less
than the search's rounding bound (a fraction of a percent of queries on images; fewer with
``search_dtype=None``, the direct differences). The eager ``fpjax.Manifold`` runs the fallback
ladder and certifies every answer. A streamed host bank (``Manifold(device_bank_bytes=...)``) is eager-only.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from fpjax import parallel
from fpjax.errors import UserInputError
from fpjax.knn import autotune as autotune_lib
from fpjax.knn import bounds
from fpjax.knn import placement as placement_lib
from fpjax.knn import reduced as reduced_lib
from fpjax.knn import scan

# The largest k a search answers: the certificate keeps 2k candidate groups of 8 rows per query
# and re-ranks all of them exactly, so the work grows with k (FAISS on the CPU has no limit,
# on GPUs 2,048).
MAX_K = 256


def check_k(k, bank_size: int) -> int:
  """k as an int, or an error: a TypeError for a non-integer, a UserInputError for k < 1,
  k > MAX_K or k > the bank's rows."""
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
    raise TypeError(f"k must be a Python int (the number of neighbours); got {k!r}")
  if not 1 <= k <= MAX_K:
    raise UserInputError(f"k must be in [1, {MAX_K}] (fpjax.knn.MAX_K); got {k}")
  if k > bank_size:
    raise UserInputError(f"k = {k} is larger than the bank ({bank_size} real samples)")
  return int(k)


def check_batch_size(batch_size) -> int | None:
  """None (the default) or a positive int; 0, negative and non-integers are refused."""
  if batch_size is None:
    return None
  if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or (
      batch_size < 1):
    raise UserInputError(f"batch_size must be a positive integer or None; got {batch_size!r}")
  return int(batch_size)


def check_finite(x, what: str) -> None:
  """Raises a UserInputError naming the rows of x that hold NaN or Inf. Eager only: inside a
  trace (a Tracer) it checks nothing (the values are not known)."""
  if isinstance(x, jax.core.Tracer):
    return
  if isinstance(x, np.ndarray):  # in blocks: no bank-sized temporary
    flat = x.reshape(x.shape[0], -1)
    finite = np.concatenate([np.isfinite(flat[s:s + 65536]).all(axis=1)
                             for s in range(0, len(flat), 65536)])
  else:
    finite = parallel.to_host(jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1))
  bad = np.flatnonzero(~finite)
  if bad.size:
    shown = ", ".join(map(str, bad[:10])) + (", ..." if bad.size > 10 else "")
    raise UserInputError(f"{what}: {bad.size} row(s) hold NaN or Inf values: rows {shown}")


def check_embeddings(x, embedding_shape, what: str = "queries"):
  """Embedded queries [N, *embedding_shape] as float32 [N, D], or a UserInputError: integer or
  boolean arrays (raw images: embed them first), a wrong shape, N = 0, NaN/Inf rows (eager)."""
  if not hasattr(x, "dtype"):
    x = np.asarray(x)
  dtype = np.dtype(x.dtype)
  if not np.issubdtype(dtype, np.floating):
    raise UserInputError(f"{what} have dtype {dtype}: embeddings (float) are expected; embed raw "
                         f"images first (fpjax.embed(images, space) or Manifold.project)")
  shape = tuple(np.shape(x))
  if shape[1:] != tuple(embedding_shape):
    raise UserInputError(f"{what} have shape {list(shape)} but the bank's rows have "
                         f"{list(embedding_shape)}: expected [N, *{list(embedding_shape)}]")
  if shape[0] == 0:
    raise UserInputError(f"no {what} (N = 0)")
  x = jnp.asarray(x, jnp.float32).reshape(shape[0], math.prod(embedding_shape))
  check_finite(x, what)
  return x


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["bank", "mean", "search_rows", "basis", "consts"],
                   meta_fields=["size", "rows", "embedding_shape", "mesh", "axes", "tile"])
@dataclasses.dataclass(frozen=True)
class Index:
  """A bank ready to search, as a pytree (pass it through jit, scan and shard_map).

  bank: float32 [rows, D], rows = `size` padded to a multiple of the bank axis, sharded over
    `axes.bank`; mean: float32 [D] (replicated), the bank mean the search centres on.
  search_rows, basis, consts: the reduced search (fpjax.knn.reduced): (x̂ [rows, r+1],
    ‖b − μ‖² [rows]), V [D, r] and bounds.ReducedConsts; all None for the full-space search.
  size: real rows; rows: padded rows of the whole bank; embedding_shape: one row's shape;
  mesh, axes: the mesh and its (data, bank) axis names; tile: bank rows per step of the XLA
  scan.
  """
  bank: jax.Array
  mean: jax.Array
  search_rows: tuple | None
  basis: jax.Array | None
  consts: bounds.ReducedConsts | None
  size: int
  rows: int
  embedding_shape: tuple
  mesh: jax.sharding.Mesh
  axes: placement_lib.MeshAxes
  tile: int

  @property
  def dim(self) -> int:
    """D, the flattened embedding dimension."""
    return math.prod(self.embedding_shape)


def index_specs(index: Index) -> Index:
  """The PartitionSpecs of an Index's arrays (an Index of specs): the `in_specs` entry that
  passes an index into a user's ``jax.shard_map`` over the index's mesh."""
  bank = index.axes.bank
  return dataclasses.replace(
      index, bank=P(bank, None), mean=P(),
      search_rows=None if index.search_rows is None else (P(bank, None), P(bank)),
      basis=None if index.basis is None else P(),
      consts=None if index.consts is None else bounds.ReducedConsts(P(), P(), P(), P()))


def place_bank(flat: np.ndarray, mesh, axes, *, tile: int, device_bank_bytes=None,
               search_dim="auto", compile_first=None):
  """(mean [D], BankPlacement, reduced search (V, ReducedConsts) or None) of a host bank.

  The reduced search's basis (a host SVD of a bank sample, one core) is computed by a worker
  thread while this one takes the mean and places the bank. compile_first(placement, mean,
  search_rows, reduced): called with shape-only reduced arrays while the worker reduces the
  bank (``reduced.reduction``), to compile a first search meanwhile. A failed reduction is
  logged and the full-space search used (same answers).
  """
  sample = reduced_lib.reduction_sample(flat, search_dim)
  with concurrent.futures.ThreadPoolExecutor(1) as worker:
    basis_job = (None if sample is None
                 else worker.submit(reduced_lib.reduction_basis, sample, search_dim))
    mean = jax.device_put(flat.mean(axis=0, dtype=np.float64).astype(np.float32),
                          NamedSharding(mesh, P()))
    placement = placement_lib.BankPlacement(flat, mesh, tile, device_bank_bytes, axes)
    if basis_job is None:
      return mean, placement, None
    meanwhile = None
    if compile_first is not None and not placement.streamed:
      meanwhile = functools.partial(compile_first, placement, mean)
    try:
      reduced = reduced_lib.reduction(basis_job, mean, placement, worker, meanwhile)
      # Built means ready to search (and a failure of the reduction shows here).
      reduced = jax.block_until_ready((reduced, placement.search_rows))[0]
    except Exception as e:  # pylint: disable=broad-except
      if jax.process_count() > 1:  # every host must launch the same programs: no fallback
        raise
      # Speed only: the full-space search gives the same answers.
      logging.warning("fpjax: building the reduced search failed (%s: %s); the full-space "
                      "search is used", type(e).__name__, e)
      reduced = None
  return mean, placement, reduced


def check_bank(bank, tile: int) -> np.ndarray:
  """The bank [N, ...] as float32 host rows [N, D], or a UserInputError (empty, integer dtype,
  NaN rows, a tile that is not a multiple of scan.GROUP)."""
  if tile % scan.GROUP or tile < scan.GROUP:
    raise UserInputError(f"tile must be a positive multiple of {scan.GROUP}; got {tile}")
  if np.ndim(bank) < 2:
    raise UserInputError(f"the real bank must be [N, ...] embeddings; got shape "
                         f"{list(np.shape(bank))}")
  if bank.shape[0] == 0:
    raise UserInputError("the real bank is empty")
  host = parallel.to_host(bank)
  if not np.issubdtype(host.dtype, np.floating):
    raise UserInputError(f"the real bank has dtype {host.dtype}: embeddings (float) are expected;"
                         f" embed raw images first (fpjax.embed or Manifold.from_images)")
  flat = host.astype(np.float32, copy=False).reshape(host.shape[0], -1)
  check_finite(flat, "real bank")
  return flat


def build_index(bank, *, mesh=None, data_axis: str = parallel.DATA,
                bank_axis: str = parallel.BANK, tile: int = 2048,
                search_dim: int | str | None = "auto") -> Index:
  """Builds the search index of an embedded real bank. Eager (not traceable).

  Args:
    bank: float [N, *embedding_shape] embeddings (numpy or jax); NaN/Inf rows are refused.
    mesh: a jax.sharding.Mesh (e.g. ``jax.make_mesh``, Auto or Explicit axes); default: every
      device on the bank axis (``fpjax.parallel.make_mesh()``).
    data_axis, bank_axis: the mesh's query and bank axis names (other axes must have size 1).
    tile: bank rows per step of the XLA scan (a multiple of 8).
    search_dim: 'auto' (a reduced search when the bank is compressible), an int r (r principal
      directions), or None (the full space). Answers are the same; only speed differs.
  Returns: an ``Index`` (a pytree) for ``search`` and ``gather``.
  Raises: UserInputError for a bad bank or mesh.
  """
  mesh = mesh if mesh is not None else parallel.make_mesh()
  axes = placement_lib.check_mesh(mesh, data_axis, bank_axis)
  flat = check_bank(bank, tile)
  mean, placement, reduced = place_bank(flat, mesh, axes, tile=tile, search_dim=search_dim)
  return index_of(placement, mean, reduced, tuple(bank.shape[1:]))


def index_of(placement, mean, reduced, embedding_shape) -> Index:
  """The Index of a resident BankPlacement (what build_index and Manifold.index return)."""
  if placement.streamed:
    raise UserInputError("a streamed bank (device_bank_bytes smaller than a bank slice) lives "
                         "in host RAM and cannot be searched inside a trace; use the eager "
                         "Manifold.search")
  basis, consts = reduced if reduced is not None else (None, None)
  return Index(bank=placement.bank, mean=mean,
               search_rows=placement.search_rows if reduced is not None else None,
               basis=basis, consts=consts, size=placement.size, rows=placement.chunk_rows,
               embedding_shape=tuple(embedding_shape), mesh=placement.mesh, axes=placement.axes,
               tile=placement.tile)


def _manual_axes(axes) -> bool:
  """True inside a shard_map that made both index axes manual; a UserInputError when only one
  is; False outside any shard_map."""
  manual = set(getattr(jax.sharding.get_abstract_mesh(), "manual_axes", ()) or ())
  inside = [a for a in axes if a in manual]
  if inside and len(inside) != 2:
    raise UserInputError(f"inside a shard_map over {sorted(manual)}: make both index axes "
                         f"{list(axes)} manual (in_specs=fpjax.knn.index_specs(index)), or none")
  return bool(inside)


def _constrain(x, index: Index, spec):
  """x laid out as `spec` on the index's mesh (Explicit axes: a reshard; Auto: a constraint)."""
  sharding = NamedSharding(index.mesh, spec)
  if placement_lib.is_explicit(index.mesh):
    return jax.sharding.reshard(x, sharding)
  return lax.with_sharding_constraint(x, sharding)


def _lead_axis(x, index: Index):
  """The mesh axis an Explicit-typed x is split over along its first dimension (None: not
  split, or an Auto mesh): search and gather return their results split the same way, so a
  user's unsharded batch gets unsharded results."""
  if not placement_lib.is_explicit(index.mesh) or not isinstance(x, jax.Array):
    return None
  spec = getattr(jax.typeof(x).sharding, "spec", None)
  return spec[0] if spec else None


def _split_like(outputs, lead, index: Index):
  """Explicit meshes: each output resharded to be split over `lead` along its first axis."""
  if not placement_lib.is_explicit(index.mesh):
    return outputs
  return tuple(jax.sharding.reshard(
      o, NamedSharding(index.mesh, P(lead, *([None] * (o.ndim - 1))))) for o in outputs)


def _local_bank_check(index: Index):
  """Inside a shard_map the bank must arrive as its slice (passed with index_specs)."""
  nb = index.mesh.shape[index.axes.bank]
  if nb > 1 and index.bank.shape[0] == index.rows:
    raise UserInputError("inside shard_map the index must be passed as an argument with "
                         "in_specs=fpjax.knn.index_specs(index), not closed over")


def search(index: Index, queries, k: int, *, search_dtype=jnp.bfloat16, config=None):
  """The k nearest bank rows of embedded queries, FAISS-shaped. Traceable.

  Args:
    index: an ``Index`` from ``build_index`` (or ``Manifold.index``).
    queries: float [N, *embedding_shape] embeddings (not raw images: embed them first).
    k: neighbours per query, a Python int in [1, min(MAX_K, bank size)].
    search_dtype: the candidate search's products: bfloat16 (default, fast), float32, or None
      (direct differences: slow, the tightest bound).
    config: a fpjax.knn.autotune.Config for the candidate search (default: the XLA scan).
  Returns: (sq_distances float32 [N, k], indices int32 [N, k], certified bool [N]): squared L2
    distances in the embedding space, ascending (ties: lower row first); global bank rows;
    True where the answer is proved exact (else it may be off on near-ties, see module doc).
  On an Explicit-axes mesh the results are split like the queries' first axis (unsharded
  queries: unsharded results). Eager calls check dtype, shape and NaN rows (UserInputError);
  inside a trace dtype, shape and k only. Works under jit, vmap, lax.scan, and in a shard_map
  that passes the index with ``index_specs`` (then the queries are each device's local
  block).
  """
  k = check_k(k, index.size)
  lead = _lead_axis(queries, index)
  q = check_embeddings(queries, index.embedding_shape)
  config = config or autotune_lib.Config("xla", index.tile)
  reduced = None
  if index.basis is not None:
    reduced = tuple(index.search_rows) + (index.basis, index.consts)
  args = (index.bank, index.mean, np.int32(0), np.int32(index.size))
  if _manual_axes(index.axes):
    _local_bank_check(index)
    return scan.search_slice(q, *args, reduced, k=k, config=config, search_dtype=search_dtype,
                             groups=scan.candidate_groups(k), bank_axis=index.axes.bank)
  n = q.shape[0]
  pad = -n % index.mesh.shape[index.axes.data]
  if pad:
    q = jnp.pad(q, ((0, pad), (0, 0)))
  q = _constrain(q, index, P(index.axes.data, None))
  program = scan.search_program(index.mesh, k=k, config=config, search_dtype=search_dtype,
                                reduced=reduced is not None, data_axis=index.axes.data,
                                bank_axis=index.axes.bank, jit=False)
  d, i, ok = program(q, *args, *(() if reduced is None else (reduced,)))
  return _split_like((d[:n], i[:n], ok[:n]), lead, index)


def gather(index: Index, indices) -> jax.Array:
  """The bank rows of global row indices [N, j] (int; e.g. ``search``'s), float32
  [N, j, *embedding_shape]. Traceable (under jit, vmap, scan and shard_map as ``search``).
  Indices outside [0, size) give zero rows inside a trace; eager calls refuse them."""
  lead = _lead_axis(indices, index)
  indices = jnp.asarray(indices)
  if indices.ndim != 2 or not jnp.issubdtype(indices.dtype, jnp.integer):
    raise UserInputError(f"indices must be an integer array [N, j] of bank rows; got "
                         f"{indices.dtype} {list(indices.shape)}")
  if not isinstance(indices, jax.core.Tracer):
    host = parallel.to_host(indices)
    if host.size and (host.min() < 0 or host.max() >= index.size):
      bad = np.flatnonzero(((host < 0) | (host >= index.size)).any(axis=1))
      raise UserInputError(f"indices: row(s) {', '.join(map(str, bad[:10]))} hold bank rows "
                           f"outside [0, {index.size})")
  indices = indices.astype(jnp.int32)
  n, j = indices.shape
  shape = (n, j) + tuple(index.embedding_shape)
  if _manual_axes(index.axes):
    _local_bank_check(index)
    return scan.gather_rows(indices, index.bank, bank_axis=index.axes.bank).reshape(shape)
  pad = -n % index.mesh.shape[index.axes.data]
  if pad:
    indices = jnp.pad(indices, ((0, pad), (0, 0)))
  indices = _constrain(indices, index, P(index.axes.data, None))
  program = scan.gather_program(index.mesh, data_axis=index.axes.data,
                                bank_axis=index.axes.bank, jit=False)
  rows = program(indices, index.bank)[:n].reshape(shape)
  return _split_like((rows,), lead, index)[0]
