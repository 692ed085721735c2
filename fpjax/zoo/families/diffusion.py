"""DDPMs: a small U-Net predicting eps or v on Ho et al.'s linear schedule, Min-SNR weighted;
class-conditional with classifier-free guidance when the preset sets diffusion_guidance;
sampled by the respaced ancestral (DDPM) or the DDIM (eta = 0) sampler, one scan on GPU/TPU.
"""
from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fpjax.models import training
from fpjax.zoo import models
from fpjax.zoo import recipes
from fpjax.zoo.families import base

# Min-SNR-gamma weighting (Hang et al. 2023) of the DDPM's loss (diffusion_target); inf would be
# the plain eps MSE. With eps-prediction at the quick preset it cut the Frechet distance of DDIM
# samples 45 -> 19 (docs/experiments.md).
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


def build(recipe, preset, image_shape, rngs, num_classes=0) -> dict:
  """num_classes: the real labels' (the class embedding of a class-conditional DDPM)."""
  return {'unet': models.UNet(image_shape, preset.width['diffusion'], recipe.upsampling,
                              recipe.normalization, recipe.nonlinearity, rngs=rngs,
                              num_classes=num_classes if needs_labels(preset) else 0)}


def optimizers(recipe, preset, lr) -> dict:
  del recipe, preset
  return {'unet': optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))}


def needs_labels(preset) -> bool:
  return recipes.class_conditional(preset)


def make_step(recipe, preset, gdefs: dict, txs: dict):
  """One step on the Min-SNR-weighted eps or v MSE at uniform timesteps; losses [mse]."""
  bs = preset.batch_size
  alpha_bar = ddpm_schedule(preset.diffusion_timesteps)
  conditional = needs_labels(preset)

  def loss_fn(p, rest, xt, t, y, target, w):
    unet = nnx.merge(gdefs['unet'], p, rest, copy=True)
    mse = jnp.mean((unet(xt, t, train=True, y=y) - target) ** 2, axis=(1, 2, 3))
    return jnp.mean(w * mse), base.split(unet)[2]

  def step(state, key, data):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    if conditional:  # the "no class" label for LABEL_DROPOUT of the batch: f(x) for the guidance
      x0, y = base.minibatch(k1, data, bs)
      num_classes = nnx.merge(gdefs['unet'], state.params['unet'],
                              state.rest['unet']).num_classes
      y = jnp.where(jax.random.uniform(k4, (bs,)) < LABEL_DROPOUT, num_classes, y)
    else:
      x0, y = base.minibatch(k1, data, bs), None
    x0 = x0 * 2 - 1
    t = jax.random.randint(k2, (bs,), 0, preset.diffusion_timesteps)
    eps = jax.random.normal(k3, x0.shape)
    ab = alpha_bar[t][:, None, None, None]
    xt = jnp.sqrt(ab) * x0 + jnp.sqrt(1 - ab) * eps
    target, w = diffusion_target(recipe.loss, x0, eps, alpha_bar[t])
    (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params['unet'], state.rest['unet'], xt, t, y, target, w)
    state = base.apply_grads(base.with_rest(state, 'unet', rest), txs, 'unet', grads)
    return state, loss[None]
  return step


def ddpm_sampler(recipe, preset):
  """(init, step, num_steps) of the respaced ancestral (DDPM) or DDIM (eta = 0) sampler.

  init(key, n, shape, num_classes) -> ((x_T, y), noise key); step((x, y), j, noise_key,
  graphdef, params, rest) -> ((x, y), None) is denoising step j (from t = T-1 down); StepLoop
  runs the steps, one scan on GPU/TPU.

  Both are exact for an exact eps or v (tests/test_zoo.py checks them on Gaussian data, and
  the classifier-free guidance of a class-conditional U-Net). A quick DDPM's DDIM samples are
  as good as its ancestral ones with 10-20 steps and far worse with 50-100 (0.59 of real digits'
  recognisable rate at 20 steps, 0.39 at 50, 0.34 at 100): the deterministic sampler keeps the
  errors of the network's output at mid noise, which the ancestral sampler's fresh noise washes
  out, and more steps keep more of them (docs/experiments.md, the zoo section).
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


def make_sampler(recipe, preset, modules, image_shape, per_dispatch=None):
  """draw(key, n): the sampler's denoising steps from x_T, as images in [0, 1];
  per_dispatch: denoising steps per call from Python (training.steps_per_dispatch)."""
  init, step, k = ddpm_sampler(recipe, preset)
  unet = modules['unet']
  gdef, p, r = base.split(unet)
  jinit = jax.jit(init, static_argnums=(1, 2, 3))
  loop = training.StepLoop(lambda x, j, key, p, r: step(x, j, key, gdef, p, r),
                           per_dispatch=per_dispatch)

  def draw(key, n):
    x, knoise = jinit(key, n, tuple(image_shape), unet.num_classes)
    (x, _), _ = loop.run(x, (np.int32(j) for j in range(k)), knoise, p, r)
    return (x + 1) / 2
  return draw


FAMILY = base.Family('diffusion', sampled='unet', build=build, optimizers=optimizers,
                     make_step=make_step, make_sampler=make_sampler, needs_labels=needs_labels)
