"""Normalizing flows (Glow / RealNVP steps on logit pixels): exact likelihood of uniformly
dequantised images, in bits per dimension; sampled at the recipe's temperature.
"""
from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fpjax.zoo import models
from fpjax.zoo.families import base

ACTNORM_INIT_IMAGES = 512  # the seeded batch of Glow's data-dependent actnorm initialisation


def build(recipe, preset, image_shape, rngs, num_classes=0) -> dict:
  del num_classes
  return {'flow': models.Flow(image_shape, preset.width['flow'], preset.flow_steps_per_scale,
                              recipe.normalization, recipe.nonlinearity, recipe.permutation,
                              rngs=rngs)}


def optimizers(recipe, preset, lr) -> dict:
  del recipe
  # Warm-up then cosine decay: short flow trainings end far better annealed than at a fixed rate.
  total = max(preset.steps['flow'], 1)
  lr = optax.warmup_cosine_decay_schedule(0.0, lr, max(total // 20, 1), total)
  return {'flow': optax.chain(optax.clip_by_global_norm(10.0), optax.adam(lr))}


def make_step(recipe, preset, gdefs: dict, txs: dict):
  """One step on the bits per dimension of a dequantised minibatch; losses [bits/dim]."""
  del recipe
  bs = preset.batch_size

  def loss_fn(p, rest, x01):
    flow = nnx.merge(gdefs['flow'], p, rest, copy=True)
    return jnp.mean(flow.log_prob_bits_per_dim(x01))

  def step(state, key, data):
    k1, k2 = jax.random.split(key)
    x = jnp.round(base.minibatch(k1, data, bs) * 255.0)
    x01 = (x + jax.random.uniform(k2, x.shape)) / 256.0  # uniform dequantisation
    loss, grads = jax.value_and_grad(loss_fn)(state.params['flow'], state.rest['flow'], x01)
    return base.apply_grads(state, txs, 'flow', grads), loss[None]
  return step


def make_sampler(recipe, preset, modules, image_shape, per_dispatch=None):
  """The inverse flow of prior draws at the recipe's temperature."""
  del preset, image_shape, per_dispatch
  gdef, p, r = base.split(modules['flow'])

  def draw(key, n):
    return nnx.merge(gdef, p, r).sample01(key, n, recipe.temperature)
  return jax.jit(draw, static_argnums=1)


def init_from_data(recipe, modules: dict, real_images: np.ndarray, seed: int) -> None:
  """Glow's data-dependent actnorm initialisation, on a fixed, seeded, dequantised batch."""
  del recipe
  rng = np.random.default_rng(seed)
  x = real_images[rng.choice(len(real_images), min(ACTNORM_INIT_IMAGES, len(real_images)),
                             replace=False)]
  x01 = (x.astype(np.float32) + rng.uniform(size=x.shape)) / 256.0
  modules['flow'].log_prob_bits_per_dim(jnp.asarray(x01, jnp.float32), init_actnorm=True)


FAMILY = base.Family('flow', sampled='flow', build=build, optimizers=optimizers,
                     make_step=make_step, make_sampler=make_sampler,
                     init_from_data=init_from_data)
