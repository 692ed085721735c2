"""The paper's Model Attributor: a classifier naming the source model of an artifact.

``arch='auto'`` (the default) chooses the network from the inputs and the embedding space
they come from (``space=``): image-shaped inputs [N, H, W, C] of a pixel space (rgb
artifacts, or images for the CNN baselines) go to the CIFAR-style ResNet; spectra (the freq
and dct spaces, SPECTRAL_SPACES) and vectors [N, D] (sl / ssl artifacts) go to an MLP on the
flattened input.

Why an MLP for spectra: a coordinate of a spectrum is one frequency, and a model's
fingerprint is excess or missing energy at particular frequencies, so the evidence is tied
to positions; the ResNet ends in global average pooling, which keeps what a feature is and
discards where it is (right for the local textures of rgb artifacts, wrong for spectra).
Measured on the demo zoo's 1-NN freq artifacts (15 models, 70/30 split, the demo's 5-epoch
attributor; README): ResNet 35 %, the same with the high frequencies moved from the borders
to the centre (ifftshift) 33 %, with coordinate channels 40 %, without the global pooling
(flattened last stage) 56 %, the linear probe 56 %, the MLP 63 %, the MLP on per-coordinate
z-scores 64 %. On rgb the ResNet keeps its lead (75 % vs the MLP's 54 %, 66 % z-scored).

Cross-entropy, SGD with momentum 0.9 and coupled weight decay (as in PyTorch), and
a step schedule (x0.1 at each milestone epoch). The batch is sharded over the device mesh.

Presets: 'paper' is the released script (widths 16/32/64, 3 blocks per stage, lr 0.1,
wd 1e-4, 180 epochs, steps at 100/150, batch 36); 'quick' (default) is a 1-block ResNet
trained 15 epochs, for CPUs. Any key can be overridden: ``Attributor(epochs=50)``.

x may be a numpy array or a lazy array-like (len, shape, dtype, contiguous slices x[a:b]);
it is never read whole: the shift/scale come from one streamed float64 pass, training
minibatches from a shuffle buffer of ``buffer_blocks`` x ``block_rows`` rows, and
predictions / features a slice at a time (see fpjax.models.training).

Everything here is eager: host numpy in and out, with jitted training steps and prediction
batches on the device mesh inside; none of it can be called under jit.
"""
from __future__ import annotations

import jax
import numpy as np
import optax

from fpjax.configs import defaults
from fpjax.attribution.probe import accuracy, check_labels, check_options
from fpjax.errors import UserInputError
from fpjax.models import resnet, training

# Embedding spaces whose coordinates are frequencies (fpjax.spaces): 'auto' gives them the MLP.
SPECTRAL_SPACES = ('freq', 'dct')

PRESETS = defaults.ATTRIBUTOR_PRESETS


