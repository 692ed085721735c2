"""Generative models of the zoo in Flax NNX, with the paper's design choices as explicit knobs.

Knobs (the values tagged in zoo.json):
- upsampling:    'transposed' | 'nearest' | 'bilinear' | 'pixel_shuffle'
- normalization: 'batch' | 'layer' | 'group' | 'none' (generators, decoders, U-Nets);
                 'actnorm' | 'none' (flows); discriminators take 'spectral' | 'none'
- nonlinearity:  'relu' | 'leaky_relu' | 'silu'
Every module takes `train` explicitly (batch statistics, spectral-norm power iteration), so the
zoo trains with pure functions over `nnx.split` state.

Images are [N,H,W,C] with H, W divisible by 4 (28x28 MNIST, 8x8 digits).
"""
from __future__ import annotations

import math

from flax import nnx
import jax
import jax.numpy as jnp

UPSAMPLINGS = ('transposed', 'nearest', 'bilinear', 'pixel_shuffle')
NORMALIZATIONS = ('batch', 'layer', 'group', 'none')
NONLINEARITIES = ('relu', 'leaky_relu', 'silu')


def activation(kind: str):
  if kind == 'relu':
    return jax.nn.relu
  if kind == 'leaky_relu':
    return lambda x: jax.nn.leaky_relu(x, 0.2)
  if kind == 'silu':
    return jax.nn.silu
  raise ValueError(f'unknown nonlinearity {kind!r}; expected one of {NONLINEARITIES}.')


class Norm(nnx.Module):
  """Feature normalisation knob; 'layer' normalises over H, W and C (GroupNorm with 1 group)."""

  def __init__(self, kind: str, ch: int, *, rngs: nnx.Rngs):
    if kind not in NORMALIZATIONS:
      raise ValueError(f'unknown normalization {kind!r}; expected one of {NORMALIZATIONS}.')
    self.kind = kind
    if kind == 'batch':
      # momentum 0.9: short zoo trainings must still get usable running statistics.
      self.layer = nnx.BatchNorm(ch, momentum=0.9, rngs=rngs)
    elif kind == 'layer':
      self.layer = nnx.GroupNorm(ch, num_groups=1, rngs=rngs)
    elif kind == 'group':
      self.layer = nnx.GroupNorm(ch, num_groups=min(4, ch), rngs=rngs)

  def __call__(self, x, train: bool):
    if self.kind == 'none':
      return x
    if self.kind == 'batch':
      return self.layer(x, use_running_average=not train)
    return self.layer(x)


class Upsample(nnx.Module):
  """2x spatial upsampling by the chosen method, cin -> cout channels."""

  def __init__(self, kind: str, cin: int, cout: int, *, rngs: nnx.Rngs):
    if kind not in UPSAMPLINGS:
      raise ValueError(f'unknown upsampling {kind!r}; expected one of {UPSAMPLINGS}.')
    self.kind = kind
    if kind == 'transposed':
      self.conv = nnx.ConvTranspose(cin, cout, (4, 4), strides=(2, 2), padding='SAME', rngs=rngs)
    elif kind == 'pixel_shuffle':
      self.conv = nnx.Conv(cin, 4 * cout, (3, 3), rngs=rngs)
    else:
      self.conv = nnx.Conv(cin, cout, (3, 3), rngs=rngs)

  def __call__(self, x):
    n, h, w, c = x.shape
    if self.kind == 'transposed':
      return self.conv(x)
    if self.kind == 'pixel_shuffle':
      y = self.conv(x)
      co = y.shape[-1] // 4
      y = y.reshape(n, h, w, 2, 2, co).transpose(0, 1, 3, 2, 4, 5)
      return y.reshape(n, 2 * h, 2 * w, co)
    method = 'nearest' if self.kind == 'nearest' else 'bilinear'
    return self.conv(jax.image.resize(x, (n, 2 * h, 2 * w, c), method))


