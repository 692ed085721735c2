"""Geodesics of a decoder's pull-back metric: minimum-energy curves between two latent points.

A curve with fixed ends z_0, z_1 and T interior points, initialised on the straight line (or
warm-started) and parametrised as the line plus the preconditioned sine modes of
:func:`fpjax.geometry.metric.curve_basis`, minimises the discretised energy of
:mod:`fpjax.geometry.metric` with L-BFGS (optax, zoom line search) in a ``lax.while_loop``
that stops at a tolerance or after ``max_steps`` iterations (:func:`minimise`, shared with the
centre of mass). Its length is the geodesic distance; the curve's initial velocity is the
Riemannian logarithm log_{z_0}(z_1) (latent coordinates, a second-order one-sided difference
of the first three points).

Every geodesic carries a ``converged`` flag, like the k-NN certificate: the relative energy
change of the last iteration is at most ``rtol`` AND the gradient is small in the dimensionless
sense ||dE/dw|| * ||z_1 - z_0|| <= gtol * E (w: the preconditioned coordinates; plus ``atol``
on both sides, so that a curve between coincident points, E = 0, converges). A budget that
ends before both hold leaves the flag False; the curve is still returned, for the caller to
count and set aside.

Under vmap each pair keeps its own stopping test (finished pairs are frozen while the others
run), but the batch's shape changes XLA's float rounding, which L-BFGS carries to its
tolerance: a pair's result is reproducible for a given batch, and equal across batchings and
device counts up to the solver's tolerance, not bitwise.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fpjax.geometry.metric import (Decoder, basis_coordinates, curve_energy, curve_length,
                                   full_curve, interior_points)


@dataclasses.dataclass(frozen=True)
class GeodesicConfig:
  """How geodesics are discretised and solved (hashable: a static argument of jit)."""
  num_points: int = 8        # T interior points (T + 1 segments)
  max_steps: int = 200       # L-BFGS iterations at most
  rtol: float = 1e-5         # relative energy change of the last iteration
  gtol: float = 1e-3         # ||grad|| * ||z_1 - z_0|| / E
  atol: float = 1e-9         # absolute floor of both tests (E ~ 0 between coincident points)
  memory_size: int = 10      # L-BFGS history

  def __post_init__(self):
    if self.num_points < 1:
      raise ValueError(f'num_points must be >= 1, got {self.num_points}')
    if self.max_steps < 0:
      raise ValueError(f'max_steps must be >= 0, got {self.max_steps}')


class Geodesic(NamedTuple):
  curve: jax.Array       # [T + 2, d] latent points, ends included
  length: jax.Array      # [] geodesic distance (length of the decoded polygon)
  energy: jax.Array      # [] discretised energy
  converged: jax.Array   # [] bool
  steps: jax.Array       # [] int32 L-BFGS iterations taken


def log_map(curve: jax.Array) -> jax.Array:
  """Initial velocity of a curve c(t), t in [0, 1], from its points: [..., T + 2, d] -> [..., d].

  (-3 c_0 + 4 c_1 - c_2) / (2 h) with h = 1 / (T + 1): second order in h, exact on straight
  lines (the flat metric's geodesics, where it is z_1 - z_0).
  """
  s = curve.shape[-2] - 1
  return 0.5 * s * (-3.0 * curve[..., 0, :] + 4.0 * curve[..., 1, :] - curve[..., 2, :])


def _tree_norm(tree) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(a)) for a in jax.tree.leaves(tree)))


def _small(config: GeodesicConfig, e_prev, e, grad, span):
  flat_energy = jnp.abs(e_prev - e) <= config.rtol * e + config.atol
  flat_grad = _tree_norm(grad) * span <= config.gtol * e + config.atol
  return flat_energy & flat_grad


def minimise(energy, x0, span, config: GeodesicConfig):
  """L-BFGS on energy(x) from x0 (any pytree) until the tests of the module doc hold or
  ``config.max_steps`` updates are spent. span: the latent scale of the gradient test.

  Returns (x, energy at x, converged, updates taken). The last update is tested too: a
  budget of S steps is S updates, then a test.
  """
  opt = optax.lbfgs(memory_size=config.memory_size)
  value_and_grad = optax.value_and_grad_from_state(energy)
  inf = jnp.asarray(jnp.inf, jax.tree.leaves(x0)[0].dtype)

  def cond(carry):
    _, _, _, step, done = carry
    return (step < config.max_steps) & ~done

  def body(carry):
    x, state, e_prev, step, _ = carry
    e, grad = value_and_grad(x, state=state)
    done = _small(config, e_prev, e, grad, span)
    updates, new_state = opt.update(grad, state, x, value=e, grad=grad, value_fn=energy)
    new_x = optax.apply_updates(x, updates)
    keep = lambda old, new: jnp.where(done, old, new)
    return (jax.tree.map(keep, x, new_x), jax.tree.map(keep, state, new_state), e,
            step + jnp.where(done, 0, 1), done)

  carry = (x0, opt.init(x0), inf, jnp.zeros((), jnp.int32), jnp.zeros((), bool))
  x, _, e_prev, steps, done = jax.lax.while_loop(cond, body, carry)
  e, grad = jax.value_and_grad(energy)(x)
  converged = (done | _small(config, e_prev, e, grad, span)) & jnp.isfinite(e)
  return x, e, converged, steps


def geodesic(decoder: Decoder, start: jax.Array, end: jax.Array, config: GeodesicConfig,
             init: jax.Array | None = None) -> Geodesic:
  """The minimum-energy curve start -> end (one pair; vmap it, see :func:`geodesics`).

  Args:
    decoder: the metric's decoder.
    start, end: [d] latent points (float32).
    config: discretisation and tolerances.
    init: [T, d] interior points to start from (default: the straight line).
  """
  d = start.shape[-1]
  w0 = (jnp.zeros((config.num_points, d), start.dtype) if init is None
        else basis_coordinates(start, end, init))
  energy = lambda w: curve_energy(decoder, start, end, interior_points(start, end, w))
  span = jnp.sqrt(jnp.sum(jnp.square(end - start)))
  w, e, converged, steps = minimise(energy, w0, span, config)
  x = interior_points(start, end, w)
  return Geodesic(curve=full_curve(start, end, x), length=curve_length(decoder, start, end, x),
                  energy=e, converged=converged, steps=steps)


def geodesics(decoder: Decoder, starts: jax.Array, ends: jax.Array, config: GeodesicConfig,
              init: jax.Array | None = None) -> Geodesic:
  """:func:`geodesic` for pairs starts [n, d] -> ends [n, d] (init [n, T, d]): fields [n, ...]."""
  if init is None:
    return jax.vmap(lambda a, b: geodesic(decoder, a, b, config))(starts, ends)
  return jax.vmap(lambda a, b, c: geodesic(decoder, a, b, config, c))(starts, ends, init)

