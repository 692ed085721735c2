"""The `riemannian` estimator's model: a VAE on the bank whose decoder defines the metric.

Trained on the real bank's flat embeddings [N, D] (standardised per coordinate with the bank's
mean and std, the std floored as in fpjax.models.autoencoder), in two stages, as in
Arvanitidis et al., "Latent space oddity" (ICLR 2018):

1. A Gaussian VAE: encoder D -> hidden -> (mean, log-variance) of q(z | x) in R^d, decoder
   mean mu(z): d -> hidden -> D, GELU, unit observation noise; loss = mean over the batch of
   (||x - mu(z)||^2 / 2 + kl_weight * KL(q(z | x) || N(0, I))) / D, z sampled by
   reparameterisation; Adam with a cosine decay.
2. The decoder's standard deviation sigma(z) = (softplus(W)^T v(z) + zeta)^(-1/2) [D], with
   v(z) = exp(-lambda_c ||z - c||^2) a radial basis over K k-means centres c of the bank's
   latent codes (lambda_c from each cluster's mean radius): the precision falls to zeta far
   from the data, so sigma (and the metric's variance term) grows there and geodesics avoid
   regions without data. Only W is trained (Gaussian likelihood, mu frozen).

The metric is taken in standardised units (the decoder's own); the artifact's manifold point
is decoded back to the space's units (``Decoder.to_space``). The bank is read whole (flat
embeddings of a bank fit in host memory); batches are split over a mesh's devices when one is
given (parameters replicated), else plain jit. Deterministic for a seed (initialisation,
batch order, reparameterisation noise, k-means start).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fpjax.geometry.metric import Decoder
from fpjax.models import training

HIGHEST = jax.lax.Precision.HIGHEST
STD_FLOOR = 0.1  # as fpjax.models.autoencoder: a coordinate's std >= 0.1 * the bank's RMS std


class VAEEncoder(nnx.Module):
  """x [.., D] -> (mean, log-variance) [.., d] of q(z | x)."""

  def __init__(self, dim: int, latent_dim: int, hidden: int, *, rngs: nnx.Rngs):
    lin = lambda a, b: nnx.Linear(a, b, precision=HIGHEST, rngs=rngs)
    self.hidden, self.mean, self.logvar = lin(dim, hidden), lin(hidden, latent_dim), lin(
        hidden, latent_dim)

  def __call__(self, x):
    h = jax.nn.gelu(self.hidden(x))
    return self.mean(h), self.logvar(h)


class MeanDecoder(nnx.Module):
  """z [.., d] -> mu(z) [.., D] (standardised units)."""

  def __init__(self, dim: int, latent_dim: int, hidden: int, *, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(latent_dim, hidden, precision=HIGHEST, rngs=rngs)
    self.out = nnx.Linear(hidden, dim, precision=HIGHEST, rngs=rngs)

  def __call__(self, z):
    return self.out(jax.nn.gelu(self.hidden(z)))


class RBFStd(nnx.Module):
  """z [.., d] -> sigma(z) = (softplus(W)^T v(z) + zeta)^(-1/2) [.., D] (see the module doc)."""

  def __init__(self, centres, bandwidth, dim: int, zeta: float):
    self.centres = nnx.Variable(jnp.asarray(centres, jnp.float32))      # [K, d], fixed
    self.bandwidth = nnx.Variable(jnp.asarray(bandwidth, jnp.float32))  # [K], fixed
    self.zeta = float(zeta)
    # softplus(0.5413) = 1: unit precision where one basis function is fully on.
    self.weight = nnx.Param(jnp.full((len(centres), dim), 0.5413, jnp.float32))

  def __call__(self, z):
    d2 = jnp.sum(jnp.square(z[..., None, :] - self.centres[...]), axis=-1)
    v = jnp.exp(-self.bandwidth[...] * d2)
    precision = jnp.dot(v, jax.nn.softplus(self.weight[...]), precision=HIGHEST) + self.zeta
    return jax.lax.rsqrt(precision)


@dataclasses.dataclass(frozen=True)
class _Apply:
  """A static, hashable decoder function: merges the module from its graph and the state at
  ``params[key]`` (equal graphs compare equal, so jit caches hit across trained models)."""
  graphdef: Any
  key: str

  def __call__(self, params, z):
    return nnx.merge(self.graphdef, params[self.key])(z)


@dataclasses.dataclass(frozen=True)
class TrainedVAE:
  """A trained VAE: ``encode`` (the encoder mean, space units -> latent) and ``decoder``."""
  encoder: VAEEncoder
  decoder: Decoder          # metric in standardised units; to_space() gives the space's units
  mean: np.ndarray          # [D] standardisation
  std: np.ndarray           # [D]
  config: dict

  def encode(self, x, batch_size: int = 4096) -> np.ndarray:
    """Latent codes (the encoder's mean) of embeddings x [n, D]: float32 [n, d]."""
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    graphdef, state = nnx.split(self.encoder)
    out = [np.asarray(_encode_mean(graphdef, state, x[a:a + batch_size], self.mean, self.std))
           for a in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, self.config['latent_dim']), np.float32)

  def decode(self, z) -> jax.Array:
    """The manifold points of latent codes z [n, d], in the space's units: [n, D]."""
    return _decode_space(self.decoder, jnp.asarray(z, jnp.float32))


