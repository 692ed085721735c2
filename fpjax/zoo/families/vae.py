"""VAEs: a convolutional encoder and a Bernoulli decoder trained on the (beta-)ELBO, sampled from
a Gaussian mixture fitted to the aggregate posterior after training (fit_ex_post_prior).
"""
from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn import mixture
import threadpoolctl

from fpjax.zoo import models
from fpjax.zoo.families import base

# Components of the Gaussian mixture a VAE (and a GAN that starts from one) samples from, fitted
# to its aggregate posterior after training (fit_ex_post_prior). With N(0, I) a quick VAE decodes
# many latents from the prior's holes (the aggregate posterior does not fill it) into blends of
# digits.
PRIOR_COMPONENTS = 10
PRIOR_REG = 1e-4  # added to each component's covariance (keeps every component full rank)


def build(recipe, preset, image_shape, rngs, num_classes=0) -> dict:
  del num_classes
  return {'vae': models.VAE(preset.vae_latent_dim, image_shape, preset.width['vae'],
                            recipe.upsampling, recipe.normalization, recipe.nonlinearity,
                            rngs=rngs, prior_components=PRIOR_COMPONENTS)}


def optimizers(recipe, preset, lr) -> dict:
  del recipe, preset
  return {'vae': optax.adam(lr)}


def make_step(recipe, preset, gdefs: dict, txs: dict):
  """One step on the negative beta-ELBO (nats per image) of a minibatch; losses [elbo]."""
  bs = preset.batch_size

  def loss_fn(p, rest, x, key):
    vae = nnx.merge(gdefs['vae'], p, rest, copy=True)
    mu, logvar = vae.encode(x)
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape)
    logits = vae.decode_logits(z, train=True)
    rec = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, x), axis=(1, 2, 3))
    kl = 0.5 * jnp.sum(jnp.exp(logvar) + mu ** 2 - 1 - logvar, axis=-1)
    return jnp.mean(rec + recipe.beta * kl), base.split(vae)[2]

  def step(state, key, data):
    k1, k2 = jax.random.split(key)
    x = base.minibatch(k1, data, bs)
    (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params['vae'], state.rest['vae'], x, k2)
    state = base.apply_grads(base.with_rest(state, 'vae', rest), txs, 'vae', grads)
    return state, loss[None]
  return step


def make_sampler(recipe, preset, modules, image_shape, per_dispatch=None):
  """The decoder's mean image of latents from the fitted prior."""
  del recipe, preset, image_shape, per_dispatch
  gdef, p, r = base.split(modules['vae'])

  def draw(key, n):
    vae = nnx.merge(gdef, p, r)
    return jax.nn.sigmoid(vae.decode_logits(vae.sample_latent(key, n), train=False))
  return jax.jit(draw, static_argnums=1)


def fit_ex_post_prior(vae: models.VAE, real_images: np.ndarray, seed: int,
                      batch_size: int = 500) -> None:
  """Sets the VAE's sampling prior to a Gaussian mixture fitted to its aggregate posterior.

  The mixture is fitted to one draw z ~ q(z | x) = N(mu(x), diag(exp(logvar(x)))) per real
  image: a fit to the means mu(x) alone would shrink the latent dimensions the posterior
  leaves at the prior (mu ~ 0, variance ~ 1) to a point, and the decoder was trained on draws.
  """
  k = vae.prior.log_weights.shape[0]
  if k == 1:
    return  # N(0, I)
  encode = jax.jit(vae.encode)
  data = np.asarray(real_images, np.float32) / 255.0
  mu, logvar = (np.concatenate(parts).astype(np.float64) for parts in zip(
      *(encode(data[i:i + batch_size]) for i in range(0, len(data), batch_size))))
  eps = np.random.default_rng(seed).standard_normal(mu.shape)
  # scikit-learn's EM (float64, k-means initialisation, seeded): deterministic for a seed. On one
  # BLAS/OpenMP thread: the zoo trains in two worker processes on two cores, where the threaded
  # k-means and BLAS spin against the other worker (a 10 x 32 fit: 0.8 s on one thread, 3.6 s
  # on two on the idle 2-core CPU, 36 s beside a zoo build), and the fit is the same.
  with threadpoolctl.threadpool_limits(1):
    gm = mixture.GaussianMixture(k, covariance_type='full', reg_covar=PRIOR_REG, max_iter=200,
                                 random_state=seed).fit(mu + np.exp(0.5 * logvar) * eps)
  vae.prior.log_weights[...] = jnp.asarray(np.log(gm.weights_), jnp.float32)
  vae.prior.means[...] = jnp.asarray(gm.means_, jnp.float32)
  vae.prior.chols[...] = jnp.asarray(np.linalg.cholesky(gm.covariances_), jnp.float32)


def after_training(modules: dict, real_images: np.ndarray, seed: int) -> None:
  fit_ex_post_prior(modules['vae'], real_images, seed)


FAMILY = base.Family('vae', sampled='vae', build=build, optimizers=optimizers,
                     make_step=make_step, make_sampler=make_sampler,
                     after_training=after_training)
