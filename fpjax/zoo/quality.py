"""How real a generative model's samples look, measured against the real digits of the zoo.

Per model (``QualityReference(samples)``, pixels in [0, 1], all means in float64):

- sample_to_manifold: mean Euclidean distance from each sample to its nearest real *train*
  image (fpjax.Manifold, RGB space). real_test_to_manifold / noise_to_manifold: the same for
  held-out real test images (what a perfect model scores) and uniform noise images (a useless one).
- distance_ratio = sample_to_manifold / noise_to_manifold (held-out real mnist5k digits: ~0.33;
  uniform noise: 1).
- recognisable: the share of samples that the zoo's digit classifier (DigitClassifier) assigns
  to a digit class with probability >= RECOGNISABLE_PROBABILITY (0.9).
  recognisable_vs_real = recognisable / (the same share on the held-out real digits).
- frechet_distance: ||mu_s - mu_r||^2 + tr(C_s + C_r - 2 (C_s C_r)^{1/2}) between Gaussians fitted
  to the samples' and the held-out real digits' features in the SL encoder's space
  (fpjax.models.encoders.train_encoder('sl', real train digits)); float64, scipy.linalg.sqrtm.
- diversity: mean pairwise distance between samples / the same between real test images (about 1
  for a diverse model, near 0 for a collapsed one).

The digit classifier is fpjax.models.resnet.SmallCNN (widths 32/64/128) trained on the real train
digits plus one *reject* class of non-digits, then temperature-scaled on a held-out tenth of the
train digits and non-digits (minimum NLL, float64); training rolls the images by up to 2 px and
blurs half of them (a blurry digit is still a digit). The reject class is what calibrates it on
inputs far from the digits: a softmax over digit classes alone must spread all its mass over
digits, and a network trained only on digits is often confident on noise. The non-digits are
uniform noise, blurred noise (smooth blobs), real digits with shuffled pixels (a digit's ink
without its shape) and 50/50 blends of two digits of different classes (two shapes at once,
what a poor generative model draws). The uniform noise used to *measure* the classifier is
drawn from another seed than its training noise.
"""
from __future__ import annotations

import dataclasses
import os
import shutil

from absl import logging
from flax import nnx
import numpy as np
import optax
import scipy.linalg
import scipy.ndimage
import scipy.special
import scipy.optimize

from fpjax import fileio
from fpjax.configs import defaults
from fpjax.manifold import Manifold
from fpjax.models import encoders
from fpjax.models import resnet
from fpjax.models import training

RECOGNISABLE_PROBABILITY = 0.9
CLASSIFIER_WIDTHS = (32, 64, 128)
_NOISE_SEED_OFFSET = 7919  # measuring noise != the classifier's training noise


def mean_pairwise_distance(images: np.ndarray, max_images: int = 500) -> float:
  """Mean Euclidean distance over distinct pairs (first max_images), pixels in [0,1], float64."""
  x = np.asarray(images[:max_images], np.float64).reshape(min(len(images), max_images), -1) / 255.0
  sq = np.sum(x * x, axis=1)
  d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
  n = len(x)
  return float(np.sum(np.sqrt(d2)) / (n * (n - 1)))


# ----------------------------------------------------------------------------- Fréchet distance


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
  """(mean, covariance) of features [N, D] in float64 (covariance with the 1/(N-1) estimator)."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or len(f) < 2:
    raise ValueError(f'gaussian_stats needs features [N >= 2, D], got shape {f.shape}.')
  return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
  """Fréchet (2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2), float64:

    ||mu1 - mu2||^2 + tr(cov1) + tr(cov2) - 2 tr((cov1 cov2)^{1/2}).

  The square root is scipy.linalg.sqrtm's; a singular product (fewer samples than features)
  gets the usual eps * I on both covariances, and the tiny imaginary part rounding leaves is
  dropped.
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
  if np.linalg.matrix_rank(cov1) < len(cov1) or np.linalg.matrix_rank(cov2) < len(cov2):
    eps = 1e-6 * np.eye(len(cov1))
    cov1, cov2 = cov1 + eps, cov2 + eps
  covmean = scipy.linalg.sqrtm(cov1 @ cov2)
  covmean = np.real(covmean)
  d = mu1 - mu2
  return float(d @ d + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean))


