"""SL and SSL encoder spaces, trained on the real images (no pretrained weights can be downloaded).

The paper embeds images with ImageNet ResNet50s: supervised ('sl') and Barlow Twins ('ssl').
fpjax trains the same two kinds of encoder on the real dataset itself:

* ``'sl'``: the CIFAR-style ResNet trained with cross-entropy on the real labels; the
  features are its penultimate (global-pooled) vector.
* ``'ssl'``: the same ResNet as backbone, trained with Barlow Twins on two augmented views
  of each real image (random shift-crop, contrast, brightness, Gaussian noise), a projector
  MLP, and the cross-correlation loss sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2
  (lambda = 5e-3); the features are the backbone's penultimate vector (projector dropped).

An :class:`Encoder` is a callable float32 images [N, H, W, C] in [0, 1] (or uint8) ->
features [N, D]; pass it as the ``space`` of ``fpjax.embed`` / ``fpjax.Manifold``.

Loading your own encoder
------------------------
A checkpoint directory holds ``config.json`` and ``state/`` (an orbax StandardCheckpointer
of ``nnx.state(module)``)::

  {"module": "mypkg.nets:MyEncoder",   # import path 'package.module:Class' of a Flax NNX module
   "kwargs": {"width": 64},            # constructor arguments (the loader adds rngs=nnx.Rngs(0))
   "method": "features",               # method mapping float images [N,H,W,C] in [0,1] -> [N, D]
   "image_shape": [28, 28, 1]}         # optional; checked against the inputs

Write it with ``Encoder(module, config).save(path)`` (or by hand with orbax, saving
``nnx.state(module)`` under ``path/state``) and load it with ``load_encoder(path)``.
"""
from __future__ import annotations

import importlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fpjax.configs import defaults
from fpjax.models import resnet
from fpjax.models import training
from fpjax.spaces import as_float_images

PRESETS = defaults.ENCODER_PRESETS  # 'quick' and 'paper' (what each is for: defaults.py)


def _import(path: str):
  mod, _, name = path.partition(':')
  if not name:
    raise ValueError(f"encoder config 'module' must look like 'package.module:Class', got {path!r}")
  return getattr(importlib.import_module(mod), name)


class Encoder:
  """Callable feature extractor around a Flax NNX module; jit-compiled, batched internally."""

  def __init__(self, module: nnx.Module, config: dict, *, batch_size: int = 256):
    for key in ('module', 'kwargs'):
      if key not in config:
        raise ValueError(f'Encoder config needs {key!r}; got keys {sorted(config)}')
    self.module = module
    self.config = dict(config)
    self.batch_size = int(batch_size)
    self.name = config.get('name', config.get('kind', 'encoder'))
    method = config.get('method', 'features')
    graphdef, state = nnx.split(module)
    self._state = state

    def apply(state, x):
      m = nnx.merge(graphdef, state)
      return getattr(m, method)(x).reshape(x.shape[0], -1).astype(jnp.float32)

    self._apply = jax.jit(apply)
    self._apply_raw = apply

  @property
  def feature_dim(self) -> int | None:
    return self.config.get('feature_dim')

  def _check(self, shape):
    want = self.config.get('image_shape')
    if want is not None and tuple(shape[1:]) != tuple(want):
      dims = ', '.join(map(str, want))
      raise ValueError(f'encoder {self.name!r} expects images of shape [N, {dims}], '
                       f'got {tuple(shape)}')

  def __call__(self, images) -> jax.Array:
    if isinstance(images, jax.core.Tracer):
      # Called inside someone's jit: apply directly, the caller bounds the batch.
      self._check(images.shape)
      x = images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images
      return self._apply_raw(self._state, x)
    n = images.shape[0]
    self._check(images.shape)
    b = self.batch_size if n >= self.batch_size else 1 << max(0, int(n - 1).bit_length())
    out = []
    for start in range(0, n, b):
      x = as_float_images(images[start:start + b])
      pad = b - x.shape[0]
      if pad:
        x = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)])
      out.append(self._apply(self._state, x)[:b - pad])
    return jnp.concatenate(out)

  def save(self, path: str) -> None:
    training.save_checkpoint(path, self.module, self.config)

  def __repr__(self):
    return (f'Encoder({self.name!r}, module={self.config["module"]}, '
            f'feature_dim={self.feature_dim})')


