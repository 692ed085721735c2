"""The `learned` manifold estimator's model: an autoencoder trained on the real bank.

The real bank's embeddings φ(x_real) [N, D] in one space (D = 784 for 28x28 rgb / freq / dct,
the feature size for the sl / ssl encoder spaces) train an MLP autoencoder
x -> E(x) (a small latent) -> D(E(x)). The decoder's range is the estimated manifold, so the
`learned` estimator's manifold point for an embedding z is D(E(z)) and its artifact is
z - D(E(z)).

Design (what works on digits):

* Inputs are standardised per coordinate with the bank's mean and std (float64, streamed), so
  that coordinates with a large range (the log-spectra's centre) do not swamp the loss; the
  std is floored at STD_FLOOR of the bank's RMS std, because coordinates that are almost
  constant on the bank (MNIST's empty border pixels) would otherwise turn a generated image's
  small deviation there into a huge z-score that throws the encoder off the manifold.
* Encoder D -> hidden -> latent and decoder latent -> hidden -> D, GELU between layers,
  linear output; mean squared error in standardised units; Adam with a cosine decay.
  Reconstructions are returned in the space's own units.
* Every float32 matmul runs at lax.Precision.HIGHEST (GPUs default to TF32), in training
  and in :meth:`ManifoldAutoencoder.reconstruct`.

Deterministic for a seed: the seed fixes the initialisation and the batch order (bitwise on
the CPU; to float rounding on GPUs, whose reductions are not bitwise deterministic).
"""
from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fpjax.models import training

HIGHEST = jax.lax.Precision.HIGHEST
# A coordinate's std is floored at this fraction of the bank's RMS std (see the module doc).
STD_FLOOR = 0.1
DEFAULT_STEPS = 1000
DEFAULT_BATCH = 128
DEFAULT_LR = 2e-3


