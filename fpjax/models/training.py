"""One way of training and running fpjax's Flax NNX classifiers, data-parallel on a mesh.

The batch is sharded along the mesh axis 'data' (``NamedSharding(mesh, P('data'))``; on a
multi-axis mesh along all its axes) and the
parameters are replicated; ``jax.jit`` then computes the global-batch loss and gradient (XLA
inserts the all-reduce), so the same code runs on 1 CPU, 8 GPUs or a TPU slice, and gives the
same result up to float summation order. Used by the linear probe, the attributor, the SL
encoder and the CNN baselines.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P


class NonFiniteLossError(FloatingPointError):
  """Training loss became NaN or inf."""


def default_mesh(mesh: jax.sharding.Mesh | None = None) -> jax.sharding.Mesh:
  """The given mesh (any axes, e.g. fpjax.parallel.make_mesh's ('data','bank')), or a 1-D
  mesh ('data',) over all devices.

  Training is pure data parallelism, so the batch is split over every device of the mesh.
  Axis types are set to Auto: with Explicit axes (JAX's default) every op in the models would
  need sharding annotations, while here the partitioner propagates the batch sharding itself.
  """
  if mesh is None:
    return jax.make_mesh((jax.device_count(),), ('data',),
                         axis_types=(jax.sharding.AxisType.Auto,))
  return jax.sharding.Mesh(mesh.devices, mesh.axis_names,
                           axis_types=(jax.sharding.AxisType.Auto,) * len(mesh.axis_names))


def data_size(mesh) -> int:
  return int(mesh.devices.size)


def shard_batch(x: np.ndarray, mesh) -> jax.Array:
  """Host batch (leading dim divisible by the device count) -> global array split over all mesh axes."""
  return jax.device_put(x, NamedSharding(mesh, P(tuple(mesh.axis_names))))


def replicate(tree: Any, mesh) -> Any:
  return jax.device_put(tree, NamedSharding(mesh, P()))


def round_batch(batch_size: int, n: int, mesh) -> int:
  """Largest batch <= min(batch_size, n) that the 'data' axis divides (at least one row per device)."""
  d = data_size(mesh)
  b = max(d, (min(int(batch_size), max(int(n), 1)) // d) * d)
  return b


def apply_batched(fn: Callable[[jax.Array], jax.Array], x: np.ndarray, *, batch_size: int,
                  mesh) -> np.ndarray:
  """Runs a jitted ``fn`` over x in fixed-size, zero-padded batches (one compilation, bounded memory)."""
  n = x.shape[0]
  b = round_batch(batch_size, n, mesh)
  b = -(-min(b, max(n, 1)) // data_size(mesh)) * data_size(mesh)
  outs = []
  for start in range(0, n, b):
    chunk = np.asarray(x[start:start + b])
    pad = b - chunk.shape[0]
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
    out = np.asarray(fn(shard_batch(chunk, mesh)))
    outs.append(out[:b - pad])
  if not outs:
    raise ValueError('apply_batched: got 0 inputs')
  return np.concatenate(outs)


def check_finite(x: np.ndarray, what: str) -> None:
  if not np.all(np.isfinite(x)):
    row_ok = np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1)
    bad = int(np.argmin(row_ok))
    raise ValueError(f'{what}: row {bad} contains NaN or inf')


def check_training_data(x: np.ndarray, y_train, name: str) -> tuple[np.ndarray, np.ndarray]:
  """Validates a classifier's training set; returns (classes, integer labels)."""
  check_finite(x, f'{name}.fit x_train')
  y = np.asarray(y_train)
  if y.shape != (x.shape[0],):
    raise ValueError(f'{name}.fit: y_train must have shape [{x.shape[0]}], got {y.shape}')
  classes, yi = np.unique(y, return_inverse=True)
  if len(classes) < 2:
    raise ValueError(f'{name}.fit: need at least 2 classes')
  return classes, yi


def _kernel_l2(params) -> jax.Array:
  """Sum of squared weight matrices (biases and BatchNorm scales are not penalised)."""
  total = jnp.zeros((), jnp.float32)
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    if 'kernel' in jax.tree_util.keystr(path):
      total = total + jnp.sum(jnp.square(leaf))
  return total


def make_train_step(loss_fn: Callable, tx: optax.GradientTransformation) -> Callable:
  """One jitted optax step on split nnx state.

  loss_fn(params, rest, *batch) -> (loss, new_rest); the step returns
  (params, rest, opt_state, loss).
  """
  @jax.jit
  def step(params, rest, opt_state, *batch):
    (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest, *batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), rest, opt_state, loss
  return step


def fit_classifier(model: nnx.Module, x: np.ndarray, y: np.ndarray, *,
                   make_tx: Callable[[int, int], optax.GradientTransformation],
                   epochs: int | None = None, steps: int | None = None, batch_size: int = 64,
                   mesh=None, seed: int = 0, l2: float = 0.0, val_fraction: float = 0.0,
                   patience: int | None = None,
                   augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
                   name: str = 'classifier') -> dict:
  """Trains ``model`` in place with cross-entropy (+ 0.5*l2*||W||^2); returns the history.

  make_tx(total_steps, steps_per_epoch) builds the optax optimizer, so schedules can be
  written in epochs. With ``val_fraction`` > 0 a stratified validation split is taken from
  x (seeded) and the parameters of the epoch with the lowest validation loss are kept;
  ``patience`` epochs without improvement stop training early. ``augment`` runs on the
  host on each numpy batch (e.g. Pillow JPEG round trips).
  """
  mesh = default_mesh(mesh)
  x = np.asarray(x)
  y = np.asarray(y, dtype=np.int32)
  if x.shape[0] != y.shape[0]:
    raise ValueError(f'{name}: {x.shape[0]} inputs but {y.shape[0]} labels')
  check_finite(x, f'{name}.fit inputs')
  rng = np.random.default_rng(seed)
  train_idx, val_idx = stratified_split(y, val_fraction, rng)
  b = round_batch(batch_size, len(train_idx), mesh)
  steps_per_epoch = max(1, len(train_idx) // b)
  if steps is None:
    if epochs is None:
      raise ValueError(f'{name}: give epochs or steps')
    total_steps = int(epochs) * steps_per_epoch
  else:
    total_steps = int(steps)
  tx = make_tx(total_steps, steps_per_epoch)

  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params, rest = replicate((params, rest), mesh)
  opt_state = replicate(tx.init(params), mesh)

  def loss_fn(params, rest, xb, yb):
    m = nnx.merge(graphdef, params, rest, copy=True)
    logits = m(xb, train=True)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
    _, _, new_rest = nnx.split(m, nnx.Param, ...)
    loss = ce + 0.5 * l2 * _kernel_l2(params) if l2 else ce
    return loss, new_rest

  train_step = make_train_step(loss_fn, tx)

  @jax.jit
  def eval_logits(params, rest, xb):
    return nnx.merge(graphdef, params, rest)(xb, train=False)

  history = {'train_loss': [], 'val_loss': [], 'val_accuracy': [], 'best_epoch': None,
             'steps': 0}
  best = (np.inf, None)
  since_best = 0
  step = 0
  epoch = 0
  while step < total_steps:
    order = rng.permutation(train_idx)
    losses = []
    for i in range(steps_per_epoch):
      if step >= total_steps:
        break
      idx = order[i * b:(i + 1) * b]
      xb = x[idx]
      if augment is not None:
        xb = augment(xb, rng)
      params, rest, opt_state, loss = train_step(
          params, rest, opt_state, shard_batch(np.asarray(xb, np.float32), mesh),
          shard_batch(y[idx], mesh))
      losses.append(loss)
      step += 1
    losses = np.asarray(jax.device_get(jnp.stack(losses)))
    if not np.all(np.isfinite(losses)):
      bad = step - len(losses) + int(np.argmax(~np.isfinite(losses)))
      raise NonFiniteLossError(
          f'{name}: training loss became {losses[~np.isfinite(losses)][0]} at step {bad} '
          f'(epoch {epoch}); lower the learning rate or check the inputs')
    history['train_loss'].append(float(losses.mean()))
    if len(val_idx):
      logits = apply_batched(lambda xb: eval_logits(params, rest, xb), x[val_idx],
                             batch_size=max(b, 256), mesh=mesh)
      logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32))
      vloss = float(-np.mean(np.take_along_axis(np.asarray(logp), y[val_idx, None], 1)))
      history['val_loss'].append(vloss)
      history['val_accuracy'].append(float(np.mean(logits.argmax(1) == y[val_idx])))
      if vloss < best[0] - 1e-7:
        best = (vloss, jax.device_get((params, rest)))
        history['best_epoch'] = epoch
        since_best = 0
      else:
        since_best += 1
        if patience is not None and since_best >= patience:
          break
    epoch += 1
  history['steps'] = step
  if best[1] is not None:
    params, rest = best[1]
  nnx.update(model, jax.device_get(params), jax.device_get(rest))
  return history


def stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator):
  """Per class, ``fraction`` of the rows (at least one if the class has >= 2) go to the second split."""
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f'validation fraction must be in [0, 1), got {fraction}')
  all_idx = np.arange(len(y))
  if fraction == 0.0:
    return all_idx, all_idx[:0]
  first, second = [], []
  for c in np.unique(y):
    idx = rng.permutation(np.flatnonzero(y == c))
    k = int(round(fraction * len(idx)))
    if len(idx) >= 2:
      k = min(max(k, 1), len(idx) - 1)
    else:
      k = 0
    second.append(idx[:k])
    first.append(idx[k:])
  return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def predict_logits(model: nnx.Module, x: np.ndarray, *, batch_size: int = 256, mesh=None,
                   method: str = '__call__') -> np.ndarray:
  """Inference-mode outputs (logits, or ``method='features'``) in padded, sharded batches."""
  mesh = default_mesh(mesh)
  graphdef, state = nnx.split(model)
  state = replicate(state, mesh)

  @jax.jit
  def f(state, xb):
    m = nnx.merge(graphdef, state)
    return getattr(m, method)(xb, train=False) if method != '__call__' else m(xb, train=False)

  return apply_batched(lambda xb: f(state, xb), np.asarray(x, np.float32), batch_size=batch_size,
                       mesh=mesh)


