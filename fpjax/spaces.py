"""Embedding spaces φ in which artifacts are measured (paper: RGB, FREQ; plus DCT).

Every space maps float32 images ``[N, H, W, C]`` in [0, 1] to float32 embeddings.
The built-in spaces keep the image shape (kernels flatten it); an encoder space
is any callable ``images -> features [N, ...]`` and plugs in the same way.

Traceable (jit, vmap, lax.scan): the spaces, `space_fn`, `as_float_images` and `embed`, whose
checks are on shapes and dtypes, plus a [0, 1] range check of host numpy floats (a traced or
device array is not read). Wrong inputs raise fpjax.errors.UserInputError (a ValueError).
"""
from __future__ import annotations

import functools
from typing import Callable, Union

import jax
import jax.numpy as jnp
import numpy as np

from fpjax.errors import UserInputError

# The authors' log-magnitude floor: keeps log finite where a coefficient is exactly 0.
LOG_EPS = 1e-12

Space = Union[str, Callable[[jax.Array], jax.Array]]


def as_float_images(images) -> jax.Array:
  """Validates images and returns float32 ``[N, H, W, C]`` in [0, 1]. Traceable.

  Accepts uint8 (0-255) or floating images in [0, 1] with C = 1 or 3; raises
  UserInputError for another rank, channel count or dtype, N = 0, or host floats outside
  [0, 1] (e.g. 0-255 floats, or embeddings passed where images are expected).
  """
  shape = getattr(images, "shape", None)
  if shape is None:
    images = np.asarray(images)
    shape = images.shape
  if len(shape) != 4:
    raise UserInputError(f"images must be [N, H, W, C]; got shape {tuple(shape)}")
  if shape[0] == 0:
    raise UserInputError("images is empty (N = 0)")
  if shape[-1] not in (1, 3):
    raise UserInputError(f"images must have 1 or 3 channels (last axis); got C = {shape[-1]}")
  dtype = np.dtype(images.dtype)
  if dtype == np.uint8:
    return jnp.asarray(images, jnp.float32) / 255.0
  if not np.issubdtype(dtype, np.floating):
    raise UserInputError(f"images must be uint8 (0-255) or float in [0, 1]; got dtype {dtype}")
  if isinstance(images, np.ndarray):
    # Host arrays are checked for the most common mistake, floats still in 0-255;
    # device arrays are not, to avoid a sync. NaN/Inf rows are named by Manifold.
    finite = images[np.isfinite(images)]
    if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
      raise UserInputError(f"float images must lie in [0, 1]; got values in "
                           f"[{finite.min():g}, {finite.max():g}] (uint8 0-255 images are "
                           f"scaled for you)")
  return jnp.asarray(images, jnp.float32)


def _dct_matrix(n: int) -> np.ndarray:
  """Orthonormal DCT-II matrix: y = D @ x (scipy.fft.dct(x, type=2, norm='ortho'))."""
  k = np.arange(n)[:, None]
  i = np.arange(n)[None, :]
  d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
  d[0] /= np.sqrt(2.0)
  return d.astype(np.float32)


def rgb(x: jax.Array) -> jax.Array:
  """The pixels themselves (the paper's RGB space): [N, H, W, C] -> the same."""
  return x


def freq(x: jax.Array) -> jax.Array:
  """Per channel: 2-D FFT, fftshift, log(|F| + 1e-12), as in the authors' code.
  float images [N, H, W, C] -> float32 [N, H, W, C]; traceable."""
  # An FFT is not a matmul: XLA:CPU and cuFFT compute it in float32 whatever the matmul
  # precision. JAX exposes no precision for the TPU's FFT (jax-ml/jax#9881).
  f = jnp.fft.fftshift(jnp.fft.fft2(x, axes=(1, 2)), axes=(1, 2))
  return jnp.log(jnp.abs(f) + LOG_EPS).astype(jnp.float32)


def dct(x: jax.Array) -> jax.Array:
  """Per channel: orthonormal 2-D DCT-II, log(|DCT| + 1e-12) (Frank20's space).
  float images [N, H, W, C] -> float32 [N, H, W, C]; traceable."""
  dh = jnp.asarray(_dct_matrix(x.shape[1]))
  dw = jnp.asarray(_dct_matrix(x.shape[2]))
  # Two small matmuls instead of an FFT-based DCT: exact, and fast on every backend;
  # HIGHEST, or GPUs would round the pixels to TF32 (10 mantissa bits) before the log.
  y = jnp.einsum("kh,nhwc,lw->nklc", dh, x, dw, precision=jax.lax.Precision.HIGHEST)
  return jnp.log(jnp.abs(y) + LOG_EPS)


SPACES: dict[str, Callable[[jax.Array], jax.Array]] = {"rgb": rgb, "freq": freq, "dct": dct}
# Learned spaces: an encoder trained on the real data (supervised / self-supervised) is φ.
ENCODER_SPACES = ("sl", "ssl")
# Every space name fpjax knows: the fixed transforms above, then the encoder spaces.
SPACE_NAMES = tuple(SPACES) + ENCODER_SPACES


@functools.lru_cache(maxsize=None)
def _jitted(name: str):
  return jax.jit(SPACES[name])


def space_fn(space: Space) -> Callable[[jax.Array], jax.Array]:
  """Resolves a space name or callable to a function of float images [N, H, W, C] in [0, 1]
  (the built-in ones jitted); UserInputError names an unknown space."""
  if callable(space):
    return space
  if space not in SPACES:
    raise UserInputError(f"unknown embedding space {space!r}; choose one of {sorted(SPACES)} "
                     "or pass a callable images -> features")
  return _jitted(space)


def embed(images, space: Space = "rgb", *, batch_size: int | None = None) -> jax.Array:
  """Embeds images into space φ; see module docstring. Traceable (jit, vmap, lax.scan).

  Args:
    images: uint8 ``[N, H, W, C]`` (0-255) or float in [0, 1]; C = 1 or 3.
    space: 'rgb', 'freq', 'dct', or a callable (e.g. an SL/SSL encoder) images -> [N, ...].
    batch_size: embed this many images at a time to bound device memory, an integer >= 1
      (default: all at once).
  Returns:
    float embeddings [N, ...] (the built-in spaces: float32 [N, H, W, C]).
  Raises:
    UserInputError: images of another rank, channel count or dtype, N = 0, host floats
      outside [0, 1], an unknown space, a bad batch_size, or a callable whose output does not
      have one row per image.
  """
  fn = space_fn(space)
  if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(
      batch_size, (int, np.integer)) or batch_size < 1):
    raise UserInputError(f"batch_size must be an integer >= 1 (or None: all at once); got "
                         f"{batch_size!r}")
  if not hasattr(images, "shape"):
    images = np.asarray(images)
  n = images.shape[0] if images.ndim else 0
  if batch_size is None or batch_size >= n:
    parts = [fn(as_float_images(images))]
  else:
    parts = [fn(as_float_images(images[i:i + batch_size])) for i in range(0, n, batch_size)]
  for i, part in enumerate(parts):
    rows = min(n - i * (batch_size or n), batch_size or n)
    if getattr(part, "ndim", 0) < 1 or part.shape[0] != rows:
      raise UserInputError(f"space {space!r} returned shape {getattr(part, 'shape', None)} "
                           f"for {rows} images; it must return one row per image")
  return parts[0] if len(parts) == 1 else jnp.concatenate(parts)
