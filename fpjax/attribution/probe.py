"""Linear probe: multinomial logistic regression on z-scored, flattened artifact features.

Objective: mean cross-entropy + 0.5 * l2 * ||W||^2 (bias unpenalised), i.e. scikit-learn's
``LogisticRegression(C=1 / (l2 * n_train))``. Trained with optax Adam in minibatches that
are sharded over the device mesh ('data'); the epoch with the lowest loss on a validation
split taken from the training data is kept, and training stops after ``patience`` epochs
without improvement.

x may be a numpy array or a lazy array-like (len, shape, dtype, contiguous slices x[a:b]);
it is never read whole: the z-score statistics come from one streamed float64 pass,
training minibatches from a shuffle buffer of ``buffer_blocks`` x ``block_rows`` rows, and
predictions a slice at a time (see fpjax.models.training).

Everything here is eager: host numpy in and out, with jitted training steps and prediction
batches on the device mesh inside; none of it can be called under jit.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
import optax

from fpjax.errors import UserInputError
from fpjax.models import resnet, training
from fpjax.models.training import check_labels  # re-exported: the classifiers' label check


def check_options(name: str, *, epochs, batch_size, lr, val_fraction, patience) -> None:
  """Refuses training options that would silently do something else (UserInputError): epochs
  and batch_size must be integers >= 1 (epochs=0 returned an untrained model, batch_size=0
  ran one row per device), lr > 0, 0 <= val_fraction < 1, patience None or an integer >= 1."""
  for what, value in (('epochs', epochs), ('batch_size', batch_size)) + (
      (('patience', patience),) if patience is not None else ()):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise UserInputError(f'{name}: {what} must be an integer >= 1; got {value!r}')
  if not (np.isfinite(lr) and lr > 0):
    raise UserInputError(f'{name}: lr must be > 0; got {lr!r}')
  if not 0 <= val_fraction < 1:
    raise UserInputError(f'{name}: val_fraction must be in [0, 1); got {val_fraction!r}')


@dataclasses.dataclass
class LinearProbe:
  """Multinomial logistic regression on z-scored, flattened features (module doc). Eager.

  l2: weight penalty 0.5 * l2 * ||W||^2 (>= 0); lr: Adam's learning rate; epochs: passes
  over the training rows (>= 1); batch_size: rows per step (>= 1; rounded down to a multiple
  of the mesh's 'data' axis, at most the training rows); val_fraction: stratified share of
  the training rows kept for early stopping (0: none); patience: epochs without a better
  validation loss before stopping (None: never); mesh: the device mesh (None: all devices);
  block_rows / buffer_blocks: the shuffle buffer; per_dispatch: steps per device dispatch.
  Fitted attributes: classes_ [K], mean_ / std_ [D] float32, history_ (dict).
  """
  l2: float = 1e-4
  lr: float = 1e-2
  epochs: int = 300
  batch_size: int = 256
  val_fraction: float = 0.1
  patience: int = 20
  mesh: object = dataclasses.field(default=None, repr=False, compare=False)
  block_rows: int = training.BLOCK_ROWS
  buffer_blocks: int = training.BUFFER_BLOCKS
  per_dispatch: int | None = dataclasses.field(default=None, repr=False, compare=False)

  def __post_init__(self):
    check_options('LinearProbe', epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                  val_fraction=self.val_fraction, patience=self.patience)
    if not (np.isfinite(self.l2) and self.l2 >= 0):
      raise UserInputError(f'LinearProbe: l2 must be >= 0; got {self.l2!r}')
    self.model = None
    self.classes_ = None
    self.mean_ = None
    self.std_ = None
    self.history_ = None

  def _prepare(self, x):
    """x as a lazy [N, D] float32 array-like (flattened a slice at a time)."""
    x = training.as_rows(x)
    if len(x.shape) < 2:
      raise UserInputError(f'LinearProbe: x must be [N, ...] with N samples, got shape '
                           f'{tuple(x.shape)}')
    d = int(np.prod(x.shape[1:]))
    return training.MappedRows(x, lambda a: a.reshape(len(a), d).astype(np.float32),
                               (x.shape[0], d))

  def _standardize(self, x):
    if x.shape[1] != self.mean_.shape[0]:
      raise UserInputError(f'LinearProbe was fit on {self.mean_.shape[0]} features, got '
                           f'{x.shape[1]}')
    mean, std = self.mean_, self.std_

    def standardize(a):
      # In place: `a` is a fresh float32 block from _prepare (astype copies), and a training
      # buffer's worth of blocks would otherwise cost two more temporaries per block.
      a -= mean
      a /= std
      return a
    return training.MappedRows(x, standardize, x.shape)

  def fit(self, x_train, y_train, seed: int = 0, val_rows=None) -> 'LinearProbe':
    """Fits the probe; returns self. Eager.

    Args:
      x_train: [N, ...] real numbers (flattened to [N, D]; numpy or a lazy array-like).
      y_train: [N] labels, integers >= 0 or names (`check_labels`); at least two classes.
      seed: initialisation, shuffling and the validation draw.
      val_rows: positions in x_train that early stopping reads and the fit does not train on
        (None: a stratified val_fraction of the rows, drawn with seed).
    The standardisation statistics come from every row of x_train either way. Raises
    UserInputError / ValueError on bad labels or shapes, ValueError naming a NaN or inf row.
    """
    x = self._prepare(x_train)
    self.classes_, yi = check_labels(y_train, x.shape[0], 'LinearProbe')
    # Statistics in float64 over a streamed pass: float32 sums lose digits on large N.
    mean, std = training.streamed_moments(x, 'LinearProbe.fit x_train', per_feature=True,
                                          block_rows=self.block_rows)
    self.mean_ = mean.astype(np.float32)
    self.std_ = np.where(std > 1e-8, std, 1.0).astype(np.float32)  # constant features -> 0
    self.model = resnet.Linear(x.shape[1], len(self.classes_), rngs=resnet.nnx.Rngs(seed))
    self.history_ = training.fit_classifier(
        self.model, self._standardize(x), yi.astype(np.int32), epochs=self.epochs,
        batch_size=self.batch_size, mesh=self.mesh, seed=seed, l2=self.l2,
        val_fraction=self.val_fraction, val_rows=val_rows, patience=self.patience,
        make_tx=self._make_tx, name='LinearProbe',
        block_rows=self.block_rows, buffer_blocks=self.buffer_blocks,
        per_dispatch=self.per_dispatch)
    return self

  def _make_tx(self, total_steps: int, steps_per_epoch: int) -> optax.GradientTransformation:
    """fit's optimizer (fit_classifier's make_tx): Adam at a constant lr."""
    del total_steps, steps_per_epoch
    return optax.adam(self.lr)

  def _logits(self, x) -> np.ndarray:
    if self.model is None:
      raise ValueError('LinearProbe: call fit (or LinearProbe.load) first')
    return training.predict_logits(self.model, self._standardize(self._prepare(x)),
                                   batch_size=min(4096, self.block_rows * self.buffer_blocks),
                                   mesh=self.mesh)

  def predict_proba(self, x) -> np.ndarray:
    """Class probabilities, float32 [N, K] in the order of classes_, for x [N, ...] shaped as
    in fit. Eager."""
    return np.asarray(jax.nn.softmax(self._logits(x), axis=-1))

  def predict(self, x) -> np.ndarray:
    """The most probable class of each row of x [N, ...]: [N], labels as given to fit (their
    dtype). Eager."""
    return self.classes_[self._logits(x).argmax(-1)]

  def score(self, x, y) -> float:
    """Accuracy (a float in [0, 1]) of predict(x) against labels y [N]. Eager."""
    return accuracy(self.predict(x), y, 'LinearProbe')

  def save(self, path: str) -> None:
    """Writes the fitted probe to the checkpoint folder path (orbax). Eager."""
    if self.model is None:
      raise ValueError('LinearProbe.save: nothing to save, call fit first')
    config = dict(type='LinearProbe', l2=self.l2, lr=self.lr, epochs=self.epochs,
                  batch_size=self.batch_size, val_fraction=self.val_fraction,
                  patience=self.patience, in_features=int(self.mean_.shape[0]),
                  classes=self.classes_.tolist(), classes_dtype=str(self.classes_.dtype))
    training.save_checkpoint(path, self.model, config, {'mean': self.mean_, 'std': self.std_})

  @classmethod
  def load(cls, path: str, mesh=None) -> 'LinearProbe':
    """The probe saved at path, to predict on mesh (None: all devices). Eager."""
    config = training.read_config(path)
    if config.get('type') != 'LinearProbe':
      raise ValueError(f'{path}: not a LinearProbe checkpoint (type={config.get("type")!r})')
    d = config['in_features']
    classes = np.asarray(config['classes'], dtype=config['classes_dtype'])
    like = {k: jax.ShapeDtypeStruct((d,), np.float32) for k in ('mean', 'std')}
    model, extra = training.load_checkpoint(
        path, lambda: resnet.Linear(d, len(classes), rngs=resnet.nnx.Rngs(0)), like)
    probe = cls(**{k: config[k] for k in ('l2', 'lr', 'epochs', 'batch_size', 'val_fraction',
                                          'patience')}, mesh=mesh)
    probe.model, probe.classes_ = model, classes
    probe.mean_, probe.std_ = extra['mean'], extra['std']
    return probe


def accuracy(predicted: np.ndarray, y, name: str) -> float:
  """The share of predicted [N] equal to y [N] (a float); UserInputError if y is not [N]."""
  y = np.asarray(y)
  if y.shape != predicted.shape:
    raise UserInputError(f'{name}.score: y must be [{len(predicted)}]; got shape {y.shape}')
  return float(np.mean(predicted == y))