def load_encoder(path: str, *, batch_size: int = 256) -> Encoder:
  """Loads any encoder written by ``Encoder.save`` (fpjax's or your own module)."""
  config = training.read_config(path)
  cls = _import(config['module'])
  kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config['kwargs'].items()}
  module, _ = training.load_checkpoint(path, lambda: cls(**kwargs, rngs=nnx.Rngs(0)))
  return Encoder(module, config, batch_size=batch_size)


class BarlowTwins(nnx.Module):
  """Backbone + projector (Linear-BN-ReLU-Linear); only the backbone is kept as the encoder."""

  def __init__(self, backbone: resnet.ResNet, projector=(128, 128), *, rngs: nnx.Rngs):
    self.backbone = backbone
    d = backbone.feature_dim
    self.fc1 = nnx.Linear(d, projector[0], use_bias=False, rngs=rngs)
    self.bn1 = nnx.BatchNorm(projector[0], momentum=0.9, rngs=rngs)
    self.fc2 = nnx.Linear(projector[0], projector[1], use_bias=False, rngs=rngs)

  def __call__(self, x, train: bool = True):
    h = self.backbone.features(x, train)
    h = jax.nn.relu(self.bn1(self.fc1(h), use_running_average=not train))
    return self.fc2(h)


def barlow_twins_loss(z1: jax.Array, z2: jax.Array, lam: float) -> jax.Array:
  """sum_i (1 - C_ii)^2 + lam * sum_{i != j} C_ij^2, C the batch cross-correlation of z-scored
  z1, z2."""
  n = z1.shape[0]
  z1 = (z1 - z1.mean(0)) / (z1.std(0) + 1e-5)
  z2 = (z2 - z2.mean(0)) / (z2.std(0) + 1e-5)
  c = z1.T @ z2 / n
  diag = jnp.diagonal(c)
  on = jnp.sum(jnp.square(1.0 - diag))
  off = jnp.sum(jnp.square(c)) - jnp.sum(jnp.square(diag))
  return on + lam * off


def augment(key: jax.Array, x: jax.Array) -> jax.Array:
  """One random view per image: shift-crop (reflect pad H//8), contrast, brightness, noise."""
  n, h, w, _ = x.shape
  pad = max(1, h // 8)
  k_shift, k_con, k_bri, k_sig, k_noise = jax.random.split(key, 5)
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='reflect')
  offs = jax.random.randint(k_shift, (n, 2), 0, 2 * pad + 1)
  crop = lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, x.shape[3]))
  x = jax.vmap(crop)(xp, offs)
  mean = x.mean(axis=(1, 2, 3), keepdims=True)
  contrast = jax.random.uniform(k_con, (n, 1, 1, 1), minval=0.6, maxval=1.4)
  bright = jax.random.uniform(k_bri, (n, 1, 1, 1), minval=-0.1, maxval=0.1)
  sigma = jax.random.uniform(k_sig, (n, 1, 1, 1), minval=0.0, maxval=0.05)
  x = (x - mean) * contrast + mean + bright + sigma * jax.random.normal(k_noise, x.shape)
  return jnp.clip(x, 0.0, 1.0)