class Attributor:
  """The paper's Model Attributor: fit / predict / predict_proba / score / save / load, like
  LinearProbe (module doc). Eager.

  ``preset``: 'quick' (default) or 'paper' (PRESETS); keyword overrides replace its options
  (epochs and batch_size integers >= 1, lr > 0, 0 <= val_fraction < 1, patience None or >= 1;
  UserInputError otherwise, ValueError for an unknown preset or option).
  ``space``: the embedding space the inputs come from ('rgb', 'freq', 'dct', 'sl', ...; None:
  unknown, treated as pixels); recorded in the checkpoint.
  ``arch``: 'auto' (MLP for vectors and for SPECTRAL_SPACES, ResNet for other [N,H,W,C]),
  'resnet', 'cnn' (SmallCNN), 'mlp'.
  ``optimizer``: 'sgd' (momentum, weight decay, step schedule) or 'adam' (b1, b2; used by
  the Yu19 baseline). ``augment``: optional host function (numpy batch, rng) -> batch,
  applied during training only (not saved). ``block_rows`` / ``buffer_blocks``: the shuffle
  buffer; ``per_dispatch``: steps per device dispatch (default by backend); none is saved.
  """

  def __init__(self, preset: str = 'quick', *, space: str | None = None, mesh=None, augment=None,
               block_rows: int = training.BLOCK_ROWS, buffer_blocks: int = training.BUFFER_BLOCKS,
               per_dispatch: int | None = None, **overrides):
    if preset not in PRESETS:
      raise ValueError(f'unknown Attributor preset {preset!r}; expected one of {sorted(PRESETS)}')
    unknown = set(overrides) - set(PRESETS[preset])
    if unknown:
      raise ValueError(f'Attributor: unknown options {sorted(unknown)}; known: '
                       f'{sorted(PRESETS[preset])}')
    self.config = dict(PRESETS[preset], **overrides, preset=preset)
    cfg = self.config
    check_options('Attributor', epochs=cfg['epochs'], batch_size=cfg['batch_size'], lr=cfg['lr'],
                  val_fraction=cfg['val_fraction'], patience=cfg['patience'])
    self.space = space
    self.mesh = mesh
    self.augment = augment
    self.block_rows, self.buffer_blocks = int(block_rows), int(buffer_blocks)
    self.per_dispatch = per_dispatch
    self.model = None
    self.classes_ = None
    self.history_ = None

  def _build(self, input_shape, num_classes, seed):
    cfg = self.config
    arch = cfg['arch']
    if arch == 'auto':
      arch = 'resnet' if len(input_shape) == 3 and self.space not in SPECTRAL_SPACES else 'mlp'
    if arch in ('resnet', 'cnn') and len(input_shape) != 3:
      raise ValueError(f'Attributor arch {arch!r} needs image-shaped inputs [N, H, W, C], '
                       f'got per-sample shape {tuple(input_shape)}')
    if arch == 'resnet':
      kwargs = dict(in_channels=input_shape[-1], widths=list(cfg['widths']),
                    blocks_per_stage=cfg['blocks_per_stage'])
    elif arch == 'cnn':
      kwargs = dict(in_channels=input_shape[-1], widths=list(cfg['widths']),
                    activation=cfg['activation'])
    elif arch == 'mlp':
      kwargs = dict(in_features=int(np.prod(input_shape)), hidden=list(cfg['hidden']))
    else:
      raise ValueError(f"Attributor arch must be 'auto', 'resnet', 'cnn' or 'mlp', got {arch!r}")
    kwargs['num_classes'] = int(num_classes)
    return arch, kwargs

  def _make_tx(self, total_steps, steps_per_epoch):
    cfg = self.config
    if cfg['optimizer'] == 'adam':
      return optax.adam(cfg['lr'], b1=cfg['b1'], b2=cfg['b2'])
    if cfg['optimizer'] != 'sgd':
      raise ValueError(f"Attributor optimizer must be 'sgd' or 'adam', got {cfg['optimizer']!r}")
    schedule = optax.piecewise_constant_schedule(
        cfg['lr'], {int(m) * steps_per_epoch: 0.1 for m in cfg['milestones']})
    return optax.chain(optax.add_decayed_weights(cfg['weight_decay']),
                       optax.sgd(schedule, momentum=cfg['momentum']))

  def _prepare(self, x):
    x = training.as_rows(x)
    if len(x.shape) < 2:
      raise UserInputError(f'Attributor: x must be [N, ...], got shape {tuple(x.shape)}')
    if self.model is not None and tuple(x.shape[1:]) != tuple(self.input_shape_):
      raise UserInputError(f'Attributor was fit on per-sample shape {tuple(self.input_shape_)}, '
                       f'got {tuple(x.shape[1:])}')
    return x

  def _normalized(self, x):
    """(x - shift) / scale as a lazy float32 array-like."""
    shift, scale = self.shift_, self.scale_
    return training.MappedRows(x, lambda a: (a.astype(np.float32) - shift) / scale, x.shape)

  def fit(self, x_train, y_train, seed: int = 0) -> 'Attributor':
    """Trains the network; returns self. Eager.

    x_train: [N, H, W, C] or [N, ...] real numbers (numpy or a lazy array-like); y_train [N]:
    labels, integers >= 0 or names (`check_labels`), at least two classes; seed: initialisation
    and shuffling. Raises UserInputError / ValueError on bad labels, shapes or NaN rows.
    """
    x = self._prepare(x_train)
    self.classes_, yi = check_labels(y_train, x.shape[0], 'Attributor')
    self.input_shape_ = tuple(x.shape[1:])
    # Pixels: one scalar shift/scale, as artifacts are differences with a tiny range and
    # per-pixel z-scores would amplify the empty border pixels; BatchNorm does the rest.
    # Spectra: per coordinate, as each frequency has its own spread (the log-magnitude
    # differences are larger where the magnitudes are small) and the MLP reads coordinates
    # one by one (dct: 58 vs 55 %, freq: 64 vs 63 % on the demo zoo). Float64, streamed.
    per_coordinate = self.space in SPECTRAL_SPACES
    shift, scale = training.streamed_moments(x, 'Attributor.fit x_train',
                                             per_feature=per_coordinate, block_rows=self.block_rows)
    shape = self.input_shape_ if per_coordinate else ()
    self.shift_ = np.asarray(shift, np.float32).reshape(shape)
    self.scale_ = np.maximum(np.asarray(scale, np.float32), 1e-8).reshape(shape)
    self.arch_, self.kwargs_ = self._build(self.input_shape_, len(self.classes_), seed)
    self.model = resnet.build(self.arch_, seed=seed, **self.kwargs_)
    cfg = self.config
    augment = None
    if self.augment is not None:
      augment = lambda xb, rng: (np.asarray(self.augment(xb * self.scale_ + self.shift_, rng),
                                            np.float32) - self.shift_) / self.scale_
    self.history_ = training.fit_classifier(
        self.model, self._normalized(x), yi.astype(np.int32), epochs=cfg['epochs'],
        batch_size=cfg['batch_size'], mesh=self.mesh, seed=seed, make_tx=self._make_tx,
        val_fraction=cfg['val_fraction'], patience=cfg['patience'], augment=augment,
        name='Attributor', block_rows=self.block_rows, buffer_blocks=self.buffer_blocks,
        per_dispatch=self.per_dispatch)
    return self

  def _run(self, x, method='__call__') -> np.ndarray:
    if self.model is None:
      raise ValueError('Attributor: call fit (or Attributor.load) first')
    return training.predict_logits(
        self.model, self._normalized(self._prepare(x)), mesh=self.mesh, method=method,
        batch_size=min(256, self.block_rows * self.buffer_blocks))

  def predict_proba(self, x) -> np.ndarray:
    """Class probabilities, float32 [N, K] in the order of classes_, for x [N, ...] shaped as
    in fit. Eager."""
    return np.asarray(jax.nn.softmax(self._run(x), axis=-1))

  def predict(self, x) -> np.ndarray:
    """The most probable class of each row of x: [N], labels as given to fit. Eager."""
    return self.classes_[self._run(x).argmax(-1)]

  def features(self, x) -> np.ndarray:
    """Penultimate vectors [N, F] float32 of the trained network (the FDR of the CNN
    baselines). Eager."""
    return self._run(x, method='features')

  def score(self, x, y) -> float:
    """Accuracy (a float in [0, 1]) of predict(x) against labels y [N]. Eager."""
    return accuracy(self.predict(x), y, 'Attributor')

  def save(self, path: str) -> None:
    """Writes the trained network, options and input scaling to the folder path. Eager."""
    if self.model is None:
      raise ValueError('Attributor.save: nothing to save, call fit first')
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.config.items()}
    config = dict(type='Attributor', config=cfg, space=self.space, arch=self.arch_,
                  kwargs=self.kwargs_,
                  input_shape=list(self.input_shape_), classes=self.classes_.tolist(),
                  classes_dtype=str(self.classes_.dtype), shift_shape=list(self.shift_.shape))
    training.save_checkpoint(path, self.model, config, {'shift': self.shift_, 'scale': self.scale_})

  @classmethod
  def load(cls, path: str, mesh=None) -> 'Attributor':
    """The Attributor saved at path, to predict on mesh (None: all devices). Eager."""
    config = training.read_config(path)
    if config.get('type') != 'Attributor':
      raise ValueError(f'{path}: not an Attributor checkpoint (type={config.get("type")!r})')
    cfg = dict(config['config'])
    preset = cfg.pop('preset')
    att = cls(preset, space=config.get('space'), mesh=mesh, **cfg)
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config['kwargs'].items()}
    like = {k: jax.ShapeDtypeStruct(tuple(config['shift_shape']), np.float32)
            for k in ('shift', 'scale')}
    att.model, extra = training.load_checkpoint(
        path, lambda: resnet.build(config['arch'], seed=0, **kwargs), like)
    att.arch_, att.kwargs_ = config['arch'], kwargs
    att.input_shape_ = tuple(config['input_shape'])
    att.classes_ = np.asarray(config['classes'], dtype=config['classes_dtype'])
    att.shift_, att.scale_ = extra['shift'], extra['scale']
    return att