@jax.jit
def _encode_mean(graphdef, state, x, mean, std):
  return nnx.merge(graphdef, state)((x - mean) / std)[0]


@jax.jit
def _decode_space(decoder, z):
  return decoder.to_space(decoder.mean(z))


def _standardise(bank: np.ndarray):
  mean = bank.mean(0, dtype=np.float64)
  std = bank.std(0, dtype=np.float64)
  floor = STD_FLOOR * math.sqrt(float(np.mean(np.square(std))))
  std = np.maximum(std, max(floor, 1e-12))
  return mean.astype(np.float32), std.astype(np.float32)


def _fit(loss_fn, params, consts, data, *, steps, batch_size, lr, seed, mesh, what):
  """Adam with a cosine decay on minibatches of the host arrays ``data`` (shared row order)."""
  n = len(data[0])
  if mesh is not None:
    mesh = training.default_mesh(mesh)
    b = training.round_batch(batch_size, n, mesh)
    params = training.replicate(params, mesh)
  else:
    b = min(int(batch_size), n)
  tx = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.05))
  opt_state = tx.init(params)
  if mesh is not None:
    opt_state = training.replicate(opt_state, mesh)
  loop = training.StepLoop(training.make_train_step(loss_fn, tx), mesh=mesh)
  rng = np.random.default_rng(seed)

  def batches():
    step = 0
    while True:
      perm = rng.permutation(n)
      for a in range(0, n - b + 1, b):
        yield tuple(d[perm[a:a + b]] for d in data) + (np.int32(step),)
        step += 1
        if step == steps:
          return

  (params, _, _), losses = loop.run((params, {}, opt_state), batches(), *consts)
  losses = np.asarray(jax.device_get(losses))
  if not np.all(np.isfinite(losses)):
    raise training.NonFiniteLossError(
        f'{what}: loss became non-finite at step {int(np.argmax(~np.isfinite(losses)))}; '
        f'lower lr or check the bank')
  return jax.device_get(params), float(losses[-min(50, steps):].mean())


def kmeans(x: np.ndarray, k: int, *, seed: int, iters: int = 25):
  """Lloyd's k-means in float64 (seeded start from k distinct rows): centres [k, d], labels."""
  x = np.asarray(x, np.float64)
  k = min(int(k), len(x))
  centres = x[np.random.default_rng(seed).choice(len(x), k, replace=False)]
  for _ in range(iters):
    d2 = (x * x).sum(1)[:, None] - 2 * x @ centres.T + (centres * centres).sum(1)[None]
    labels = np.argmin(d2, 1)
    for c in range(k):
      members = x[labels == c]
      if len(members):
        centres[c] = members.mean(0)
  d2 = (x * x).sum(1)[:, None] - 2 * x @ centres.T + (centres * centres).sum(1)[None]
  return centres, np.argmin(d2, 1)


def _rbf_bandwidth(codes, centres, labels, scale: float) -> np.ndarray:
  """lambda_c = 1 / (2 (scale * mean radius of cluster c)^2); lone points get the median."""
  radius = np.array([np.linalg.norm(codes[labels == c] - centres[c], axis=1).mean()
                     if np.sum(labels == c) > 1 else np.nan for c in range(len(centres))])
  fallback = np.nanmedian(radius) if np.any(np.isfinite(radius)) else 1.0
  radius = np.where(np.isfinite(radius) & (radius > 0), radius, max(fallback, 1e-3))
  return 0.5 / np.square(scale * radius)


def _vae_loss(enc_def, dec_def, kl_weight: float):
  def loss_fn(params, rest, xb, step, key):
    mu, logvar = nnx.merge(enc_def, params['enc'])(xb)
    eps = jax.random.normal(jax.random.fold_in(key, step), mu.shape, mu.dtype)
    xhat = nnx.merge(dec_def, params['dec'])(mu + jnp.exp(0.5 * logvar) * eps)
    rec = 0.5 * jnp.sum(jnp.square(xhat - xb), axis=-1)
    kl = 0.5 * jnp.sum(jnp.square(mu) + jnp.exp(logvar) - 1.0 - logvar, axis=-1)
    return jnp.mean(rec + kl_weight * kl) / xb.shape[-1], rest
  return loss_fn


def _std_loss(std_def):
  def loss_fn(params, rest, zb, r2b, step, fixed):
    del step
    precision = jnp.reciprocal(jnp.square(nnx.merge(std_def, params, fixed)(zb)))
    nll = 0.5 * jnp.sum(precision * r2b - jnp.log(precision), axis=-1)
    return jnp.mean(nll) / r2b.shape[-1], rest
  return loss_fn