def encoder_optimizer(cfg: dict, total_steps: int) -> optax.GradientTransformation:
  """Both kinds' optimizer: AdamW (weight decay 1e-4), linear warm-up over the first tenth of
  ``total_steps`` to the preset's lr, then cosine decay."""
  return optax.adamw(optax.warmup_cosine_decay_schedule(
      0.0, cfg['lr'], max(1, total_steps // 10), total_steps), weight_decay=1e-4)


def ssl_loss(graphdef, lam: float):
  """The Barlow Twins objective for ``training.make_train_step``: loss_fn(params, rest, xb, i,
  key) -> (loss of two augmented views of xb drawn from fold_in(key, i), new rest)."""
  def loss_fn(params, rest, xb, i, key):
    m = nnx.merge(graphdef, params, rest, copy=True)
    k1, k2 = jax.random.split(jax.random.fold_in(key, i))  # step i's views
    loss = barlow_twins_loss(m(augment(k1, xb)), m(augment(k2, xb)), lam)
    _, _, rest = nnx.split(m, nnx.Param, ...)
    return loss, rest
  return loss_fn


def _train_ssl(backbone, x, *, steps, seed, batch_size, cfg, mesh, per_dispatch=None):
  model = BarlowTwins(backbone, cfg['projector'], rngs=nnx.Rngs(seed + 1))
  tx = encoder_optimizer(cfg, steps)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params, rest = training.replicate((params, rest), mesh)
  opt_state = training.replicate(tx.init(params), mesh)

  b = training.round_batch(batch_size, len(x), mesh)
  # A dispatch stacks at most ~65k images (the shuffle buffer of fit_classifier).
  loop = training.StepLoop(
      training.make_train_step(ssl_loss(graphdef, cfg['barlow_lambda']), tx), mesh=mesh,
      per_dispatch=min(training.steps_per_dispatch(per_dispatch),
                       max(1, training.BLOCK_ROWS * training.BUFFER_BLOCKS // b)))
  rng = np.random.default_rng(seed)

  def batches():
    order = rng.permutation(len(x))
    pos = 0
    for i in range(steps):
      if pos + b > len(x):
        order, pos = rng.permutation(len(x)), 0
      yield x[order[pos:pos + b]], np.int32(i)
      pos += b

  (params, rest, _), losses = loop.run((params, rest, opt_state), batches(), jax.random.key(seed))
  losses = np.asarray(jax.device_get(losses))
  if not np.all(np.isfinite(losses)):
    raise training.NonFiniteLossError(
        'ssl encoder: Barlow Twins loss became non-finite at step '
        f'{int(np.argmax(~np.isfinite(losses)))}')
  nnx.update(model, jax.device_get(params), jax.device_get(rest))
  return model.backbone, losses


def train_encoder(kind: str, images, labels=None, *, steps: int | None = None, seed: int = 0,
                  batch_size: int = 128, preset: str = 'quick', mesh=None,
                  per_dispatch: int | None = None) -> Encoder:
  """Trains an 'sl' (supervised, needs labels) or 'ssl' (Barlow Twins) encoder on real images.

  Args:
    kind: 'sl' or 'ssl'.
    images: real images, uint8 [N, H, W, C] or float in [0, 1].
    labels: int class labels [N] (required for 'sl', ignored for 'ssl').
    steps: optimizer steps (default: the preset's).
    seed: seeds initialisation, batch order and augmentations; same seed -> same encoder.
    batch_size: global batch, split over the mesh's devices.
    preset: 'quick' (default) or 'paper' (see PRESETS).
    mesh: optional device mesh; default all devices on one 'data' axis.
    per_dispatch: optimizer steps per call from Python (default
      training.steps_per_dispatch(): 1 on the CPU, a lax.scan of many on GPU/TPU); any value
      gives the same encoder up to float rounding.
  """
  if kind not in ('sl', 'ssl'):
    raise ValueError(f"encoder kind must be 'sl' or 'ssl', got {kind!r}")
  if preset not in PRESETS:
    raise ValueError(f'unknown encoder preset {preset!r}; expected one of {sorted(PRESETS)}')
  cfg = PRESETS[preset]
  x = np.asarray(as_float_images(images))
  steps = int(steps if steps is not None else cfg[f'{kind}_steps'])
  mesh = training.default_mesh(mesh)
  if kind == 'sl':
    if labels is None:
      raise ValueError("train_encoder('sl', ...) needs the real labels")
    labels = np.asarray(labels)
    if labels.shape != (x.shape[0],):
      raise ValueError(f'labels must have shape [{x.shape[0]}], got {labels.shape}')
    classes, y = np.unique(labels, return_inverse=True)
    num_classes = len(classes)
  else:
    num_classes = 1  # unused head; keeps one ResNet class for both kinds
  kwargs = dict(in_channels=int(x.shape[-1]), num_classes=int(num_classes),
                widths=list(cfg['widths']), blocks_per_stage=int(cfg['blocks_per_stage']))
  backbone = resnet.ResNet(**kwargs, rngs=nnx.Rngs(seed))
  t0 = time.perf_counter()
  if kind == 'sl':
    history = training.fit_classifier(
        backbone, x, y.astype(np.int32), steps=steps, batch_size=batch_size, mesh=mesh, seed=seed,
        make_tx=lambda total, _: encoder_optimizer(cfg, total),
        name='sl encoder', per_dispatch=per_dispatch)
    final_loss = history['train_loss'][-1]
  else:
    backbone, losses = _train_ssl(backbone, x, steps=steps, seed=seed, batch_size=batch_size,
                                  cfg=cfg, mesh=mesh, per_dispatch=per_dispatch)
    final_loss = float(losses[-10:].mean())
  config = dict(kind=kind, name=kind, module='fpjax.models.resnet:ResNet', kwargs=kwargs,
                method='features', image_shape=list(x.shape[1:]),
                feature_dim=int(backbone.feature_dim), preset=preset, steps=steps, seed=seed,
                batch_size=batch_size, final_loss=float(final_loss),
                train_seconds=round(time.perf_counter() - t0, 2))
  return Encoder(backbone, config)
