"""Training (optax, orbax checkpoints with resume) and seeded sampling for every zoo family.

Training is a pure function of (recipe, preset, real images, seed): the minibatch and noise of
step s come from `fold_in(key, s)` (the batch is drawn on the device), so a run interrupted and
resumed from the latest orbax checkpoint reaches bit-identical weights and losses. A checkpoint
is written after every `preset.chunk` steps. Within a chunk, steps run
`training.steps_per_dispatch()` per call from Python: one jitted `lax.scan` over that many
steps on GPU/TPU, a Python loop over one jitted step on the CPU (where it is faster; see
benchmarks/training_loops.py). Both give the same weights up to float rounding. Sampling
follows the same rule: a DDPM/DDIM sampler's denoising steps are one scan on GPU/TPU.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from sklearn import mixture
import threadpoolctl

from fpjax.models import training
from fpjax.zoo import models
from fpjax.zoo.recipes import Preset, Recipe


def _split(m):
  return nnx.split(m, nnx.Param, ...)


def build_modules(recipe: Recipe, preset: Preset, image_shape, seed: int,
                  num_classes: int = 0) -> dict:
  """The recipe's freshly initialised modules; num_classes: the real labels' (a class-conditional
  DDPM's embedding, when preset.diffusion_guidance is set)."""
  rngs = nnx.Rngs(params=seed)
  w = preset.width[recipe.family]
  if recipe.family == 'gan':
    return {'g': models.Generator(preset.latent_dim, image_shape, w, recipe.upsampling,
                                  recipe.normalization, recipe.nonlinearity, rngs=rngs,
                                  prior_components=PRIOR_COMPONENTS if preset.gan_pretrain_steps
                                  else 1),
            'd': models.Discriminator(image_shape, w, recipe.disc_normalization, rngs=rngs)}
  if recipe.family == 'vae':
    return {'vae': models.VAE(preset.vae_latent_dim, image_shape, w, recipe.upsampling,
                              recipe.normalization, recipe.nonlinearity, rngs=rngs,
                              prior_components=PRIOR_COMPONENTS)}
  if recipe.family == 'flow':
    return {'flow': models.Flow(image_shape, w, preset.flow_steps_per_scale, recipe.normalization,
                                recipe.nonlinearity, recipe.permutation, rngs=rngs)}
  if recipe.family == 'diffusion':
    return {'unet': models.UNet(image_shape, w, recipe.upsampling, recipe.normalization,
                                recipe.nonlinearity, rngs=rngs,
                                num_classes=num_classes if preset.class_conditional_diffusion
                                else 0)}
  raise ValueError(f'recipe {recipe.name}: unknown family {recipe.family!r}.')


# Components of the Gaussian mixture a VAE (and a GAN that starts from one) samples from, fitted
# to its aggregate posterior after training (fit_ex_post_prior). With N(0, I) a quick VAE decodes
# many latents from the prior's holes (the aggregate posterior does not fill it) into blends of
# digits.
PRIOR_COMPONENTS = 10
PRIOR_REG = 1e-4  # added to each component's covariance (keeps every component full rank)


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


def pretrain_generator(recipe: Recipe, preset: Preset, real_images: np.ndarray, seed: int,
                       ckpt_dir: str, progress=None) -> models.VAE:
  """Trains a GAN recipe's generator as the decoder of a VAE, as train() trains a zoo VAE.

  The VAE has the generator's decoder (its upsampling, normalization, nonlinearity, width and
  latent size), the ELBO (beta 1) and preset.gan_pretrain_steps steps; its ex-post prior is
  fitted as a zoo VAE's. The GAN then starts from this decoder and samples this prior
  (models.Generator.start_from). Why: within the quick preset's budget, adversarial training
  from a random generator drew strokes, not digits (0.11-0.26 of real digits' recognisable rate,
  after some 40 variants); from the decoder the adversarial steps sharpen digits a VAE draws
  blurred (see the README's zoo section). Checkpointed and resumed like any training.
  """
  vae_recipe = dataclasses.replace(recipe, name=recipe.training_name + '-decoder', family='vae',
                                   loss='elbo', beta=1.0, shares_training_with=None)
  vae_preset = dataclasses.replace(
      preset, steps={'vae': preset.gan_pretrain_steps}, width={'vae': preset.width['gan']},
      vae_latent_dim=preset.latent_dim, ema_decay={})
  modules, _, _ = train(vae_recipe, vae_preset, real_images, seed, ckpt_dir, progress)
  return modules['vae']


LEARNING_RATES = {'gan': 5e-4, 'vae': 2e-3, 'flow': 3e-3, 'diffusion': 2e-3}


def _optimizers(recipe: Recipe, preset: Preset) -> dict:
  lr = preset.lr.get(recipe.family, LEARNING_RATES[recipe.family])
  if recipe.family == 'gan':
    b2 = 0.9 if recipe.loss == 'wgan_gp' else 0.999
    return {'g': optax.adam(lr, b1=0.5, b2=b2), 'd': optax.adam(lr, b1=0.5, b2=b2)}
  if recipe.family == 'vae':
    return {'vae': optax.adam(lr)}
  if recipe.family == 'flow':
    # Warm-up then cosine decay: short flow trainings end far better annealed than at a fixed rate.
    total = max(preset.steps['flow'], 1)
    lr = optax.warmup_cosine_decay_schedule(0.0, lr, max(total // 20, 1), total)
    return {'flow': optax.chain(optax.clip_by_global_norm(10.0), optax.adam(lr))}
  return {'unet': optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))}


# Min-SNR-gamma weighting (Hang et al. 2023) of the DDPM's loss (diffusion_target); inf would be
# the plain eps MSE. With eps-prediction at the quick preset it cut the Frechet distance of DDIM
# samples 45 -> 19 (see the README).
MIN_SNR_GAMMA = 5.0
# Share of a class-conditional DDPM's training labels replaced by "no class" (Ho & Salimans 2022).
LABEL_DROPOUT = 0.1


def ddpm_schedule(timesteps: int):
  """alpha_bar[t], t = 0..T-1, of Ho et al.'s linear betas (1e-4 .. 0.02 at T = 1000)."""
  scale = 1000.0 / timesteps
  betas = jnp.linspace(1e-4 * scale, 0.02 * scale, timesteps, dtype=jnp.float32)
  return jnp.cumprod(1.0 - betas)


def min_snr_weights(alpha_bar, gamma: float):
  """Weights of the eps MSE at alpha_bar: min(SNR, gamma) / SNR, SNR = alpha_bar / (1 - alpha_bar).

  Clean steps (SNR > gamma) are down-weighted: their eps is hard to predict and matters little.
  """
  snr = alpha_bar / (1.0 - alpha_bar)
  return jnp.minimum(snr, gamma) / snr


def diffusion_target(loss: str, x0, eps, alpha_bar):
  """(target, weight) of the U-Net's output at x_t = sqrt(a) x0 + sqrt(1 - a) eps, a = alpha_bar.

  'eps': the noise, weighted min(SNR, gamma) / SNR. 'v': v = sqrt(a) eps - sqrt(1 - a) x0
  (Salimans & Ho 2022), weighted min(SNR, gamma) / (SNR + 1): both weight the implied x0 error
  by min(SNR, gamma) (Min-SNR, Hang et al. 2023). Why v: x0 = sqrt(a) x_t - sqrt(1 - a) v is read
  off the output at every noise level, where eps-prediction divides the error of eps by
  sqrt(a) ~ 0.006 at t = T; a small U-Net gets the coarse shape of a digit right sooner.
  """
  w = min_snr_weights(alpha_bar, MIN_SNR_GAMMA)
  if loss == 'v':
    a = alpha_bar.reshape((-1,) + (1,) * (x0.ndim - 1))
    return jnp.sqrt(a) * eps - jnp.sqrt(1 - a) * x0, w * alpha_bar
  if loss == 'eps':
    return eps, w
  raise ValueError(f"unknown diffusion loss {loss!r}; expected 'eps' or 'v'.")


def _gan_losses(kind, d_real, d_fake):
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
  raise ValueError(f'unknown GAN loss {kind!r}.')


def make_step(recipe: Recipe, preset: Preset, gdefs: dict, txs: dict) -> Callable:
  """Returns step(state, key, data) -> (state, loss); data is float32 [N,H,W,C] in [0,1], for a
  class-conditional DDPM (images, int labels [N])."""
  bs = preset.batch_size

  def batch(key, data):  # data: images, or (images, labels)
    idx = jax.random.randint(key, (bs,), 0, jax.tree.leaves(data)[0].shape[0])
    return jax.tree.map(lambda a: a[idx], data)

  def apply_grads(state, name, grads):
    updates, opt = txs[name].update(grads, state['opt'][name], state['params'][name])
    state['params'][name] = optax.apply_updates(state['params'][name], updates)
    state['opt'][name] = opt

  if recipe.family == 'gan':
    def step(state, key, data):
      k1, k2, k3, k4 = jax.random.split(key, 4)
      real = batch(k1, data) * 2 - 1
      prior = nnx.merge(gdefs['g'], state['params']['g'], state['rest']['g']).prior
      z = prior.sample(k2, bs)

      def d_loss(dp):
        g = nnx.merge(gdefs['g'], state['params']['g'], state['rest']['g'], copy=True)
        d = nnx.merge(gdefs['d'], dp, state['rest']['d'], copy=True)
        fake = jax.lax.stop_gradient(g(z, train=True))
        loss, _ = _gan_losses(recipe.loss, d(real, train=True), d(fake, train=True))
        if recipe.loss == 'wgan_gp':
          eps = jax.random.uniform(k3, (bs, 1, 1, 1))
          mix = eps * real + (1 - eps) * fake
          grad = jax.vmap(jax.grad(lambda x: d(x[None], train=False)[0]))(mix)
          norm = jnp.sqrt(jnp.sum(grad ** 2, axis=(1, 2, 3)) + 1e-12)
          loss = loss + 10.0 * jnp.mean((norm - 1) ** 2)
        return loss, _split(d)[2]

      (dl, d_rest), grads = jax.value_and_grad(d_loss, has_aux=True)(state['params']['d'])
      state['rest']['d'] = d_rest
      apply_grads(state, 'd', grads)
      z2 = prior.sample(k4, bs)

      def g_loss(gp):
        g = nnx.merge(gdefs['g'], gp, state['rest']['g'], copy=True)
        d = nnx.merge(gdefs['d'], state['params']['d'], state['rest']['d'], copy=True)
        _, gl = _gan_losses(recipe.loss, jnp.zeros(1), jnp.zeros(1))
        return gl(d(g(z2, train=True), train=False)), _split(g)[2]

      (gl, g_rest), grads = jax.value_and_grad(g_loss, has_aux=True)(state['params']['g'])
      state['rest']['g'] = g_rest
      apply_grads(state, 'g', grads)
      return state, jnp.stack([dl, gl])
    return step

  if recipe.family == 'vae':
    def step(state, key, data):
      k1, k2 = jax.random.split(key)
      x = batch(k1, data)

      def loss_fn(p):
        vae = nnx.merge(gdefs['vae'], p, state['rest']['vae'], copy=True)
        mu, logvar = vae.encode(x)
        z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(k2, mu.shape)
        logits = vae.decode_logits(z, train=True)
        rec = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, x), axis=(1, 2, 3))
        kl = 0.5 * jnp.sum(jnp.exp(logvar) + mu ** 2 - 1 - logvar, axis=-1)
        return jnp.mean(rec + recipe.beta * kl), _split(vae)[2]

      (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params']['vae'])
      state['rest']['vae'] = rest
      apply_grads(state, 'vae', grads)
      return state, loss[None]
    return step

  if recipe.family == 'flow':
    def step(state, key, data):
      k1, k2 = jax.random.split(key)
      x = jnp.round(batch(k1, data) * 255.0)
      x01 = (x + jax.random.uniform(k2, x.shape)) / 256.0  # uniform dequantisation

      def loss_fn(p):
        flow = nnx.merge(gdefs['flow'], p, state['rest']['flow'], copy=True)
        return jnp.mean(flow.log_prob_bits_per_dim(x01))

      loss, grads = jax.value_and_grad(loss_fn)(state['params']['flow'])
      apply_grads(state, 'flow', grads)
      return state, loss[None]
    return step

  alpha_bar = ddpm_schedule(preset.diffusion_timesteps)
  conditional = preset.class_conditional_diffusion

  def step(state, key, data):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    if conditional:  # the "no class" label for LABEL_DROPOUT of the batch: f(x) for the guidance
      x0, y = batch(k1, data)
      num_classes = nnx.merge(gdefs['unet'], state['params']['unet'],
                              state['rest']['unet']).num_classes
      y = jnp.where(jax.random.uniform(k4, (bs,)) < LABEL_DROPOUT, num_classes, y)
    else:
      x0, y = batch(k1, data), None
    x0 = x0 * 2 - 1
    t = jax.random.randint(k2, (bs,), 0, preset.diffusion_timesteps)
    eps = jax.random.normal(k3, x0.shape)
    ab = alpha_bar[t][:, None, None, None]
    xt = jnp.sqrt(ab) * x0 + jnp.sqrt(1 - ab) * eps

    target, w = diffusion_target(recipe.loss, x0, eps, alpha_bar[t])

    def loss_fn(p):
      unet = nnx.merge(gdefs['unet'], p, state['rest']['unet'], copy=True)
      mse = jnp.mean((unet(xt, t, train=True, y=y) - target) ** 2, axis=(1, 2, 3))
      return jnp.mean(w * mse), _split(unet)[2]

    (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params']['unet'])
    state['rest']['unet'] = rest
    apply_grads(state, 'unet', grads)
    return state, loss[None]
  return step


def _checkpoint_manager(directory: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False))


# The module each family samples with (its weights are averaged when the preset asks for EMA).
SAMPLED = {'gan': 'g', 'vae': 'vae', 'flow': 'flow', 'diffusion': 'unet'}


def _train_loop(step: Callable, per_dispatch: int | None, ema_decay: float,
                sampled: str) -> training.StepLoop:
  """StepLoop over step indices i: step s of training uses fold_in(key, s) (drawn on device).

  With ema_decay > 0 it also keeps an exponential moving average of the sampled module's
  parameters, decay min(ema_decay, (1 + s) / (10 + s)) at step s (the warm-up lets a short
  training forget its random initialisation).
  """
  def run(state, i, key, data):
    state, loss = step(state, jax.random.fold_in(key, i), data)
    if ema_decay:
      d = jnp.minimum(ema_decay, (1.0 + i) / (10.0 + i))
      state['ema'] = jax.tree.map(lambda e, p: d * e + (1 - d) * p, state['ema'],
                                  state['params'][sampled])
    return state, loss
  return training.StepLoop(run, per_dispatch=per_dispatch)


def init_state(recipe: Recipe, preset: Preset, modules: dict) -> tuple[dict, dict, dict]:
  """(graphdefs, optimizers, initial training state) of the recipe's built modules.

  The state is {'params', 'rest', 'opt'} per module, plus 'ema' (a copy of the sampled
  module's parameters) when the preset's ema_decay for the family is > 0.
  """
  txs = _optimizers(recipe, preset)
  gdefs, params, rest = {}, {}, {}
  for k, m in modules.items():
    gdefs[k], params[k], rest[k] = _split(m)
  state = {'params': params, 'rest': rest,
           'opt': {k: txs[k].init(params[k]) for k in modules}}
  if preset.ema_decay.get(recipe.family, 0.0):
    state['ema'] = jax.tree.map(jnp.copy, params[SAMPLED[recipe.family]])
  return gdefs, txs, state


def train_loop(recipe: Recipe, preset: Preset, gdefs: dict, txs: dict,
               per_dispatch: int | None = None) -> training.StepLoop:
  """The loop train() runs: loop.run(state, step indices, key, data) (see _train_loop);
  loop.scan is its jitted lax.scan (the GPU/TPU path)."""
  return _train_loop(make_step(recipe, preset, gdefs, txs), per_dispatch,
                     preset.ema_decay.get(recipe.family, 0.0), SAMPLED[recipe.family])


def train(recipe: Recipe, preset: Preset, real_images: np.ndarray, seed: int, ckpt_dir: str,
          progress: Callable[[int], None] | None = None,
          per_dispatch: int | None = None,
          real_labels: np.ndarray | None = None) -> tuple[dict, int, float]:
  """Trains (or resumes) one recipe; returns (modules, steps, final_loss).

  The sampled module (SAMPLED) carries the EMA of its parameters when the preset's ema_decay
  for the family is > 0.

  per_dispatch: steps per call from Python (default training.steps_per_dispatch(): 1 on the
  CPU, a scan of many on GPU/TPU); any value gives the same result up to float rounding.
  real_labels: int class labels of real_images, required by a class-conditional DDPM
  (preset.diffusion_guidance set); the classes are 0 .. max label.

  final_loss is the mean over the last chunk of the family's objective (GANs: generator loss;
  VAEs: negative beta-ELBO in nats per image; flows: bits per dimension; DDPM: Min-SNR-weighted
  eps or v MSE, diffusion_target). A VAE's sampling prior is then fitted to its aggregate
  posterior (fit_ex_post_prior).
  """
  image_shape = real_images.shape[1:]
  conditional = recipe.family == 'diffusion' and preset.class_conditional_diffusion
  if conditional and real_labels is None:
    raise ValueError(f'recipe {recipe.name}: preset {preset.name} trains class-conditional '
                     'DDPMs; give the real labels.')
  num_classes = int(np.max(real_labels)) + 1 if conditional else 0
  modules = build_modules(recipe, preset, image_shape, seed, num_classes)
  if recipe.family == 'gan' and preset.gan_pretrain_steps:
    modules['g'].start_from(pretrain_generator(recipe, preset, real_images, seed,
                                               ckpt_dir + '-decoder', progress))
  if recipe.family == 'flow':  # Glow's data-dependent actnorm init on a fixed, seeded batch
    rng = np.random.default_rng(seed)
    x = real_images[rng.choice(len(real_images), min(512, len(real_images)), replace=False)]
    x01 = (x.astype(np.float32) + rng.uniform(size=x.shape)) / 256.0
    modules['flow'].log_prob_bits_per_dim(jnp.asarray(x01, jnp.float32), init_actnorm=True)
  gdefs, txs, state = init_state(recipe, preset, modules)
  ema_decay = preset.ema_decay.get(recipe.family, 0.0)
  sampled = SAMPLED[recipe.family]
  leaves, treedef = jax.tree.flatten(state)
  total = preset.steps[recipe.family]
  chunk = min(preset.chunk, total)
  if total % chunk:
    raise ValueError(f'preset {preset.name}: steps {total} not a multiple of chunk {chunk}.')

  mngr = _checkpoint_manager(ckpt_dir)
  start, chunk_losses = 0, []
  latest = mngr.latest_step()
  if latest is not None:
    restored = mngr.restore(latest, args=ocp.args.Composite(
        state=ocp.args.StandardRestore({str(i): l for i, l in enumerate(leaves)}),
        meta=ocp.args.JsonRestore()))
    state = jax.tree.unflatten(treedef, [jnp.asarray(restored['state'][str(i)])
                                         for i in range(len(leaves))])
    start, chunk_losses = int(restored['meta']['step']), list(restored['meta']['chunk_losses'])
    logging.info('zoo: %s resumes from step %d', recipe.training_name, start)

  loop = train_loop(recipe, preset, gdefs, txs, per_dispatch)
  key = jax.random.key(seed)
  data = jnp.asarray(real_images, jnp.float32) / 255.0
  if conditional:
    data = (data, jnp.asarray(real_labels, jnp.int32))
  for s in range(start, total, chunk):
    state, losses = loop.run(state, (np.int32(i) for i in range(s, s + chunk)), key, data)
    loss = np.mean(np.asarray(losses), axis=0)
    if not np.all(np.isfinite(loss)):
      raise FloatingPointError(f'zoo: {recipe.training_name} has non-finite loss {loss} at step '
                               f'{s + chunk}.')
    chunk_losses.append(float(loss[-1]))
    flat = jax.tree.leaves(state)
    mngr.save(s + chunk, args=ocp.args.Composite(
        state=ocp.args.StandardSave({str(i): l for i, l in enumerate(flat)}),
        meta=ocp.args.JsonSave({'step': s + chunk, 'chunk_losses': chunk_losses})))
    if progress:
      progress(chunk)
  mngr.wait_until_finished()
  mngr.close()
  for k in modules:
    nnx.update(modules[k], state['ema'] if ema_decay and k == sampled else state['params'][k],
               state['rest'][k])
  if recipe.family == 'vae':
    fit_ex_post_prior(modules['vae'], real_images, seed)
  return modules, total, chunk_losses[-1]


# ----------------------------------------------------------------------------- sampling


def _sample_fn(recipe: Recipe, preset: Preset, modules: dict):
  """Returns fn(key, n, image_shape) -> float images in [0, 1]; n and image_shape are static."""
  if recipe.family == 'gan':
    gdef, p, r = _split(modules['g'])

    def fn(key, n, image_shape):
      del image_shape
      g = nnx.merge(gdef, p, r)
      return (g(g.sample_latent(key, n), train=False) + 1) / 2
    return fn
  if recipe.family == 'vae':
    gdef, p, r = _split(modules['vae'])

    def fn(key, n, image_shape):
      del image_shape
      vae = nnx.merge(gdef, p, r)
      return jax.nn.sigmoid(vae.decode_logits(vae.sample_latent(key, n), train=False))  # mean
    return fn
  if recipe.family == 'flow':
    gdef, p, r = _split(modules['flow'])

    def fn(key, n, image_shape):
      del image_shape
      return nnx.merge(gdef, p, r).sample01(key, n, recipe.temperature)
    return fn

  raise ValueError(f'recipe {recipe.name}: the {recipe.family} family samples with _ddpm_sampler.')


def _ddpm_sampler(recipe: Recipe, preset: Preset):
  """(init, step, num_steps) of the respaced ancestral (DDPM) or DDIM (eta = 0) sampler.

  init(key, n, shape) -> (x_T, noise key); step(x, j, noise_key, params, rest) -> (x, None)
  is denoising step j (from t = T-1 down); StepLoop runs the steps, one scan on GPU/TPU.

  Both are exact for an exact eps or v (tests/test_zoo.py checks them on Gaussian data, and
  the classifier-free guidance of a class-conditional U-Net). A quick DDPM's DDIM samples are
  as good as its ancestral ones with 10-20 steps and far worse with 50-100 (0.59 of real digits'
  recognisable rate at 20 steps, 0.39 at 50, 0.34 at 100): the deterministic sampler keeps the
  errors of the network's output at mid noise, which the ancestral sampler's fresh noise washes
  out, and more steps keep more of them (see the README's zoo section).
  """
  T = preset.diffusion_timesteps
  k = preset.ancestral_steps if recipe.sampler == 'ancestral' else preset.ddim_steps
  seq = jnp.asarray(np.round(np.linspace(0, T - 1, k)).astype(np.int32))
  ab = ddpm_schedule(T)[seq]
  ab_prev = jnp.concatenate([jnp.ones(1), ab[:-1]])

  w = preset.diffusion_guidance

  def init(key, n, shape, num_classes):
    """(x_T, y), noise key; y: uniform class labels of a class-conditional DDPM, else None."""
    k0, k1, key = jax.random.split(key, 3)
    y = jax.random.randint(k1, (n,), 0, num_classes) if num_classes else None
    return (jax.random.normal(k0, (n,) + tuple(shape)), y), key

  def step(carry, j, key, gdef, p, r):
    x, y = carry
    unet = nnx.merge(gdef, p, r)
    n = x.shape[0]
    i = k - 1 - j
    a, a_prev = ab[i], ab_prev[i]
    t = jnp.full((n,), seq[i])
    if y is None:
      out = unet(x, t, train=False)
    else:  # classifier-free guidance: one call on [x with y, x with "no class"]
      both = unet(jnp.concatenate([x, x]), jnp.concatenate([t, t]), train=False,
                  y=jnp.concatenate([y, jnp.full_like(y, unet.num_classes)]))
      out = (1 + w) * both[:n] - w * both[n:]
    if recipe.loss == 'v':
      x0 = jnp.clip(jnp.sqrt(a) * x - jnp.sqrt(1 - a) * out, -1, 1)
    else:  # 'eps'
      x0 = jnp.clip((x - jnp.sqrt(1 - a) * out) / jnp.sqrt(a), -1, 1)
    if recipe.sampler == 'ddim':  # eta = 0: deterministic given x_T
      eps = (x - jnp.sqrt(a) * x0) / jnp.sqrt(1 - a)
      return (jnp.sqrt(a_prev) * x0 + jnp.sqrt(1 - a_prev) * eps, y), None
    beta = 1 - a / a_prev  # respaced ancestral step: sample q(x_prev | x_t, x0)
    mean = ((jnp.sqrt(a_prev) * beta / (1 - a)) * x0
            + (jnp.sqrt(1 - beta) * (1 - a_prev) / (1 - a)) * x)
    var = beta * (1 - a_prev) / (1 - a)
    noise = jax.random.normal(jax.random.fold_in(key, i), x.shape)
    return (mean + jnp.where(i > 0, jnp.sqrt(var), 0.0) * noise, y), None
  return init, step, k


def sample(recipe: Recipe, preset: Preset, modules: dict, num_samples: int, seed: int,
           image_shape, batch_size: int = 100, per_dispatch: int | None = None) -> np.ndarray:
  """Draws num_samples images (uint8 [N,H,W,C]); batch b uses fold_in(key(seed), b).

  per_dispatch: denoising steps per call from Python for DDPM/DDIM (as in train).
  """
  key = jax.random.key(seed)
  batches = [(b, min(batch_size, num_samples - start))
             for b, start in enumerate(range(0, num_samples, batch_size))]
  out = []
  if recipe.family == 'diffusion':
    init, step, k = _ddpm_sampler(recipe, preset)
    gdef, p, r = _split(modules['unet'])
    jinit = jax.jit(init, static_argnums=(1, 2, 3))
    loop = training.StepLoop(lambda x, j, key, p, r: step(x, j, key, gdef, p, r),
                             per_dispatch=per_dispatch)
    for b, n in batches:
      x, knoise = jinit(jax.random.fold_in(key, b), n, tuple(image_shape),
                        modules['unet'].num_classes)
      (x, _), _ = loop.run(x, (np.int32(j) for j in range(k)), knoise, p, r)
      out.append(np.asarray((x + 1) / 2))
  else:
    fn = _sample_fn(recipe, preset, modules)
    jfn = jax.jit(functools.partial(fn, image_shape=tuple(image_shape)), static_argnums=1)
    for b, n in batches:
      out.append(np.asarray(jfn(jax.random.fold_in(key, b), n)))
  x = np.concatenate(out)
  if not np.all(np.isfinite(x)):
    raise FloatingPointError(f'zoo: {recipe.name} produced non-finite samples.')
  return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
