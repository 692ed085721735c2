"""The k-NN Riemannian centre of mass and the `riemannian` estimator's artifacts.

Centre of mass (Karcher mean) of a query's k neighbours z_1 .. z_k in the latent space:

    m* = argmin_m  F(m),   F(m) = 1/(2k) sum_j d_g(m, z_j)^2.

The Riemannian gradient of d_g(m, z)^2 / 2 is -log_m(z), so m* is where mean_j log_m(z_j) = 0.
Since d_g(m, z)^2 is the least energy of a curve m -> z (at constant speed, energy = length^2),

    min_m F(m) = min_{m, c_1..c_k} 1/(2k) sum_j E(c_j; m -> z_j),

one joint minimisation over the centre m and the k curves' interior points (each curve starts
at m): at its minimum every c_j is a geodesic and the gradient in m, -(1/k) sum_j G(m)
log_m(z_j) (to first order), vanishes. fpjax solves it that way, with L-BFGS in one
``lax.while_loop`` (:func:`fpjax.geometry.geodesic.minimise`), rather than alternating a
gradient step on m with k inner geodesic solves: the same stationary point, no nested loops
(each of which, under vmap, runs as long as its slowest query). Start: the Euclidean mean and
straight lines. The centre is `converged` when the optimiser's tests hold (they include the
gradient in m) AND the first-order condition read off the curves does,
||mean_j log_m(z_j)|| <= tol * mean_j ||log_m(z_j)|| + atol (latent coordinates; log maps from
:func:`fpjax.geometry.geodesic.log_map`). The discrete optimum meets the continuous condition
only up to the discretisation (about 1e-3 on the sphere and up to ~1e-2 on a digits VAE's
metric at T = 8), so ``tol`` = 5e-2 catches gross failures (a curve stuck away from a
geodesic), not rounding; ``Centre.stationarity`` reports the ratio itself.

Artifact of a query x with embedding phi(x) and latent code z_x: phi(x) - decode(m*) (the
decoded centre, in the space's units), beside the extra feature row log_{m*}(z_x), the
Riemannian logarithm at the centre towards the query's own code (latent coordinates, from a
geodesic m* -> z_x solved afterwards). A query is `converged` when its centre and its own
geodesic converged; the rest are counted and returned as a mask, never silently mixed in.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from fpjax.geometry.geodesic import GeodesicConfig, geodesic, log_map, minimise
from fpjax.geometry.metric import Decoder, interior_points, safe_norm


@dataclasses.dataclass(frozen=True)
class CentreConfig:
  """The centre of mass's settings (hashable: a static argument of jit).

  ``geodesic`` sets the curves' discretisation and the optimiser's tolerances (for the joint
  problem and for the query's own geodesic); ``max_steps`` is the joint problem's budget.
  """
  geodesic: GeodesicConfig = GeodesicConfig()
  max_steps: int = 300
  tol: float = 5e-2      # ||mean log|| / mean ||log||: discretisation-limited (see the doc)
  atol: float = 1e-6     # latent units; neighbours that coincide with the centre

  def __post_init__(self):
    if self.max_steps < 0:
      raise ValueError(f'max_steps must be >= 0, got {self.max_steps}')


class Centre(NamedTuple):
  centre: jax.Array              # [d]
  converged: jax.Array           # [] bool
  steps: jax.Array               # [] int32 L-BFGS updates taken
  log_maps: jax.Array            # [k, d] log_m(z_j) at the returned centre
  distances: jax.Array           # [k] d_g(m, z_j), lengths of the decoded curves
  stationarity: jax.Array        # [] ||mean_j log_m(z_j)|| / mean_j ||log_m(z_j)||


def _curves(m, neighbours, interior):
  k = neighbours.shape[0]
  return jnp.concatenate([jnp.broadcast_to(m, (k, 1) + m.shape), interior,
                          neighbours[:, None]], axis=1)


def centre_of_mass(decoder: Decoder, neighbours: jax.Array, config: CentreConfig,
                   init: jax.Array | None = None) -> Centre:
  """Riemannian centre of mass of neighbours [k, d] (one query; vmap it).

  init: [d] starting centre (default: the Euclidean mean of the neighbours).
  """
  gcfg = config.geodesic
  m0 = jnp.mean(neighbours, axis=0) if init is None else init
  k, d = neighbours.shape
  w0 = jnp.zeros((k, gcfg.num_points, d), neighbours.dtype)
  # Curves m -> z_j as straight lines plus preconditioned modes: moving m moves them along.
  interiors = lambda m, w: jax.vmap(interior_points, in_axes=(None, 0, 0))(m, neighbours, w)

  def energy(x):  # 1/k sum_j E(c_j): F(m) * 2 at the minimum over the curves
    f = decoder.features(_curves(x['m'], neighbours, interiors(x['m'], x['w'])))
    seg = f[:, 1:] - f[:, :-1]
    return seg.shape[1] * jnp.sum(seg * seg) / neighbours.shape[0]

  span = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(neighbours - m0), axis=-1)))
  x, _, ok, steps = minimise(energy, {'m': m0, 'w': w0}, span,
                             dataclasses.replace(gcfg, max_steps=config.max_steps))
  curves = _curves(x['m'], neighbours, interiors(x['m'], x['w']))
  logs = log_map(curves)
  v = jnp.mean(logs, axis=0)
  spread = jnp.mean(safe_norm(logs))
  stationary = safe_norm(v) <= config.tol * spread + config.atol
  seg = decoder.features(curves)
  return Centre(centre=x['m'], converged=ok & stationary, steps=steps, log_maps=logs,
                distances=jnp.sum(safe_norm(seg[:, 1:] - seg[:, :-1]), axis=-1),
                stationarity=safe_norm(v) / jnp.maximum(spread, 1e-30))


class RiemannianArtifacts(NamedTuple):
  artifact: jax.Array          # [N, D] phi(x) - decode(centre), the space's units
  log_map: jax.Array           # [N, d] log_centre(z_x), latent coordinates
  converged: jax.Array         # [N] bool: centre and the query's own geodesic converged
  centre: jax.Array            # [N, d] the centre of mass
  distance: jax.Array          # [N] d_g(centre, z_x)
  centre_converged: jax.Array  # [N] bool
  steps: jax.Array             # [N] int32 L-BFGS updates (centre + own geodesic)


def _one_query(decoder, query, neighbours, query_latent, config):
  c = centre_of_mass(decoder, neighbours, config)
  own = geodesic(decoder, c.centre, query_latent, config.geodesic)
  point = decoder.to_space(decoder.mean(c.centre))
  return RiemannianArtifacts(
      artifact=query - point.astype(query.dtype), log_map=log_map(own.curve),
      converged=c.converged & own.converged, centre=c.centre, distance=own.length,
      centre_converged=c.converged, steps=c.steps + own.steps)


def _batch(decoder, queries, neighbour_latents, query_latents, config):
  return jax.vmap(lambda q, n, z: _one_query(decoder, q, n, z, config))(
      queries, neighbour_latents, query_latents)


_batch_jit = jax.jit(_batch, static_argnames=('config',))


@functools.lru_cache(maxsize=16)
def _sharded(mesh, config):
  """The batch function under shard_map: each device runs its queries' loops on its own
  (a vmapped while_loop's stopping test would otherwise all-reduce across devices each step)."""
  axes = tuple(mesh.axis_names)
  fn = jax.shard_map(lambda dec, q, n, z: _batch(dec, q, n, z, config), mesh=mesh,
                     in_specs=(P(), P(axes), P(axes), P(axes)), out_specs=P(axes),
                     check_vma=False)
  return jax.jit(fn)


def riemannian_artifacts(decoder: Decoder, queries, neighbour_latents, query_latents, *,
                         config: CentreConfig = CentreConfig(), mesh=None) -> RiemannianArtifacts:
  """The `riemannian` estimator's artifacts for a batch of queries.

  Args:
    decoder: the metric's decoder (e.g. ``TrainedVAE.decoder``).
    queries: [N, D] embeddings phi(x) (the space's units).
    neighbour_latents: [N, k, d] latent codes of each query's k nearest bank rows (from the
      certified Euclidean k-NN, encoded with the VAE's encoder mean).
    query_latents: [N, d] each query's own latent code.
    config: geodesic and centre-of-mass settings.
    mesh: optional device mesh; queries are split over all its axes (padded to a multiple of
      its size with copies of the last query, dropped again), the decoder replicated.
  Returns RiemannianArtifacts (fields [N, ...]); count ``~converged`` and set those rows aside.
  """
  queries = jnp.asarray(queries, jnp.float32)
  nbrs = jnp.asarray(neighbour_latents, jnp.float32)
  zq = jnp.asarray(query_latents, jnp.float32)
  n = queries.shape[0]
  if nbrs.ndim != 3 or nbrs.shape[0] != n or zq.shape != (n, nbrs.shape[2]):
    raise ValueError(f'riemannian_artifacts: expected neighbour_latents [N={n}, k, d] and '
                     f'query_latents [N, d], got {tuple(nbrs.shape)} and {tuple(zq.shape)}')
  if mesh is None or mesh.size == 1:
    return _batch_jit(decoder, queries, nbrs, zq, config)
  pad = -n % mesh.size
  padded = [jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) if pad else a
            for a in (queries, nbrs, zq)]
  data = NamedSharding(mesh, P(tuple(mesh.axis_names)))
  padded = [jax.device_put(a, data) for a in padded]
  decoder = jax.device_put(decoder, NamedSharding(mesh, P()))
  out = _sharded(mesh, config)(decoder, *padded)
  return jax.tree.map(lambda a: a[:n], out)


def count_unconverged(result: RiemannianArtifacts) -> int:
  """How many queries did not converge (their rows must be set aside, not mixed in)."""
  return int(np.sum(~np.asarray(result.converged)))
