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
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
import optax

from fpjax.models import resnet, training


@dataclasses.dataclass
class LinearProbe:
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
    self.model = None
    self.classes_ = None
    self.mean_ = None
    self.std_ = None
    self.history_ = None

  def _prepare(self, x):
    """x as a lazy [N, D] float32 array-like (flattened a slice at a time)."""
    x = training.as_rows(x)
    if len(x.shape) < 2:
      raise ValueError(f'LinearProbe: x must be [N, ...] with N samples, got shape {tuple(x.shape)}')
    d = int(np.prod(x.shape[1:]))
    return training.MappedRows(x, lambda a: a.reshape(len(a), d).astype(np.float32),
                               (x.shape[0], d))

  def _standardize(self, x):
    if x.shape[1] != self.mean_.shape[0]:
      raise ValueError(f'LinearProbe was fit on {self.mean_.shape[0]} features, got {x.shape[1]}')
    mean, std = self.mean_, self.std_

    def standardize(a):
      # In place: `a` is a fresh float32 block from _prepare (astype copies), and a training
      # buffer's worth of blocks would otherwise cost two more temporaries per block.
      a -= mean
      a /= std
      return a
    return training.MappedRows(x, standardize, x.shape)

  def fit(self, x_train, y_train, seed: int = 0, val_rows=None) -> 'LinearProbe':
    """Fits on x_train; val_rows (positions in x_train): the rows early stopping reads, which
    the fit does not train on (None: a stratified val_fraction of the rows, drawn with seed).
    The standardisation statistics come from every row of x_train either way."""
    x = self._prepare(x_train)
    self.classes_, yi = training.check_labels(y_train, x.shape[0], 'LinearProbe')
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
    return np.asarray(jax.nn.softmax(self._logits(x), axis=-1))

  def predict(self, x) -> np.ndarray:
    return self.classes_[self._logits(x).argmax(-1)]

  def score(self, x, y) -> float:
    return float(np.mean(self.predict(x) == np.asarray(y)))

  def save(self, path: str) -> None:
    if self.model is None:
      raise ValueError('LinearProbe.save: nothing to save, call fit first')
    config = dict(type='LinearProbe', l2=self.l2, lr=self.lr, epochs=self.epochs,
                  batch_size=self.batch_size, val_fraction=self.val_fraction,
                  patience=self.patience, in_features=int(self.mean_.shape[0]),
                  classes=self.classes_.tolist(), classes_dtype=str(self.classes_.dtype))
    training.save_checkpoint(path, self.model, config, {'mean': self.mean_, 'std': self.std_})

  @classmethod
  def load(cls, path: str, mesh=None) -> 'LinearProbe':
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
