"""GANs: a DCGAN-style generator against a two-layer convolutional discriminator (the losses of
the recipe table: non-saturating, hinge, least squares, WGAN-GP), optionally started from the
decoder of a VAE trained first (preset.gan_pretrain_steps; models.Generator.start_from).
"""
from __future__ import annotations

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import optax

from fpjax.zoo import models
from fpjax.zoo import recipes
from fpjax.zoo.families import base
from fpjax.zoo.families import vae as vae_family


GRADIENT_PENALTY = 10.0  # WGAN-GP's lambda (Gulrajani et al. 2017)


def build(recipe, preset, image_shape, rngs, num_classes=0) -> dict:
  del num_classes
  w = preset.width['gan']
  # With decoder pretraining the generator samples the VAE's fitted mixture prior.
  components = vae_family.PRIOR_COMPONENTS if preset.gan_pretrain_steps else 1
  return {'g': models.Generator(preset.latent_dim, image_shape, w, recipe.upsampling,
                                recipe.normalization, recipe.nonlinearity, rngs=rngs,
                                prior_components=components),
          'd': models.Discriminator(image_shape, w, recipe.disc_normalization, rngs=rngs)}


def optimizers(recipe, preset, lr) -> dict:
  del preset
  b2 = 0.9 if recipe.loss == 'wgan_gp' else 0.999
  return {'g': optax.adam(lr, b1=0.5, b2=b2), 'd': optax.adam(lr, b1=0.5, b2=b2)}


def losses(kind: str, d_real, d_fake):
  """(discriminator loss, generator loss as a function of the critic's output on fakes)."""
  if kind == 'non_saturating':
    return (jnp.mean(jax.nn.softplus(-d_real) + jax.nn.softplus(d_fake)),
            lambda df: jnp.mean(jax.nn.softplus(-df)))
  if kind == 'hinge':
    return (jnp.mean(jax.nn.relu(1 - d_real) + jax.nn.relu(1 + d_fake)), lambda df: -jnp.mean(df))
  if kind == 'least_squares':
    return (0.5 * jnp.mean((d_real - 1) ** 2 + d_fake ** 2),
            lambda df: 0.5 * jnp.mean((df - 1) ** 2))
  if kind == 'wgan_gp':
    return jnp.mean(d_fake - d_real), lambda df: -jnp.mean(df)
  raise ValueError(f'unknown GAN loss {kind!r}; expected one of {recipes.GAN_LOSSES}.')


def make_step(recipe, preset, gdefs: dict, txs: dict):
  """One discriminator update, then one generator update; losses [d, g]."""
  bs = preset.batch_size

  def d_loss(dp, state, real, z, key):
    g = nnx.merge(gdefs['g'], state.params['g'], state.rest['g'], copy=True)
    d = nnx.merge(gdefs['d'], dp, state.rest['d'], copy=True)
    fake = jax.lax.stop_gradient(g(z, train=True))
    loss, _ = losses(recipe.loss, d(real, train=True), d(fake, train=True))
    if recipe.loss == 'wgan_gp':
      eps = jax.random.uniform(key, (bs, 1, 1, 1))
      mix = eps * real + (1 - eps) * fake
      grad = jax.vmap(jax.grad(lambda x: d(x[None], train=False)[0]))(mix)
      norm = jnp.sqrt(jnp.sum(grad ** 2, axis=(1, 2, 3)) + 1e-12)
      loss = loss + GRADIENT_PENALTY * jnp.mean((norm - 1) ** 2)
    return loss, base.split(d)[2]

  def g_loss(gp, state, z):
    g = nnx.merge(gdefs['g'], gp, state.rest['g'], copy=True)
    d = nnx.merge(gdefs['d'], state.params['d'], state.rest['d'], copy=True)
    _, loss = losses(recipe.loss, jnp.zeros(1), jnp.zeros(1))
    return loss(d(g(z, train=True), train=False)), base.split(g)[2]

  def step(state, key, data):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    real = base.minibatch(k1, data, bs) * 2 - 1
    prior = nnx.merge(gdefs['g'], state.params['g'], state.rest['g']).prior
    z = prior.sample(k2, bs)
    (dl, d_rest), grads = jax.value_and_grad(d_loss, has_aux=True)(
        state.params['d'], state, real, z, k3)
    state = base.apply_grads(base.with_rest(state, 'd', d_rest), txs, 'd', grads)
    z2 = prior.sample(k4, bs)
    (gl, g_rest), grads = jax.value_and_grad(g_loss, has_aux=True)(state.params['g'], state, z2)
    state = base.apply_grads(base.with_rest(state, 'g', g_rest), txs, 'g', grads)
    return state, jnp.stack([dl, gl])
  return step


def make_sampler(recipe, preset, modules, image_shape, per_dispatch=None):
  """Generator images of latents from its prior, in [0, 1]."""
  del recipe, preset, image_shape, per_dispatch
  gdef, p, r = base.split(modules['g'])

  def draw(key, n):
    g = nnx.merge(gdef, p, r)
    return (g(g.sample_latent(key, n), train=False) + 1) / 2
  return jax.jit(draw, static_argnums=1)


def pretraining(recipe, preset):
  """The VAE whose decoder the generator starts from: the generator's decoder (its knobs, width
  and latent size), the ELBO (beta 1), preset.gan_pretrain_steps steps, its ex-post prior fitted
  as a zoo VAE's. None without pretraining.

  Why: within the quick preset's budget, adversarial training from a random generator drew
  strokes, not digits (0.11-0.26 of real digits' recognisable rate, after some 40 variants);
  from the decoder the adversarial steps sharpen digits a VAE draws blurred
  (docs/experiments.md, the zoo section).
  """
  if not preset.gan_pretrain_steps:
    return None
  return (dataclasses.replace(recipe, name=recipe.training_name + '-decoder', family='vae',
                              loss='elbo', beta=1.0, shares_training_with=None),
          recipes.replace_preset(preset, steps={'vae': preset.gan_pretrain_steps},
                                 width={'vae': preset.width['gan']},
                                 vae_latent_dim=preset.latent_dim, ema_decay={}))


def start_from(modules: dict, pretrained: dict) -> None:
  modules['g'].start_from(pretrained['vae'])


FAMILY = base.Family('gan', sampled='g', build=build, optimizers=optimizers, make_step=make_step,
                     make_sampler=make_sampler, pretraining=pretraining, start_from=start_from)
