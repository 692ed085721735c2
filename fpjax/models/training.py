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
from a shuffle buffer (:func:`shuffled_minibatches`), so memory is bounded by the buffer, not N.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

# Shuffle buffer: blocks of BLOCK_ROWS contiguous rows, BUFFER_BLOCKS blocks per buffer
# (65,536 rows read and shuffled together).
BLOCK_ROWS = 4096
BUFFER_BLOCKS = 16

STEPS_PER_DISPATCH_ENV = 'FPJAX_STEPS_PER_DISPATCH'
# Steps per dispatch on GPU/TPU: enough that the launch overhead (~tens of us per step plus a
# host round trip) is amortised; a scan does not unroll, so compile time does not grow with it.
ACCELERATOR_STEPS_PER_DISPATCH = 100


class NonFiniteLossError(FloatingPointError):
  """Training loss became NaN or inf."""


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
  """Host batch (leading dim divisible by the device count) -> global array split over all mesh axes."""
  return jax.device_put(x, NamedSharding(mesh, P(tuple(mesh.axis_names))))


def replicate(tree: Any, mesh) -> Any:
  return jax.device_put(tree, NamedSharding(mesh, P()))


def round_batch(batch_size: int, n: int, mesh) -> int:
  """Largest batch <= min(batch_size, n) that the 'data' axis divides (at least one row per device)."""
  d = data_size(mesh)
  b = max(d, (min(int(batch_size), max(int(n), 1)) // d) * d)
  return b


# ---------------------------------------------------------------------------------------
# Streaming over array-likes: contiguous slices only, never the whole array.


def as_rows(x):
  """x itself if it is array-like enough to stream (len, shape, dtype, slicing), else np.asarray(x)."""
  if all(hasattr(x, a) for a in ('__len__', 'shape', 'dtype', '__getitem__')):
    return x
  return np.asarray(x)


class MappedRows:
  """The array-like ``fn(x[a:b])`` of an array-like x, computed one slice at a time.

  Used to reshape, cast and standardise inputs lazily: ``fn`` maps a numpy block of x's rows
  to a block of the same number of rows of shape ``shape[1:]``.
  """

  def __init__(self, x, fn: Callable[[np.ndarray], np.ndarray], shape, dtype=np.float32):
    self.x, self.fn = x, fn
    self.shape = (int(x.shape[0]),) + tuple(int(s) for s in shape[1:])
    self.dtype = np.dtype(dtype)

  def __len__(self):
    return self.shape[0]

  def __getitem__(self, s):
    if not isinstance(s, slice) or s.step not in (None, 1):
      raise TypeError(f'MappedRows supports contiguous slices x[a:b] only, got {s!r}')
    return np.asarray(self.fn(np.asarray(self.x[s])), self.dtype)


def iter_slices(x, block_rows: int = BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
  """(start, x[start:start+block_rows] as numpy) over x, in order."""
  for a in range(0, int(x.shape[0]), int(block_rows)):
    yield a, np.asarray(x[a:a + int(block_rows)])


def _rows_ok(chunk: np.ndarray) -> np.ndarray:
  return np.isfinite(chunk.reshape(chunk.shape[0], -1)).all(axis=1)


def check_finite(x, what: str, block_rows: int = BLOCK_ROWS) -> None:
  """Raises ValueError naming the first row with NaN or inf (a streamed pass over x)."""
  for a, chunk in iter_slices(x, block_rows):
    ok = _rows_ok(chunk)
    if not ok.all():
      raise ValueError(f'{what}: row {a + int(np.argmin(ok))} contains NaN or inf')


def streamed_moments(x, what: str, *, per_feature: bool, block_rows: int = BLOCK_ROWS):
  """Mean and standard deviation (ddof 0) of x in float64, in one streamed pass over slices.

  per_feature: over rows, one value per feature of x.reshape(N, -1); otherwise one scalar
  over all elements. Slices are merged with Chan et al.'s pairwise update (no
  sum-of-squares cancellation). Raises ValueError naming the first row with NaN or inf.
  """
  count, mean, m2 = 0, 0.0, 0.0
  for a, chunk in iter_slices(x, block_rows):
    ok = _rows_ok(chunk)
    if not ok.all():
      raise ValueError(f'{what}: row {a + int(np.argmin(ok))} contains NaN or inf')
    c = chunk.reshape(chunk.shape[0], -1).astype(np.float64)
    if not per_feature:
      c = c.reshape(-1, 1)
    nc = c.shape[0]
    mc = c.mean(0)
    m2c = np.square(c - mc).sum(0)
    delta = mc - mean
    total = count + nc
    mean = mean + delta * (nc / total)
    m2 = m2 + m2c + np.square(delta) * (count * nc / total)
    count = total
  if count == 0:
    raise ValueError(f'{what}: got 0 rows')
  mean, std = np.asarray(mean), np.sqrt(np.asarray(m2) / count)
  return (mean, std) if per_feature else (float(mean[0]), float(std[0]))


def shuffled_minibatches(x, rows: np.ndarray, batch_size: int, rng: np.random.Generator, *,
                         block_rows: int = BLOCK_ROWS, buffer_blocks: int = BUFFER_BLOCKS,
                         ) -> Iterator[np.ndarray]:
  """One epoch of minibatches (as row indices into x, with the rows) through a shuffle buffer.

  The rows 0..N-1 of x are cut into contiguous blocks of ``block_rows``; the blocks are
  visited in a random order, ``buffer_blocks`` at a time (in increasing order within a
  buffer); of each buffer the rows listed in ``rows`` are shuffled and cut into minibatches
  of ``batch_size``; the rows left over (< batch_size) join the next buffer. So every listed
  row is used at most once per epoch, floor(len(rows) / batch_size) minibatches are yielded,
  and when N <= block_rows * buffer_blocks it is one full shuffle of the rows.
  Memory: one buffer array, allocated once per epoch and refilled in place one block read at
  a time, so the host holds the buffer plus one block (not a concatenated copy of the buffer).
  Yields (row indices [b], x rows [b, ...]) (copies: the buffer may be refilled later).
  """
  n = int(x.shape[0])
  block_rows, buffer_blocks, batch_size = int(block_rows), int(buffer_blocks), int(batch_size)
  wanted = np.zeros(n, bool)
  wanted[rows] = True
  nblocks = -(-n // block_rows)
  order = rng.permutation(nblocks)
  buf_x = None
  buf_idx = np.empty(min(n, block_rows * buffer_blocks + batch_size), np.int64)
  held = 0  # rows carried over from the previous buffer, at the front of buf_x / buf_idx
  for g in range(0, nblocks, buffer_blocks):
    filled = held
    for c in np.sort(order[g:g + buffer_blocks]):
      a, b = int(c) * block_rows, min(n, (int(c) + 1) * block_rows)
      sel = np.flatnonzero(wanted[a:b])
      if len(sel) == 0:
        continue
      chunk = np.asarray(x[a:b])
      if buf_x is None:
        buf_x = np.empty((len(buf_idx),) + chunk.shape[1:], chunk.dtype)
      dst = slice(filled, filled + len(sel))
      if len(sel) == b - a:
        buf_x[dst] = chunk
      else:
        np.take(chunk, sel, axis=0, out=buf_x[dst])
      buf_idx[dst] = a + sel
      filled += len(sel)
      del chunk
    if filled == 0:
      continue
    perm = rng.permutation(filled)
    full = filled // batch_size
    for k in range(full):
      p = perm[k * batch_size:(k + 1) * batch_size]
      yield buf_idx[p], buf_x[p]
    rest = perm[full * batch_size:]
    held = len(rest)
    buf_x[:held], buf_idx[:held] = buf_x[rest], buf_idx[rest]


def _selected_chunks(x, rows: np.ndarray | None, read_rows: int) -> Iterator[np.ndarray]:
  """x in slices of read_rows (with ``rows``, sorted indices: only those rows, in order)."""
  if rows is None:
    for _, chunk in iter_slices(x, read_rows):
      yield chunk
    return
  rows = np.asarray(rows)
  for a, chunk in iter_slices(x, read_rows):
    lo, hi = np.searchsorted(rows, [a, a + len(chunk)])
    if hi > lo:
      yield chunk[rows[lo:hi] - a]


def apply_batched(fn: Callable[[jax.Array], jax.Array], x, *, batch_size: int, mesh,
                  rows: np.ndarray | None = None, block_rows: int | None = None) -> np.ndarray:
  """Runs a jitted ``fn`` over x in fixed-size, zero-padded batches (one compilation, bounded memory).

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

  for chunk in _selected_chunks(x, rows, block_rows or b):
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


def check_labels(y_train, n: int, name: str) -> tuple[np.ndarray, np.ndarray]:
  """Validates a classifier's labels; returns (classes, integer labels)."""
  y = np.asarray(y_train)
  if y.shape != (n,):
    raise ValueError(f'{name}.fit: y_train must have shape [{n}], got {y.shape}')
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
  if val_rows is None:
    train_idx, val_idx = stratified_split(y, val_fraction, rng)
  else:
    val_idx = np.unique(np.asarray(val_rows, np.int64))
    if len(val_idx) and (val_idx[0] < 0 or val_idx[-1] >= len(y)):
      raise ValueError(f'{name}: val_rows outside the {len(y)} training rows')
    train_idx = np.setdiff1d(np.arange(len(y)), val_idx)
    if not len(train_idx):
      raise ValueError(f'{name}: val_rows leave no training rows')
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

  # A dispatch stacks at most one buffer of minibatches, so memory stays bounded by the buffer.
  buffer_rows = int(block_rows) * int(buffer_blocks)
  loop = StepLoop(make_train_step(classifier_loss(graphdef, l2), tx), mesh=mesh,
                  per_dispatch=min(steps_per_dispatch(per_dispatch), max(1, buffer_rows // b)))

  @jax.jit
  def eval_logits(params, rest, xb):
    return nnx.merge(graphdef, params, rest)(xb, train=False)

  def epoch_batches(limit):
    batches = shuffled_minibatches(x, train_idx, b, rng, block_rows=block_rows,
                                   buffer_blocks=buffer_blocks)
    for _, (idx, xb) in zip(range(limit), batches):
      if augment is not None:
        xb = augment(xb, rng)
      yield np.asarray(xb, np.float32), y[idx]

  history = {'train_loss': [], 'val_loss': [], 'val_accuracy': [], 'best_epoch': None,
             'steps': 0}
  best = (np.inf, None)
  since_best = 0
  step = 0
  epoch = 0
  carry = (params, rest, opt_state)
  while step < total_steps:
    limit = min(steps_per_epoch, total_steps - step)
    carry, losses = loop.run(carry, epoch_batches(limit))
    losses = np.asarray(jax.device_get(losses))
    step += len(losses)
    if not np.all(np.isfinite(losses)):
      bad = step - len(losses) + int(np.argmax(~np.isfinite(losses)))
      raise NonFiniteLossError(
          f'{name}: training loss became {losses[~np.isfinite(losses)][0]} at step {bad} '
          f'(epoch {epoch}); lower the learning rate or check the inputs')
    history['train_loss'].append(float(losses.mean()))
    if len(val_idx):
      params, rest, _ = carry
      logits = apply_batched(lambda xb: eval_logits(params, rest, xb), x, rows=val_idx,
                             batch_size=max(b, 256), mesh=mesh, block_rows=block_rows)
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
  params, rest, _ = carry
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