def default_latent_dim(dim: int) -> int:
  """32 for images (D = 784), D // 4 for small encoder features (a latent of D would copy)."""
  return int(max(2, min(32, dim // 4)))


class AutoencoderNet(nnx.Module):
  """MLP encoder D -> hidden -> latent and decoder latent -> hidden -> D (standardised units)."""

  def __init__(self, dim: int, latent_dim: int, hidden: int, *, rngs: nnx.Rngs):
    lin = lambda a, b: nnx.Linear(a, b, precision=HIGHEST, rngs=rngs)
    self.enc1, self.enc2 = lin(dim, hidden), lin(hidden, latent_dim)
    self.dec1, self.dec2 = lin(latent_dim, hidden), lin(hidden, dim)

  def encode(self, z):
    return jnp.tanh(self.enc2(jax.nn.gelu(self.enc1(z))))

  def decode(self, h):
    return self.dec2(jax.nn.gelu(self.dec1(h)))

  def __call__(self, z):
    return self.decode(self.encode(z))


class ManifoldAutoencoder:
  """A trained autoencoder with the bank's standardisation: ``reconstruct(x) = D(E(x))``."""

  def __init__(self, net: AutoencoderNet, mean: np.ndarray, std: np.ndarray, config: dict):
    self.net = net
    self.mean = np.asarray(mean, np.float32)
    self.std = np.asarray(std, np.float32)
    self.config = dict(config)
    self.input_shape = tuple(int(s) for s in config['input_shape'])
    self.dim = int(np.prod(self.input_shape))
    graphdef, state = nnx.split(net)
    self._state = state
    mean_j, std_j = jnp.asarray(self.mean), jnp.asarray(self.std)

    def apply(state, x):
      flat = x.reshape(x.shape[0], self.dim).astype(jnp.float32)
      z = nnx.merge(graphdef, state)((flat - mean_j) / std_j)
      return (z * std_j + mean_j).reshape(x.shape)

    self._apply_raw = apply
    self._apply = jax.jit(apply)

  def reconstruct(self, x) -> jax.Array:
    """[n, *input_shape] float32 embeddings -> D(E(x)), the same shape (the manifold point).

    ``input_shape`` is the bank's per-row shape ([D], or [H, W, C] for image-shaped spaces).
    Jitted (one compilation per batch shape); callable inside the caller's jit too.
    """
    shape = tuple(getattr(x, 'shape', np.shape(x)))
    if len(shape) < 1 or shape[1:] != self.input_shape:
      raise ValueError(f'ManifoldAutoencoder: expected embeddings of shape '
                       f'[n, {", ".join(map(str, self.input_shape))}] (trained on this space), '
                       f'got {shape}')
    if isinstance(x, jax.core.Tracer):
      return self._apply_raw(self._state, x)
    return self._apply(self._state, jnp.asarray(x, jnp.float32))

  def save(self, path: str) -> None:
    """A folder: config.json and state/ (orbax; the parameters, mean and std). No pickle."""
    training.save_checkpoint(path, self.net, self.config, {'mean': self.mean, 'std': self.std})

  def __repr__(self):
    c = self.config
    return (f'ManifoldAutoencoder(input_shape={self.input_shape}, latent_dim={c["latent_dim"]}, '
            f'hidden={c["hidden"]}, steps={c["steps"]}, seed={c["seed"]})')


def load_manifold_autoencoder(path: str) -> ManifoldAutoencoder:
  """Loads a folder written by :meth:`ManifoldAutoencoder.save`."""
  config = training.read_config(path)
  if config.get('type') != 'ManifoldAutoencoder':
    raise ValueError(f'{path}: not a ManifoldAutoencoder checkpoint (type={config.get("type")!r})')
  dim = int(np.prod(config['input_shape']))
  like = {k: jax.ShapeDtypeStruct((dim,), np.float32) for k in ('mean', 'std')}
  net, extra = training.load_checkpoint(
      path, lambda: AutoencoderNet(dim, config['latent_dim'], config['hidden'],
                                   rngs=nnx.Rngs(0)), like)
  return ManifoldAutoencoder(net, extra['mean'], extra['std'], config)


def train_manifold_autoencoder(bank, *, seed: int = 0, steps: int | None = None,
                               latent_dim: int | None = None, mesh=None,
                               batch_size: int = DEFAULT_BATCH, lr: float = DEFAULT_LR,
                               per_dispatch: int | None = None) -> ManifoldAutoencoder:
  """Trains the `learned` estimator's autoencoder on the real bank's embeddings in one space.

  Args:
    bank: float32 [N, D] embeddings of the real bank (or [N, *shape], flattened inside; the
      reconstruction keeps the shape). A numpy array or a lazy array-like (len, shape, dtype,
      contiguous slices): it is read a slice at a time (statistics in one streamed float64
      pass, minibatches from fpjax.models.training's shuffle buffer).
    seed: fixes the initialisation and the batch order.
    steps: Adam steps (default DEFAULT_STEPS).
    latent_dim: the manifold's dimension (default :func:`default_latent_dim`).
    mesh: device mesh; the batch is split over all its devices (parameters replicated).
    per_dispatch: steps per device dispatch (default by backend, training.steps_per_dispatch).
  Raises ValueError for a bank with fewer than 2 rows or a non-finite row (named),
  training.NonFiniteLossError if the loss diverges.
  """
  bank = training.as_rows(bank)
  if len(bank.shape) < 2 or bank.shape[0] < 2:
    raise ValueError(f'train_manifold_autoencoder: bank must be [N >= 2, D], got shape '
                     f'{tuple(bank.shape)}')
  n, shape = int(bank.shape[0]), tuple(int(s) for s in bank.shape[1:])
  dim = int(np.prod(shape))
  latent_dim = default_latent_dim(dim) if latent_dim is None else int(latent_dim)
  if not 1 <= latent_dim:
    raise ValueError(f'latent_dim must be >= 1, got {latent_dim}')
  hidden = int(min(256, max(4 * latent_dim, dim)))
  steps = DEFAULT_STEPS if steps is None else int(steps)
  if steps < 1:
    raise ValueError(f'steps must be >= 1, got {steps}')
  flat = training.MappedRows(bank, lambda a: a.reshape(len(a), dim).astype(np.float32),
                             (n, dim))
  mean, std = training.streamed_moments(flat, 'train_manifold_autoencoder bank', per_feature=True)
  floor = STD_FLOOR * math.sqrt(float(np.mean(np.square(std))))
  std = np.maximum(std, max(floor, 1e-12))
  mean32, std32 = mean.astype(np.float32), std.astype(np.float32)
  z_rows = training.MappedRows(flat, lambda a: (a - mean32) / std32, (n, dim))

  t0 = time.perf_counter()
  mesh = training.default_mesh(mesh)
  net = AutoencoderNet(dim, latent_dim, hidden, rngs=nnx.Rngs(seed))
  tx = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.05))
  graphdef, params = nnx.split(net, nnx.Param)
  params = training.replicate(params, mesh)
  opt_state = training.replicate(tx.init(params), mesh)

  def loss_fn(params, rest, zb):
    recon = nnx.merge(graphdef, params)(zb)
    return jnp.mean(jnp.square(recon - zb)), rest

  b = training.round_batch(batch_size, n, mesh)
  buffer_rows = training.BLOCK_ROWS * training.BUFFER_BLOCKS
  loop = training.StepLoop(
      training.make_train_step(loss_fn, tx), mesh=mesh,
      per_dispatch=min(training.steps_per_dispatch(per_dispatch), max(1, buffer_rows // b)))
  rng = np.random.default_rng(seed)

  def batches():
    done = 0
    while done < steps:  # epochs of the shuffle buffer until `steps` minibatches
      for _, zb in training.shuffled_minibatches(z_rows, np.arange(n), b, rng):
        yield (zb,)
        done += 1
        if done == steps:
          return

  (params, _, _), losses = loop.run((params, {}, opt_state), batches())
  losses = np.asarray(jax.device_get(losses))
  if not np.all(np.isfinite(losses)):
    raise training.NonFiniteLossError(
        f'train_manifold_autoencoder: loss became non-finite at step '
        f'{int(np.argmax(~np.isfinite(losses)))}; lower lr or check the bank')
  nnx.update(net, jax.device_get(params))
  config = dict(type='ManifoldAutoencoder', input_shape=list(shape), latent_dim=latent_dim,
                hidden=hidden, steps=steps, seed=int(seed), batch_size=b, lr=float(lr),
                std_floor=STD_FLOOR, num_bank=n, final_loss=float(losses[-min(50, steps):].mean()),
                train_seconds=round(time.perf_counter() - t0, 2))
  return ManifoldAutoencoder(net, mean32, std32, config)
