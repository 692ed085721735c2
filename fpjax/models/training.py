"""One way of training and running fpjax's Flax NNX classifiers, data-parallel on a mesh.

The batch is sharded along the mesh axis 'data' (``NamedSharding(mesh, P('data'))``; on a
multi-axis mesh along all its axes) and the
parameters are replicated; ``jax.jit`` then computes the global-batch loss and gradient (XLA
inserts the all-reduce), so the same code runs on 1 CPU, 8 GPUs or a TPU slice, and gives the
same result up to float summation order. Used by the linear probe, the attributor, the SL
encoder and the CNN baselines.

Steps per dispatch (:func:`steps_per_dispatch`, :class:`StepLoop`): on GPU and TPU a chunk of
steps runs as one ``lax.scan`` over stacked batches (one dispatch from Python per chunk); on
the CPU a Python loop over one jitted step is faster (XLA:CPU runs convolutions inside scan
bodies slower; ``benchmarks/training_loops.py`` measures it). Both paths take the same batches
and keys in the same order and agree to float rounding.

Streaming inputs: ``x`` may be a numpy array or any array-like with ``__len__``, ``.shape``,
``.dtype`` and contiguous slicing ``x[a:b] -> array`` (e.g. a lazy on-disk array). Nothing here
reads x whole: checks and predictions go a slice at a time, and training minibatches come
from a shuffle buffer (fpjax.models.streaming), so memory is bounded by the buffer, not N.
The streaming helpers and the module checkpoints (fpjax.models.checkpoints) are re-exported
here, where the classifiers call them.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from fpjax.errors import UserInputError
from fpjax.models.checkpoints import load_checkpoint, read_config, save_checkpoint
from fpjax.models.streaming import (BLOCK_ROWS, BUFFER_BLOCKS, MappedRows, as_rows, check_finite,
                                    iter_slices, selected_chunks, shuffled_minibatches,
                                    streamed_moments)

STEPS_PER_DISPATCH_ENV = 'FPJAX_STEPS_PER_DISPATCH'
# Steps per dispatch on GPU/TPU: enough that the launch overhead (~tens of us per step plus a
# host round trip) is amortised; a scan does not unroll, so compile time does not grow with it.
ACCELERATOR_STEPS_PER_DISPATCH = 100


class NonFiniteLossError(FloatingPointError):
  """Training loss became NaN or inf."""


# The names the classifiers call through this module (defined in streaming / checkpoints).
__all__ = ['ACCELERATOR_STEPS_PER_DISPATCH', 'BLOCK_ROWS', 'BUFFER_BLOCKS', 'MappedRows',
           'NonFiniteLossError', 'STEPS_PER_DISPATCH_ENV', 'StepLoop', 'apply_batched', 'as_rows',
           'check_finite', 'check_labels', 'classifier_loss', 'data_size', 'default_mesh',
           'fit_classifier', 'iter_slices', 'load_checkpoint', 'make_train_step',
           'predict_logits', 'read_config', 'replicate', 'round_batch', 'save_checkpoint',
           'shard_batch', 'shuffled_minibatches', 'steps_per_dispatch', 'stratified_split',
           'streamed_moments']


def steps_per_dispatch(override: int | None = None) -> int:
  """How many training (or sampling) steps one call from Python runs on the device.

  ``override`` wins, then the environment variable FPJAX_STEPS_PER_DISPATCH; otherwise 1 on
  the CPU (a Python loop over one jitted step: faster on XLA:CPU, see
  benchmarks/training_loops.py) and ACCELERATOR_STEPS_PER_DISPATCH on GPU and TPU.
  """
  if override is None:
    env = os.environ.get(STEPS_PER_DISPATCH_ENV, '').strip()
    if env:
      try:
        override = int(env)
      except ValueError:
        raise ValueError(f'{STEPS_PER_DISPATCH_ENV}={env!r}: expected a positive integer') from None
  if override is not None:
    if int(override) < 1:
      raise ValueError(f'steps per dispatch must be >= 1, got {override}')
    return int(override)
  return 1 if jax.default_backend() == 'cpu' else ACCELERATOR_STEPS_PER_DISPATCH


class StepLoop:
  """Runs ``step(carry, batch, *consts) -> (carry, out)`` over a stream of batches.

  ``run(carry, batches, *consts)`` takes the batches (pytrees of host arrays, one per step) in
  order, ``per_dispatch`` at a time: with 1, each step is one call of the jitted step (the
  CPU path); with S > 1, S batches are stacked and one jitted ``lax.scan`` runs them (the
  GPU/TPU path; a shorter last group is scanned too, so at most a few lengths compile). The
  carry is donated. With a mesh, batch leaves are split over all its axes along their batch
  dimension (scalars such as step indices are replicated). Returns (carry, outs stacked
  over the steps, on the device).
  """

  def __init__(self, step: Callable, *, per_dispatch: int | None = None, mesh=None):
    self.per_dispatch = steps_per_dispatch(per_dispatch)
    self.mesh = mesh
    self._one = jax.jit(step, donate_argnums=0)

    def many(carry, batches, *consts):
      return jax.lax.scan(lambda c, b: step(c, b, *consts), carry, batches)
    self._many = jax.jit(many, donate_argnums=0)

  @property
  def scan(self):
    """The jitted scanned path (GPU/TPU): scan(carry, stacked batches, *consts) -> (carry,
    outs); e.g. to lower or compile it ahead of time (tests/aot)."""
    return self._many

  def _put(self, tree, stacked: bool):
    axis = 1 if stacked else 0
    if self.mesh is None:
      return jax.tree.map(jnp.asarray, tree)

    def put(a):
      a = np.asarray(a)
      spec = P(*([None] * axis), tuple(self.mesh.axis_names)) if a.ndim > axis else P()
      return jax.device_put(a, NamedSharding(self.mesh, spec))
    return jax.tree.map(put, tree)

  def run(self, carry, batches: Iterable, *consts):
    outs = []
    group = []

    def flush(carry):
      if len(group) == 1:
        carry, out = self._one(carry, self._put(group[0], False), *consts)
        outs.append(jax.tree.map(lambda o: o[None], out))
      else:
        stacked = jax.tree.map(lambda *a: np.stack(a), *group)
        carry, out = self._many(carry, self._put(stacked, True), *consts)
        outs.append(out)
      group.clear()
      return carry

    for b in batches:
      group.append(b)
      if len(group) == self.per_dispatch:
        carry = flush(carry)
    if group:
      carry = flush(carry)
    if not outs:
      return carry, None
    return carry, jax.tree.map(lambda *o: jnp.concatenate(o), *outs)


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
  """Host batch (leading dim divisible by the device count) -> global array split over all
  mesh axes."""
  return jax.device_put(x, NamedSharding(mesh, P(tuple(mesh.axis_names))))


def replicate(tree: Any, mesh) -> Any:
  return jax.device_put(tree, NamedSharding(mesh, P()))


def round_batch(batch_size: int, n: int, mesh) -> int:
  """Largest batch <= min(batch_size, n) that the 'data' axis divides (at least one row per
  device)."""
  d = data_size(mesh)
  b = max(d, (min(int(batch_size), max(int(n), 1)) // d) * d)
  return b


def apply_batched(fn: Callable[[jax.Array], jax.Array], x, *, batch_size: int, mesh,
                  rows: np.ndarray | None = None, block_rows: int | None = None) -> np.ndarray:
  """Runs a jitted ``fn`` over x in fixed-size, zero-padded batches (one compilation, bounded
  memory).

  x: array-like, read in slices of ``block_rows`` (default: the batch size); with ``rows``
  (sorted indices), only those rows.
  """
  n = int(x.shape[0]) if rows is None else len(rows)
  b = round_batch(batch_size, n, mesh)
  b = -(-min(b, max(n, 1)) // data_size(mesh)) * data_size(mesh)
  outs = []
  pending, held = [], 0

  def run(chunk):
    pad = b - chunk.shape[0]
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
    outs.append(np.asarray(fn(shard_batch(chunk, mesh)))[:b - pad])

  for chunk in selected_chunks(x, rows, block_rows or b):
    pending.append(chunk)
    held += len(chunk)
    while held >= b:
      cat = np.concatenate(pending)
      run(cat[:b])
      pending, held = [cat[b:]], held - b
  if held:
    run(np.concatenate(pending))
  if not outs:
    raise ValueError('apply_batched: got 0 inputs')
  return np.concatenate(outs)


def check_labels(y, n: int, name: str) -> tuple[np.ndarray, np.ndarray]:
  """Validates a classifier's training labels; returns (classes [K], indices into classes [n]).

  y [n]: model labels, integers >= 0 or names (strings); at least two distinct. Eager.
  Raises UserInputError for float or bool labels (a float label would be truncated or make
  a class of its own), negative integers (the artifact store's -1 marks a bad row: leave
  those rows out), another shape, or fewer than two classes.
  """
  y = np.asarray(y)
  if y.dtype.kind in 'fcb':
    raise UserInputError(f'{name}.fit: labels must be integers >= 0 or names; got dtype '
                         f'{y.dtype}')
  if y.dtype.kind in 'iu' and y.shape == (n,) and n and y.min() < 0:
    row = int(np.argmax(y < 0))
    raise UserInputError(f'{name}.fit: label {y[row]} at row {row}: labels must be >= 0 (-1 '
                         f'marks a bad row of the artifact store: leave those rows out)')
  if y.shape != (n,):
    raise UserInputError(f'{name}.fit: y_train must have shape [{n}], got {y.shape}')
  classes, yi = np.unique(y, return_inverse=True)
  if len(classes) < 2:
    raise UserInputError(f'{name}.fit: need at least 2 classes')
  return classes, yi


def _kernel_l2(params) -> jax.Array:
  """Sum of squared weight matrices (biases and BatchNorm scales are not penalised)."""
  total = jnp.zeros((), jnp.float32)
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    if 'kernel' in jax.tree_util.keystr(path):
      total = total + jnp.sum(jnp.square(leaf))
  return total


def make_train_step(loss_fn: Callable, tx: optax.GradientTransformation) -> Callable:
  """One optax step on split nnx state, in StepLoop's form (not jitted: StepLoop jits it).

  loss_fn(params, rest, *batch, *consts) -> (loss, new_rest); the step is
  step((params, rest, opt_state), batch, *consts) -> ((params, rest, opt_state), loss).
  """
  def step(carry, batch, *consts):
    params, rest, opt_state = carry
    (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest, *batch, *consts)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), rest, opt_state), loss
  return step


def classifier_loss(graphdef, l2: float = 0.0) -> Callable:
  """fit_classifier's objective for ``make_train_step``: loss_fn(params, rest, xb, yb) ->
  (mean cross-entropy + 0.5*l2*||W||^2, new rest), the module rebuilt from ``graphdef``."""
  def loss_fn(params, rest, xb, yb):
    m = nnx.merge(graphdef, params, rest, copy=True)
    logits = m(xb, train=True)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
    _, _, new_rest = nnx.split(m, nnx.Param, ...)
    loss = ce + 0.5 * l2 * _kernel_l2(params) if l2 else ce
    return loss, new_rest
  return loss_fn


def fit_classifier(model: nnx.Module, x, y: np.ndarray, *,
                   make_tx: Callable[[int, int], optax.GradientTransformation],
                   epochs: int | None = None, steps: int | None = None, batch_size: int = 64,
                   mesh=None, seed: int = 0, l2: float = 0.0, val_fraction: float = 0.0,
                   val_rows=None, patience: int | None = None,
                   augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
                   name: str = 'classifier', block_rows: int = BLOCK_ROWS,
                   buffer_blocks: int = BUFFER_BLOCKS,
                   per_dispatch: int | None = None) -> dict:
  """Trains ``model`` in place with cross-entropy (+ 0.5*l2*||W||^2); returns the history.

  x: numpy array or array-like (len, shape, dtype, contiguous slices), never read whole;
  minibatches come from a shuffle buffer of ``buffer_blocks`` blocks of ``block_rows`` rows
  (:func:`shuffled_minibatches`), validation logits a slice at a time. y stays in memory.
  make_tx(total_steps, steps_per_epoch) builds the optax optimizer, so schedules can be
  written in epochs. With ``val_fraction`` > 0 a stratified validation split is taken from
  x (seeded) and the parameters of the epoch with the lowest validation loss are kept;
  ``val_rows`` (positions in x) names the validation rows instead of drawing them;
  ``patience`` epochs without improvement stop training early. ``augment`` runs on the
  host on each numpy batch (e.g. Pillow JPEG round trips). ``per_dispatch``: steps per
  device dispatch (:func:`steps_per_dispatch`); within an epoch and at most one buffer's
  worth of minibatches at a time.
  """
  mesh = default_mesh(mesh)
  x = as_rows(x)
  y = np.asarray(y, dtype=np.int32)
  if x.shape[0] != y.shape[0]:
    raise ValueError(f'{name}: {x.shape[0]} inputs but {y.shape[0]} labels')
  check_finite(x, f'{name}.fit inputs', block_rows)
  rng = np.random.default_rng(seed)
  train_idx, val_idx = _train_and_validation_rows(y, val_fraction, val_rows, rng, name)
  b = round_batch(batch_size, len(train_idx), mesh)
  steps_per_epoch = max(1, len(train_idx) // b)
  if steps is None and epochs is None:
    raise ValueError(f'{name}: give epochs or steps')
  total_steps = int(epochs) * steps_per_epoch if steps is None else int(steps)
  tx = make_tx(total_steps, steps_per_epoch)

  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params, rest = replicate((params, rest), mesh)
  opt_state = replicate(tx.init(params), mesh)

  # A dispatch stacks at most one buffer of minibatches, so memory stays bounded by the buffer.
  buffer_rows = int(block_rows) * int(buffer_blocks)
  loop = StepLoop(make_train_step(classifier_loss(graphdef, l2), tx), mesh=mesh,
                  per_dispatch=min(steps_per_dispatch(per_dispatch), max(1, buffer_rows // b)))

  @jax.jit
  def eval_logits(params, rest, xb):
    return nnx.merge(graphdef, params, rest)(xb, train=False)

  history = {'train_loss': [], 'val_loss': [], 'val_accuracy': [], 'best_epoch': None,
             'steps': 0}
  best = _BestEpoch(patience)
  step = 0
  epoch = 0
  carry = (params, rest, opt_state)
  while step < total_steps:
    limit = min(steps_per_epoch, total_steps - step)
    batches = shuffled_minibatches(x, train_idx, b, rng, block_rows=block_rows,
                                   buffer_blocks=buffer_blocks)
    carry, losses = loop.run(carry, _labelled(batches, y, limit, augment, rng))
    losses = np.asarray(jax.device_get(losses))
    _check_losses(losses, step, epoch, name)
    step += len(losses)
    history['train_loss'].append(float(losses.mean()))
    if len(val_idx):
      params, rest, _ = carry
      logits = apply_batched(lambda xb: eval_logits(params, rest, xb), x, rows=val_idx,
                             batch_size=max(b, 256), mesh=mesh, block_rows=block_rows)
      vloss, vacc = _loss_and_accuracy(logits, y[val_idx])
      history['val_loss'].append(vloss)
      history['val_accuracy'].append(vacc)
      if best.stop(vloss, (params, rest), epoch):
        break
    epoch += 1
  history['steps'], history['best_epoch'] = step, best.epoch
  params, rest, _ = carry
  if best.state is not None:
    params, rest = best.state
  nnx.update(model, jax.device_get(params), jax.device_get(rest))
  return history


class _BestEpoch:
  """The state of the epoch with the lowest validation loss, and early stopping after
  `patience` epochs without an improvement (None: never)."""

  def __init__(self, patience: int | None):
    self.patience, self.loss, self.state, self.epoch, self.since = patience, np.inf, None, None, 0

  def stop(self, loss: float, state, epoch: int) -> bool:
    if loss < self.loss - 1e-7:
      self.loss, self.state, self.epoch, self.since = loss, jax.device_get(state), epoch, 0
      return False
    self.since += 1
    return self.patience is not None and self.since >= self.patience


def _labelled(batches, y, limit: int, augment, rng):
  """The first `limit` (float32 rows, labels) of shuffled_minibatches, augmented if asked."""
  for _, (idx, xb) in zip(range(limit), batches):
    if augment is not None:
      xb = augment(xb, rng)
    yield np.asarray(xb, np.float32), y[idx]


def _check_losses(losses: np.ndarray, step: int, epoch: int, name: str) -> None:
  """NonFiniteLossError at the first non-finite loss of the steps that started at `step`."""
  if not np.all(np.isfinite(losses)):
    bad = step + int(np.argmax(~np.isfinite(losses)))
    raise NonFiniteLossError(
        f'{name}: training loss became {losses[~np.isfinite(losses)][0]} at step {bad} '
        f'(epoch {epoch}); lower the learning rate or check the inputs')


def _train_and_validation_rows(y, val_fraction, val_rows, rng, name):
  """fit_classifier's (training rows, validation rows): val_rows if given, else a stratified
  split of val_fraction."""
  if val_rows is None:
    return stratified_split(y, val_fraction, rng)
  val_idx = np.unique(np.asarray(val_rows, np.int64))
  if len(val_idx) and (val_idx[0] < 0 or val_idx[-1] >= len(y)):
    raise ValueError(f'{name}: val_rows outside the {len(y)} training rows')
  train_idx = np.setdiff1d(np.arange(len(y)), val_idx)
  if not len(train_idx):
    raise ValueError(f'{name}: val_rows leave no training rows')
  return train_idx, val_idx


def _loss_and_accuracy(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
  """Mean cross-entropy and accuracy of logits [N, C] for int labels y [N]."""
  logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32))
  loss = float(-np.mean(np.take_along_axis(np.asarray(logp), y[:, None], 1)))
  return loss, float(np.mean(logits.argmax(1) == y))


def stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator, *,
                     strict: bool = False):
  """Per class, ``fraction`` of the rows (at least one if the class has >= 2) go to the second
  split.

  The package's one stratified split (the evaluation's 70/30 splits, the open set's enrolment
  split, validation splits). strict: a class whose second part would be empty or all of it is a
  ValueError instead of being clamped. Returns (first, second) sorted row indices.
  """
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f'validation fraction must be in [0, 1), got {fraction}')
  all_idx = np.arange(len(y))
  if fraction == 0.0 and not strict:
    return all_idx, all_idx[:0]
  first, second = [], []
  for c in np.unique(y):
    idx = rng.permutation(np.flatnonzero(y == c))
    k = int(round(fraction * len(idx)))
    if strict and not 1 <= k < len(idx):
      raise ValueError(f'class {c.item()!r} has {len(idx)} samples: too few to split '
                       f'{fraction:.0%} of them off')
    if len(idx) >= 2:
      k = min(max(k, 1), len(idx) - 1)
    else:
      k = 0
    second.append(idx[:k])
    first.append(idx[k:])
  return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def predict_logits(model: nnx.Module, x, *, batch_size: int = 256, mesh=None,
                   method: str = '__call__') -> np.ndarray:
  """Inference-mode outputs (logits, or ``method='features'``) in padded, sharded batches.

  x: numpy array or array-like, read ``batch_size`` rows at a time (cast to float32 per slice).
  """
  mesh = default_mesh(mesh)
  graphdef, state = nnx.split(model)
  state = replicate(state, mesh)

  @jax.jit
  def f(state, xb):
    m = nnx.merge(graphdef, state)
    return getattr(m, method)(xb, train=False) if method != '__call__' else m(xb, train=False)

  x = as_rows(x)
  x = MappedRows(x, lambda a: a.astype(np.float32, copy=False), x.shape)
  return apply_batched(lambda xb: f(state, xb), x, batch_size=batch_size, mesh=mesh)