# ---------------------------------------------------------------------------------------
# Checkpoints: <path>/config.json (everything needed to rebuild the module) and
# <path>/state (orbax StandardCheckpointer of the nnx state plus extra arrays).


def save_checkpoint(path: str, model: nnx.Module, config: dict,
                    extra: dict[str, np.ndarray] | None = None) -> None:
  import orbax.checkpoint as ocp
  path = os.path.abspath(os.fspath(path))
  os.makedirs(path, exist_ok=True)
  tree = {'model': nnx.state(model),
          'extra': {k: np.asarray(v) for k, v in (extra or {}).items()}}
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.join(path, 'state'), tree, force=True)
    ckptr.wait_until_finished()
  if jax.process_index() == 0:
    with open(os.path.join(path, 'config.json'), 'w') as f:
      json.dump(config, f, indent=1, sort_keys=True)


def read_config(path: str) -> dict:
  cfg = os.path.join(os.path.abspath(os.fspath(path)), 'config.json')
  if not os.path.exists(cfg):
    raise ValueError(f'{cfg}: no config.json; not a checkpoint written by fpjax')
  with open(cfg) as f:
    return json.load(f)


def load_checkpoint(path: str, build_fn: Callable[[], nnx.Module],
                    extra_like: dict[str, jax.ShapeDtypeStruct] | None = None):
  """Restores a module built by ``build_fn`` (shapes only, no init cost) and the extra arrays."""
  import orbax.checkpoint as ocp
  path = os.path.abspath(os.fspath(path))
  abstract = nnx.eval_shape(build_fn)
  graphdef, abstract_state = nnx.split(abstract)
  target = {'model': abstract_state, 'extra': dict(extra_like or {})}
  with ocp.StandardCheckpointer() as ckptr:
    restored = ckptr.restore(os.path.join(path, 'state'), target)
  model = nnx.merge(graphdef, restored['model'])
  extra = {k: np.asarray(v) for k, v in restored['extra'].items()}
  return model, extra