def train_vae(bank, *, latent_dim: int | None = None, steps: int = 1000, seed: int = 0,
              hidden: int | None = None, batch_size: int = 128, lr: float = 2e-3,
              kl_weight: float = 1.0, variance: bool = True, variance_steps: int | None = None,
              num_centres: int = 64, bandwidth_scale: float = 1.0, max_std: float = 10.0,
              mesh=None) -> TrainedVAE:
  """Trains the metric's VAE on the real bank's embeddings (see the module doc).

  Args:
    bank: [N, D] (or [N, ...], flattened) float embeddings of the real bank, N >= 2.
    latent_dim: d (default fpjax.models.autoencoder's rule: min(32, D // 4), at least 2).
    steps: Adam steps of the VAE (stage 1); variance_steps those of sigma (default steps).
    seed: fixes initialisation, batch order, sampling noise and the k-means start.
    variance: fit sigma (stage 2); False gives a decoder with the variance term off.
    num_centres, bandwidth_scale, max_std: sigma's radial basis (K centres, each one's
      width scale * its cluster's mean radius) and its value far from data (1 / sqrt(zeta)).
    mesh: optional device mesh: batches split over all its devices, parameters replicated.
  Raises ValueError for a bad bank or setting, NonFiniteLossError if training diverges.
  """
  bank = np.asarray(bank, np.float32)
  if bank.ndim < 2 or bank.shape[0] < 2 or not np.all(np.isfinite(bank)):
    raise ValueError(f'train_vae: bank must be finite [N >= 2, D], got shape {bank.shape}')
  bank = bank.reshape(len(bank), -1)
  n, dim = bank.shape
  latent_dim = int(max(2, min(32, dim // 4)) if latent_dim is None else latent_dim)
  hidden = int(min(256, max(4 * latent_dim, dim)) if hidden is None else hidden)
  if latent_dim < 1 or steps < 1 or hidden < 1:
    raise ValueError(f'train_vae: latent_dim, steps and hidden must be >= 1, got '
                     f'{latent_dim}, {steps}, {hidden}')
  mean, std = _standardise(bank)
  x = (bank - mean) / std
  rngs = nnx.Rngs(seed)
  encoder = VAEEncoder(dim, latent_dim, hidden, rngs=rngs)
  mean_dec = MeanDecoder(dim, latent_dim, hidden, rngs=rngs)
  enc_def, enc_params = nnx.split(encoder)
  dec_def, dec_params = nnx.split(mean_dec)
  fit = dict(batch_size=batch_size, lr=lr, seed=seed, mesh=mesh)
  params, vae_loss = _fit(_vae_loss(enc_def, dec_def, kl_weight),
                          {'enc': enc_params, 'dec': dec_params}, (jax.random.key(seed),),
                          (x,), steps=steps, what='train_vae', **fit)
  nnx.update(encoder, params['enc'])
  nnx.update(mean_dec, params['dec'])
  config = dict(type='TrainedVAE', dim=dim, latent_dim=latent_dim, hidden=hidden, steps=steps,
                seed=int(seed), batch_size=batch_size, lr=lr, kl_weight=kl_weight, num_bank=n,
                vae_loss=vae_loss, variance=bool(variance))
  dec_state = nnx.state(mean_dec)
  decoder = Decoder(params={'mean': dec_state}, shift=jnp.asarray(mean),
                    scale=jnp.asarray(std), mean_fn=_Apply(dec_def, 'mean'))
  trained = TrainedVAE(encoder, decoder, mean, std, config)
  if not variance:
    return trained
  codes = trained.encode(bank)
  centres, labels = kmeans(codes, num_centres, seed=seed)
  std_net = RBFStd(centres, _rbf_bandwidth(codes, centres, labels, bandwidth_scale), dim,
                   zeta=1.0 / float(max_std) ** 2)
  resid2 = np.square(x - np.asarray(_decode_std_units(dec_def, dec_state, codes)))
  std_def, std_params, fixed = nnx.split(std_net, nnx.Param, ...)
  std_params, std_loss = _fit(_std_loss(std_def), std_params, (fixed,), (codes, resid2),
                              steps=int(variance_steps or steps), what='train_vae (sigma)', **fit)
  nnx.update(std_net, std_params)
  config.update(num_centres=len(centres), bandwidth_scale=bandwidth_scale, max_std=max_std,
                variance_steps=int(variance_steps or steps), std_loss=std_loss)
  std_def, std_state = nnx.split(std_net)
  decoder = dataclasses.replace(decoder, params={'mean': dec_state, 'std': std_state},
                                std_fn=_Apply(std_def, 'std'))
  return TrainedVAE(encoder, decoder, mean, std, config)


@jax.jit
def _decode_std_units(graphdef, state, z):
  return nnx.merge(graphdef, state)(z)