# ----------------------------------------------------------------------------- digit classifier


def non_digits(real: np.ndarray, labels: np.ndarray, num: int, seed: int) -> np.ndarray:
  """`num` uint8 non-digit images shaped like `real`: a quarter each of uniform noise, blurred
  noise, pixel-shuffled real digits and 50/50 blends of two digits of different classes."""
  rng = np.random.default_rng(seed)
  shape = real.shape[1:]
  k = [num // 4 + (i < num % 4) for i in range(4)]
  uniform = rng.integers(0, 256, (k[0],) + shape, dtype=np.uint8)
  blobs = rng.uniform(size=(k[1],) + shape)
  sigma = max(shape[0] / 28.0, 0.5) * rng.uniform(1.0, 3.0, size=k[1])
  blobs = np.stack([scipy.ndimage.gaussian_filter(b, (s, s, 0)) for b, s in zip(blobs, sigma)])
  lo = blobs.min(axis=(1, 2, 3), keepdims=True)
  hi = blobs.max(axis=(1, 2, 3), keepdims=True)
  # Stretch, then threshold a random share away: smooth blobs on a black ground, like ink.
  blobs = (blobs - lo) / (hi - lo)
  cut = rng.uniform(0.3, 0.7, size=(k[1], 1, 1, 1))
  blobs = np.clip((blobs - cut) / (1 - cut), 0, 1)
  shuffled = real[rng.integers(0, len(real), k[2])].reshape(k[2], -1)
  shuffled = rng.permuted(shuffled, axis=1).reshape((k[2],) + shape)
  a = rng.integers(0, len(real), k[3])
  b = rng.integers(0, len(real), k[3])
  for _ in range(100):  # redraw partners of the same class (a blend of two 3s is still a 3)
    same = labels[a] == labels[b]
    if not same.any():
      break
    b[same] = rng.integers(0, len(real), int(same.sum()))
  blends = 0.5 * real[a].astype(np.float64) + 0.5 * real[b].astype(np.float64)
  out = np.concatenate([uniform, np.rint(blobs * 255), shuffled, np.rint(blends)])
  return np.clip(out, 0, 255).astype(np.uint8)


def _augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Training augmentation of a batch [B,H,W,C] (float): roll each image by up to 1/14 of its
  size (2 px at 28x28) each way, and blur half of them (Gaussian, sigma up to 1.5 px at
  28x28). A blurred digit is still that digit: without the blur, the classifier learns
  smoothness as a cue of the smooth non-digits and rejects every blurry (VAE) sample."""
  m = max(1, x.shape[1] // 14)
  out = np.empty_like(x)
  for i, (dy, dx) in enumerate(rng.integers(-m, m + 1, (len(x), 2))):
    out[i] = np.roll(x[i], (dy, dx), axis=(0, 1))
  sigma = rng.uniform(0.0, 1.5 * x.shape[1] / 28.0, len(x)) * (rng.uniform(size=len(x)) < 0.5)
  for i in np.flatnonzero(sigma > 0.2):
    out[i] = scipy.ndimage.gaussian_filter(out[i], (sigma[i], sigma[i], 0))
  return out


@dataclasses.dataclass
class DigitClassifier:
  """A small CNN over the real digit classes plus a reject class, with a fitted temperature."""
  model: nnx.Module
  classes: list[int]
  temperature: float
  config: dict

  def probabilities(self, images) -> np.ndarray:
    """[N, K + 1] float64 softmax(logits / T); the last column is the reject class."""
    x = np.asarray(images, np.float32) / (255.0 if np.asarray(images).dtype == np.uint8 else 1.0)
    logits = np.asarray(training.predict_logits(self.model, x), np.float64) / self.temperature
    return scipy.special.softmax(logits, axis=1)

  def recognisable(self, images) -> np.ndarray:
    """bool [N]: some *digit* class has probability >= RECOGNISABLE_PROBABILITY."""
    return self.probabilities(images)[:, :-1].max(axis=1) >= RECOGNISABLE_PROBABILITY

  def save(self, path: str) -> None:
    training.save_checkpoint(path, self.model, {**self.config, 'classes': self.classes,
                                                'temperature': self.temperature})


def _build_resnet(num_classes: int, channels: int, seed: int) -> resnet.ResNet:
  return resnet.SmallCNN(channels, num_classes, CLASSIFIER_WIDTHS, rngs=nnx.Rngs(seed))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
  """The T > 0 minimising the mean NLL of softmax(logits / T) (Guo et al. 2017), float64."""
  z = np.asarray(logits, np.float64)

  def nll(log_t):
    lp = scipy.special.log_softmax(z / np.exp(log_t), axis=1)
    return -float(np.mean(lp[np.arange(len(z)), labels]))
  return float(np.exp(scipy.optimize.minimize_scalar(nll, bounds=(-3.0, 3.0),
                                                     method='bounded').x))


def train_digit_classifier(images: np.ndarray, labels: np.ndarray, *, steps: int,
                           seed: int = 0) -> DigitClassifier:
  """Trains the reject-class digit classifier on real digits (uint8 [N,H,W,C], int labels [N]).

  As many non-digits as two digit classes are added as class K; a stratified tenth of it all is
  held out to fit the temperature. Deterministic for a seed.
  """
  classes, y = np.unique(np.asarray(labels), return_inverse=True)
  k = len(classes)
  neg = non_digits(images, np.asarray(labels), 2 * len(images) // k, seed)
  x = np.concatenate([images, neg]).astype(np.float32) / 255.0
  y = np.concatenate([y, np.full(len(neg), k)]).astype(np.int32)
  train_idx, val_idx = training.stratified_split(y, 0.1, np.random.default_rng(seed))
  model = _build_resnet(k + 1, images.shape[-1], seed)
  training.fit_classifier(
      model, x[train_idx], y[train_idx], steps=steps, batch_size=128, seed=seed,
      make_tx=lambda total, _: optax.adamw(
          optax.warmup_cosine_decay_schedule(0.0, 3e-3, max(1, total // 10), total),
          weight_decay=1e-4),
      augment=_augment, name='zoo digit classifier')
  temperature = fit_temperature(training.predict_logits(model, x[val_idx]), y[val_idx])
  config = {'module': 'fpjax.models.resnet:SmallCNN', 'steps': int(steps), 'seed': int(seed),
            'kwargs': {'in_channels': int(images.shape[-1]), 'num_classes': k + 1,
                       'widths': list(CLASSIFIER_WIDTHS), 'blocks_per_stage': 1}}
  return DigitClassifier(model, [int(c) for c in classes], temperature, config)


def load_digit_classifier(path: str) -> DigitClassifier:
  config = training.read_config(path)
  kw = config['kwargs']
  model, _ = training.load_checkpoint(
      path, lambda: _build_resnet(kw['num_classes'], kw['in_channels'], 0))
  return DigitClassifier(model, config.pop('classes'), float(config.pop('temperature')), config)


def _cached(path: str, config: dict, train, save, load):
  """load(path) if `path` holds what `config` describes, else train(), save atomically, load."""
  stamp = os.path.join(path, 'zoo_config.json')
  if os.path.exists(stamp) and fileio.load_json(stamp) == config:
    return load(path)
  tmp = path + '.tmp'
  shutil.rmtree(tmp, ignore_errors=True)
  save(train(), tmp)
  fileio.save_json(os.path.join(tmp, 'zoo_config.json'), config)
  shutil.rmtree(path, ignore_errors=True)
  os.replace(tmp, path)
  return load(path)  # the same numbers whether this build trained it or a previous one did


# ----------------------------------------------------------------------------- the reference


class ManifoldDistance:
  """images -> mean Euclidean distance (pixels in [0, 1], float64) of each image to its nearest
  real train image, the projection on the real manifold (fpjax.Manifold, RGB space)."""

  def __init__(self, train_images: np.ndarray):
    self.manifold = Manifold.from_images(train_images, 'rgb')

  def __call__(self, images: np.ndarray) -> float:
    proj = self.manifold.project(images)
    return float(np.mean(np.sqrt(np.asarray(proj.sq_distance)[:, 0]), dtype=np.float64))


class QualityReference:
  """The real reference of a zoo: manifold of the train digits, digit classifier, SL encoder,
  and the figures of held-out real digits and uniform noise. Trained models are cached in
  `cache_dir` (one folder each), so a resumed build reuses them."""

  def __init__(self, real, cache_dir: str, *, seed: int = 0, classifier_steps: int = 800,
               encoder_steps: int = defaults.QUICK_SL_STEPS, num_samples: int = 200,
               num_reference: int = 1000):
    train_x, train_y = real.train_images, real.train_labels
    test = real.test_images[:num_reference]
    self.distance = ManifoldDistance(train_x)
    base = {'real': real.name, 'seed': seed}
    self.classifier = _cached(
        os.path.join(cache_dir, 'digit_classifier'), {**base, 'steps': classifier_steps},
        lambda: train_digit_classifier(train_x, train_y, steps=classifier_steps, seed=seed),
        lambda c, p: c.save(p), load_digit_classifier)
    self.encoder = _cached(
        os.path.join(cache_dir, 'sl_encoder'), {**base, 'steps': encoder_steps},
        lambda: encoders.train_encoder('sl', train_x, train_y, steps=encoder_steps, seed=seed),
        lambda e, p: e.save(p), encoders.load_encoder)
    noise = np.random.default_rng(seed + _NOISE_SEED_OFFSET).integers(
        0, 256, test.shape, dtype=np.uint8)
    self.real_test_to_manifold = self.distance(test)
    self.noise_to_manifold = self.distance(noise)
    self.real_pairwise = mean_pairwise_distance(test)
    self.real_stats = gaussian_stats(self.features(test))
    probs = self.classifier.probabilities(test)  # one pass: the rate and the accuracy
    self.real_recognisable = float(np.mean(probs[:, :-1].max(axis=1) >= RECOGNISABLE_PROBABILITY))
    # A real sample of a model's size scores this FD: the floor set by finite samples.
    pick = np.random.default_rng(seed).choice(len(train_x), min(num_samples, len(train_x)),
                                              replace=False)
    self.summary = {
        'real_test': {'distance_ratio': self.real_test_to_manifold / self.noise_to_manifold,
                      'recognisable': self.real_recognisable,
                      'frechet_distance': self.frechet(train_x[np.sort(pick)]),
                      'diversity': 1.0},
        'noise': {'distance_ratio': 1.0,
                  'recognisable': float(np.mean(self.classifier.recognisable(noise))),
                  'frechet_distance': self.frechet(noise),
                  'diversity': mean_pairwise_distance(noise) / self.real_pairwise},
        'num_test': len(test),
        'classifier': {
            'test_accuracy': float(np.mean(
                np.asarray(self.classifier.classes)[probs[:, :-1].argmax(1)]
                == real.test_labels[:num_reference])),
            'temperature': self.classifier.temperature,
            'threshold': RECOGNISABLE_PROBABILITY, 'steps': classifier_steps,
            'widths': list(CLASSIFIER_WIDTHS)},
        'sl_encoder': {'steps': encoder_steps, 'feature_dim': int(self.real_stats[0].shape[0])},
    }
    logging.info('zoo quality reference: %s', self.summary)

  def features(self, images: np.ndarray) -> np.ndarray:
    return np.asarray(self.encoder(images), np.float64)

  def frechet(self, images: np.ndarray) -> float:
    return frechet_distance(*gaussian_stats(self.features(images)), *self.real_stats)

  def __call__(self, samples: np.ndarray) -> dict[str, float]:
    d = self.distance(samples)
    rec = float(np.mean(self.classifier.recognisable(samples)))
    return {'sample_to_manifold': d,
            'real_test_to_manifold': self.real_test_to_manifold,
            'noise_to_manifold': self.noise_to_manifold,
            'distance_ratio': d / self.noise_to_manifold,
            'recognisable': rec,
            'recognisable_vs_real': rec / self.real_recognisable if self.real_recognisable else 0.0,
            'frechet_distance': self.frechet(samples),
            'diversity': mean_pairwise_distance(samples) / self.real_pairwise}