class Decoder(nnx.Module):
  """DCGAN-style generator / VAE decoder: z -> (H/4, W/4) -> 2x up -> 2x up -> image logits."""

  def __init__(self, latent_dim: int, image_shape, width: int, upsampling: str,
               normalization: str, nonlinearity: str, *, rngs: nnx.Rngs):
    h, w, c = image_shape
    self.s = (h // 4, w // 4)
    self.c2 = 2 * width
    self.fc = nnx.Linear(latent_dim, self.s[0] * self.s[1] * self.c2, rngs=rngs)
    self.n0 = Norm(normalization, self.c2, rngs=rngs)
    self.up1 = Upsample(upsampling, self.c2, width, rngs=rngs)
    self.n1 = Norm(normalization, width, rngs=rngs)
    self.up2 = Upsample(upsampling, width, width, rngs=rngs)
    self.n2 = Norm(normalization, width, rngs=rngs)
    self.out = nnx.Conv(width, c, (3, 3), rngs=rngs)
    self.act = activation(nonlinearity)

  def __call__(self, z, train: bool):
    x = self.fc(z).reshape(z.shape[0], self.s[0], self.s[1], self.c2)
    x = self.act(self.n0(x, train))
    x = self.act(self.n1(self.up1(x), train))
    x = self.act(self.n2(self.up2(x), train))
    return self.out(x)


class Discriminator(nnx.Module):
  """Two stride-2 convolutions and a linear critic; optional spectral normalisation."""

  def __init__(self, image_shape, width: int, normalization: str, *, rngs: nnx.Rngs):
    if normalization not in ('spectral', 'none'):
      raise ValueError(f"discriminator normalization must be 'spectral' or 'none', got "
                       f'{normalization!r}.')
    h, w, c = image_shape
    layers = [nnx.Conv(c, width, (4, 4), strides=(2, 2), rngs=rngs),
              nnx.Conv(width, 2 * width, (4, 4), strides=(2, 2), rngs=rngs),
              nnx.Linear((h // 4) * (w // 4) * 2 * width, 1, rngs=rngs)]
    self.spectral = normalization == 'spectral'
    if self.spectral:
      layers = [nnx.SpectralNorm(l, rngs=rngs) for l in layers]
    self.layers = nnx.List(layers)

  def _apply(self, layer, x, train):
    return layer(x, update_stats=train) if self.spectral else layer(x)

  def __call__(self, x, train: bool):
    x = jax.nn.leaky_relu(self._apply(self.layers[0], x, train), 0.2)
    x = jax.nn.leaky_relu(self._apply(self.layers[1], x, train), 0.2)
    return self._apply(self.layers[2], x.reshape(x.shape[0], -1), train)[:, 0]


class ExPostPrior(nnx.Variable):
  """A sampling prior's parameters: fitted after training, never by the optimizer."""


class LatentMixture(nnx.Module):
  """The latent prior a decoder samples from: a Gaussian mixture of `components` components
  (log weights, means, Cholesky factors of the covariances). Until fitted
  (fpjax.zoo.families.vae.fit_ex_post_prior) every component is N(0, I)."""

  def __init__(self, latent_dim: int, components: int):
    self.latent_dim = latent_dim
    self.log_weights = ExPostPrior(jnp.full((components,), -math.log(components)))
    self.means = ExPostPrior(jnp.zeros((components, latent_dim)))
    self.chols = ExPostPrior(jnp.tile(jnp.eye(latent_dim), (components, 1, 1)))

  def sample(self, key, n):
    """n latents: a component, then its Gaussian."""
    kc, kz = jax.random.split(key)
    comp = jax.random.categorical(kc, self.log_weights[...], shape=(n,))
    eps = jax.random.normal(kz, (n, self.latent_dim))
    return self.means[...][comp] + jnp.einsum('nij,nj->ni', self.chols[...][comp], eps)


class Generator(nnx.Module):
  """GAN generator: tanh of the Decoder, images in [-1, 1], latents from its LatentMixture
  (N(0, I) unless it starts from a pretrained VAE: start_from)."""

  def __init__(self, latent_dim, image_shape, width, upsampling, normalization, nonlinearity, *,
               rngs, prior_components: int = 1):
    self.prior = LatentMixture(latent_dim, prior_components)
    self.decoder = Decoder(latent_dim, image_shape, width, upsampling, normalization,
                           nonlinearity, rngs=rngs)

  def __call__(self, z, train: bool):
    return jnp.tanh(self.decoder(z, train))  # images in [-1, 1]

  def sample_latent(self, key, n):
    return self.prior.sample(key, n)

  @property
  def latent_dim(self) -> int:
    return self.prior.latent_dim

  def start_from(self, vae: 'VAE') -> None:
    """Takes a trained VAE's decoder (same architecture) and fitted prior. The VAE's image is
    sigmoid(l) of its logits l and this generator's is (tanh(l') + 1) / 2 = sigmoid(2 l'), so
    halving the output convolution makes both decode every latent to the same image."""
    nnx.update(self.decoder, nnx.state(vae.decoder))
    nnx.update(self.prior, nnx.state(vae.prior))
    out = self.decoder.out
    out.kernel[...] = 0.5 * out.kernel[...]
    out.bias[...] = 0.5 * out.bias[...]


class VAE(nnx.Module):
  """Convolutional VAE with a Bernoulli decoder over pixels in [0, 1].

  Samples decode latents drawn from a Gaussian mixture of `prior_components` components
  (log weights, means, Cholesky factors of the covariances), the ex-post density estimate of
  Ghosh et al. (2020) once fitted to posterior draws z ~ q(z | x) of the training images
  (fpjax.zoo.families.vae.fit_ex_post_prior); until then every component is N(0, I), the
  ELBO's prior.
  """

  def __init__(self, latent_dim, image_shape, width, upsampling, normalization, nonlinearity, *,
               rngs, prior_components: int = 1):
    h, w, c = image_shape
    self.prior = LatentMixture(latent_dim, prior_components)
    self.act = activation(nonlinearity)
    self.e1 = nnx.Conv(c, width, (3, 3), strides=(2, 2), rngs=rngs)
    self.e2 = nnx.Conv(width, 2 * width, (3, 3), strides=(2, 2), rngs=rngs)
    self.e3 = nnx.Linear((h // 4) * (w // 4) * 2 * width, 2 * latent_dim, rngs=rngs)
    self.decoder = Decoder(latent_dim, image_shape, width, upsampling, normalization,
                           nonlinearity, rngs=rngs)

  def encode(self, x):
    y = self.act(self.e2(self.act(self.e1(x))))
    mu, logvar = jnp.split(self.e3(y.reshape(y.shape[0], -1)), 2, axis=-1)
    return mu, jnp.clip(logvar, -10.0, 10.0)

  def decode_logits(self, z, train: bool):
    return self.decoder(z, train)

  def sample_latent(self, key, n):
    return self.prior.sample(key, n)

  @property
  def latent_dim(self) -> int:
    return self.prior.latent_dim


# ----------------------------------------------------------------------------- flow


def squeeze(x):
  n, h, w, c = x.shape
  x = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h // 2, w // 2, 4 * c)


def unsqueeze(x):
  n, h, w, c = x.shape
  x = x.reshape(n, h, w, 2, 2, c // 4).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, 2 * h, 2 * w, c // 4)


class FlowStep(nnx.Module):
  """Glow/RealNVP step: [actnorm] -> permutation (1x1 invertible conv or reverse) -> affine
  coupling."""

  def __init__(self, ch, hidden, normalization, nonlinearity, permutation, *, rngs):
    if normalization not in ('actnorm', 'none'):
      raise ValueError(f"flow normalization must be 'actnorm' or 'none', got {normalization!r}.")
    if permutation not in ('invconv', 'reverse'):
      raise ValueError(f"flow permutation must be 'invconv' or 'reverse', got {permutation!r}.")
    self.actnorm = normalization == 'actnorm'
    self.permutation = permutation
    if self.actnorm:
      self.an_logs = nnx.Param(jnp.zeros((ch,)))
      self.an_bias = nnx.Param(jnp.zeros((ch,)))
    if permutation == 'invconv':
      q, _ = jnp.linalg.qr(jax.random.normal(rngs.params(), (ch, ch)))
      self.w = nnx.Param(q)
    self.act = activation(nonlinearity)
    self.c1 = nnx.Conv(ch // 2 + 2, hidden, (3, 3), rngs=rngs)
    self.c2 = nnx.Conv(hidden, hidden, (1, 1), rngs=rngs)
    # Zero-initialised last layer: every coupling starts as the identity (stable early training).
    self.c3 = nnx.Conv(hidden, ch, (3, 3), kernel_init=nnx.initializers.zeros, rngs=rngs)
    self.s_scale = nnx.Param(jnp.ones((ch // 2,)))

  def _st(self, xa):
    n, hh, ww, _ = xa.shape
    # Coordinate channels: the coupling net may depend on position (digits are centred); any
    # function of xa keeps the coupling invertible with the same log-determinant.
    yy, xx = jnp.meshgrid(jnp.linspace(-1, 1, hh), jnp.linspace(-1, 1, ww), indexing='ij')
    coords = jnp.broadcast_to(jnp.stack([yy, xx], -1), (n, hh, ww, 2)).astype(xa.dtype)
    h = self.act(self.c2(self.act(self.c1(jnp.concatenate([xa, coords], -1)))))
    raw, t = jnp.split(self.c3(h), 2, axis=-1)
    # RealNVP's bounded scale s*tanh: it can expand as well as contract. (Glow's sigmoid scale
    # only contracts, which leaves a flow without actnorm unable to spread the narrow logit
    # background to unit variance.)
    log_s = self.s_scale[...] * jnp.tanh(raw)
    return log_s, t

  def forward(self, x, init_actnorm: bool = False):
    """x -> z with log|det dz/dx| per example.

    init_actnorm: Glow's data-dependent initialisation (eager, once, before training): actnorm
    starts by mapping this batch to zero mean and unit variance per channel.
    """
    hw = x.shape[1] * x.shape[2]
    logdet = jnp.zeros(x.shape[0])
    if self.actnorm and init_actnorm:
      self.an_bias[...] = -jnp.mean(x, axis=(0, 1, 2))
      self.an_logs[...] = -jnp.log(jnp.std(x, axis=(0, 1, 2)) + 1e-6)
    if self.actnorm:
      x = (x + self.an_bias[...]) * jnp.exp(self.an_logs[...])
      logdet += hw * jnp.sum(self.an_logs[...])
    if self.permutation == 'invconv':
      x = x @ self.w[...]
      logdet += hw * jnp.linalg.slogdet(self.w[...])[1]
    else:
      x = x[..., ::-1]
    xa, xb = jnp.split(x, 2, axis=-1)
    log_s, t = self._st(xa)
    xb = (xb + t) * jnp.exp(log_s)
    logdet += jnp.sum(log_s, axis=(1, 2, 3))
    return jnp.concatenate([xa, xb], axis=-1), logdet

  def inverse(self, z):
    za, zb = jnp.split(z, 2, axis=-1)
    log_s, t = self._st(za)
    x = jnp.concatenate([za, zb * jnp.exp(-log_s) - t], axis=-1)
    if self.permutation == 'invconv':
      x = x @ jnp.linalg.inv(self.w[...])
    else:
      x = x[..., ::-1]
    if self.actnorm:
      x = x * jnp.exp(-self.an_logs[...]) - self.an_bias[...]
    return x


class Flow(nnx.Module):
  """Two-scale normalizing flow on logit-transformed, uniformly dequantised pixels, with a
  learned per-position Gaussian prior on z.

  Exact log-likelihood of the discrete image x (uint8) under uniform dequantisation:
  log p(x) >= E_u log p_cont((x + u) / 256) - D log 256, reported in bits per dimension.
  """
  ALPHA = 0.05  # logit transform keeps away from 0 and 1 (RealNVP)

  def __init__(self, image_shape, hidden, steps_per_scale, normalization, nonlinearity,
               permutation, *, rngs):
    h, w, c = image_shape
    self.image_shape = tuple(image_shape)
    self.scale1 = nnx.List([FlowStep(4 * c, hidden, normalization, nonlinearity, permutation,
                                     rngs=rngs) for _ in range(steps_per_scale)])
    self.scale2 = nnx.List([FlowStep(16 * c, hidden, normalization, nonlinearity, permutation,
                                     rngs=rngs) for _ in range(steps_per_scale)])
    # Learned per-position Gaussian prior (Glow's learn_top): convolutional couplings are nearly
    # translation-equivariant, so without it a flow scatters strokes over the whole canvas.
    self.prior_mean = nnx.Param(jnp.zeros((h // 4, w // 4, 16 * c)))
    self.prior_logs = nnx.Param(jnp.zeros((h // 4, w // 4, 16 * c)))

  def forward(self, x01, init_actnorm: bool = False):
    """x01 in (0, 1), [N,H,W,C] -> (z [N,H/4,W/4,16C] before the prior, log|det dz/dx01| [N]).

    init_actnorm: run eagerly once on a batch before training (FlowStep.forward).
    """
    a = self.ALPHA
    p = a + (1 - 2 * a) * x01
    y = jnp.log(p) - jnp.log1p(-p)
    logdet = jnp.sum(jnp.log(1 - 2 * a) - jnp.log(p) - jnp.log1p(-p), axis=(1, 2, 3))
    z = squeeze(y)
    for step in self.scale1:
      z, ld = step.forward(z, init_actnorm)
      logdet += ld
    z = squeeze(z)
    for step in self.scale2:
      z, ld = step.forward(z, init_actnorm)
      logdet += ld
    return z, logdet

  def inverse(self, z):
    """The exact inverse of forward: z -> x01."""
    for step in reversed(self.scale2):
      z = step.inverse(z)
    z = unsqueeze(z)
    for step in reversed(self.scale1):
      z = step.inverse(z)
    y = unsqueeze(z)
    return (jax.nn.sigmoid(y) - self.ALPHA) / (1 - 2 * self.ALPHA)

  def log_prob_bits_per_dim(self, x01, init_actnorm: bool = False):
    """x01: dequantised images (x + u) / 256 in (0, 1), [N,H,W,C] -> bits/dim [N]."""
    z, logdet = self.forward(x01, init_actnorm)
    d = math.prod(x01.shape[1:])
    eps = (z - self.prior_mean[...]) * jnp.exp(-self.prior_logs[...])
    log_pz = -jnp.sum(0.5 * eps ** 2 + 0.5 * jnp.log(2 * jnp.pi) + self.prior_logs[...],
                      axis=(1, 2, 3))
    # density of x01 -> probability mass of the 8-bit image: subtract D log 256.
    log_px = log_pz + logdet - d * jnp.log(256.0)
    return -log_px / (d * jnp.log(2.0))

  def sample01(self, key, n, temperature):
    h, w, c = self.image_shape
    eps = temperature * jax.random.normal(key, (n, h // 4, w // 4, 16 * c))
    return self.inverse(self.prior_mean[...] + jnp.exp(self.prior_logs[...]) * eps)


# ----------------------------------------------------------------------------- diffusion


def timestep_embedding(t, dim):
  half = dim // 2
  freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half) / half)
  args = t[:, None].astype(jnp.float32) * freqs[None]
  return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class ResBlock(nnx.Module):
  def __init__(self, cin, cout, temb_dim, normalization, nonlinearity, *, rngs):
    self.n1 = Norm(normalization, cin, rngs=rngs)
    self.c1 = nnx.Conv(cin, cout, (3, 3), rngs=rngs)
    self.t = nnx.Linear(temb_dim, cout, rngs=rngs)
    self.n2 = Norm(normalization, cout, rngs=rngs)
    self.c2 = nnx.Conv(cout, cout, (3, 3), rngs=rngs)
    self.skip = nnx.Conv(cin, cout, (1, 1), rngs=rngs) if cin != cout else None
    self.act = activation(nonlinearity)

  def __call__(self, x, temb, train):
    h = self.c1(self.act(self.n1(x, train)))
    h = h + self.t(temb)[:, None, None, :]
    h = self.c2(self.act(self.n2(h, train)))
    return h + (self.skip(x) if self.skip is not None else x)


class UNet(nnx.Module):
  """Small DDPM U-Net predicting eps or v (the recipe's loss); class-conditional when
  num_classes > 0 (a label y = num_classes, or y None, is "no class").

  Residual blocks run at H/2 and H/4 only (full-resolution blocks cost most of the time on CPU);
  the last upsampling (the knob) returns to full resolution, where a skip from the input
  convolution and one 3x3 convolution produce the output (eps or v, the recipe's loss). (An H/4
  block 8x instead of 2x the width cost 30 % more per CPU step and drew no better digits per
  CPU second; see the README's zoo section.)
  """

  def __init__(self, image_shape, width, upsampling, normalization, nonlinearity, *, rngs,
               num_classes: int = 0):
    c = image_shape[-1]
    td = 4 * width
    self.width = width
    self.num_classes = num_classes
    self.t1 = nnx.Linear(width, td, rngs=rngs)
    self.t2 = nnx.Linear(td, td, rngs=rngs)
    # Class-conditional: a learned embedding per class, and one for "no class" (index
    # num_classes), added to the time embedding.
    self.label = nnx.Embed(num_classes + 1, td, rngs=rngs) if num_classes else None
    self.cin = nnx.Conv(c, width, (3, 3), rngs=rngs)
    self.d1 = nnx.Conv(width, 2 * width, (3, 3), strides=(2, 2), rngs=rngs)
    self.r2 = ResBlock(2 * width, 2 * width, td, normalization, nonlinearity, rngs=rngs)
    self.d2 = nnx.Conv(2 * width, 2 * width, (3, 3), strides=(2, 2), rngs=rngs)
    self.mid = ResBlock(2 * width, 2 * width, td, normalization, nonlinearity, rngs=rngs)
    self.u2 = Upsample(upsampling, 2 * width, 2 * width, rngs=rngs)
    self.r3 = ResBlock(4 * width, 2 * width, td, normalization, nonlinearity, rngs=rngs)
    self.u1 = Upsample(upsampling, 2 * width, width, rngs=rngs)
    self.nout = Norm(normalization, 2 * width, rngs=rngs)
    self.cout1 = nnx.Conv(2 * width, width, (3, 3), rngs=rngs)
    self.cout = nnx.Conv(width, c, (3, 3), kernel_init=nnx.initializers.zeros, rngs=rngs)
    self.act = activation(nonlinearity)

  def __call__(self, x, t, train: bool, y=None):
    temb = self.t2(jax.nn.silu(self.t1(timestep_embedding(t, self.width))))
    if self.label is not None:
      temb = temb + self.label(jnp.full(t.shape, self.num_classes) if y is None else y)
    h1 = self.cin(x)
    h2 = self.r2(self.d1(self.act(h1)), temb, train)
    h = self.mid(self.d2(h2), temb, train)
    h = self.r3(jnp.concatenate([self.u2(h), h2], axis=-1), temb, train)
    h = jnp.concatenate([self.u1(h), h1], axis=-1)
    h = self.act(self.cout1(self.act(self.nout(h, train))))
    return self.cout(h)
