"""Embedding spaces against float64 numpy / scipy references."""
import jax
import numpy as np
import pytest
import scipy.fft

import fpjax
from fpjax.errors import UserInputError


def _float(images):
  x = images.astype(np.float64)
  return x / 255.0 if images.dtype == np.uint8 else x


def reference(images, space):
  x = _float(images)
  if space == "rgb":
    return x
  if space == "freq":
    f = np.fft.fftshift(np.fft.fft2(x, axes=(1, 2)), axes=(1, 2))
    return np.log(np.abs(f) + 1e-12)
  if space == "dct":
    return np.log(np.abs(scipy.fft.dctn(x, type=2, axes=(1, 2), norm="ortho")) + 1e-12)
  raise AssertionError(space)


def assert_matches_reference(images, space):
  got = np.asarray(fpjax.embed(images, space))
  ref = reference(images, space)
  assert got.shape == images.shape and got.dtype == np.float32
  # log(|F| + 1e-12) is ill-conditioned where |F| ~ 0 (float32 leaves ~1e-7 of noise
  # there): compare where the magnitude is sizeable, and check the rest is small.
  keep = ref > np.log(1e-2) if space != "rgb" else np.ones_like(ref, bool)
  np.testing.assert_allclose(got[keep], ref[keep], rtol=1e-4, atol=1e-4)
  assert np.all(got[~keep] < np.log(1e-2) + 0.1)


@pytest.mark.parametrize("space", ["rgb", "freq", "dct"])
def test_spaces_match_numpy_on_real_digits(space, mnist):
  assert_matches_reference(mnist[0][:64], space)


@pytest.mark.parametrize("space", ["rgb", "freq", "dct"])
def test_spaces_match_numpy_on_random_colour_floats(space, rng):
  assert_matches_reference(rng.random((5, 12, 10, 3)).astype(np.float32), space)


def test_uint8_and_float_inputs_agree(mnist):
  u8 = mnist[0][:8]
  np.testing.assert_allclose(np.asarray(fpjax.embed(u8, "rgb")),
                             np.asarray(fpjax.embed(u8.astype(np.float32) / 255, "rgb")), atol=1e-7)


@pytest.mark.parametrize("space", ["freq", "dct"])
def test_batched_embedding_equals_whole(space, mnist):
  x = mnist[0][:50]
  got = np.asarray(fpjax.embed(x, space, batch_size=16))
  whole = np.asarray(fpjax.embed(x, space))
  if jax.default_backend() == "cpu":  # one FFT / matmul per image whatever the batch
    np.testing.assert_array_equal(got, whole)
  else:  # cuFFT plans and GEMM algorithms may change with the batch: equal up to rounding,
    # compared where log|F| is well-conditioned as in assert_matches_reference.
    keep = whole > np.log(1e-2)
    np.testing.assert_allclose(got[keep], whole[keep], rtol=1e-5, atol=1e-5)
    assert np.all(got[~keep] < np.log(1e-2) + 0.1)


def test_callable_space_plugs_in(mnist):
  encoder = lambda x: x.reshape(x.shape[0], -1)[:, :10] * 2.0
  out = np.asarray(fpjax.embed(mnist[0][:4], encoder))
  np.testing.assert_allclose(out, mnist[0][:4].reshape(4, -1)[:, :10] / 255.0 * 2.0, rtol=1e-6)


@pytest.mark.parametrize("bad", [
    np.zeros((2, 8, 8), np.uint8),                # no channel axis
    np.zeros((2, 8, 8, 2), np.uint8),             # 2 channels
    np.zeros((2, 8, 8, 4), np.uint8),             # RGBA
    np.zeros((0, 8, 8, 1), np.uint8),             # empty
    np.full((2, 8, 8, 1), 200.0, np.float32),     # floats in 0-255
    np.full((2, 8, 8, 1), -3.0, np.float32),      # embeddings (log-magnitudes), not images
    np.zeros((2, 8, 8, 1), np.int64),             # integer dtype other than uint8
    np.zeros((2, 8, 8, 1), bool),
    np.zeros((2, 64), np.float32),                # flat embeddings
], ids=range(9))
@pytest.mark.parametrize("space", ["rgb", "freq", "dct"])
def test_bad_images_are_refused(bad, space):
  with pytest.raises(UserInputError):
    fpjax.embed(bad, space)


def test_the_pinned_image_error_line():
  with pytest.raises(UserInputError) as e:
    fpjax.embed(np.zeros((2, 8, 8, 1), np.int64), "rgb")
  assert str(e.value) == "images must be uint8 (0-255) or float in [0, 1]; got dtype int64"


def test_unknown_space_bad_batch_size_and_bad_encoder_are_refused():
  x = np.zeros((3, 4, 4, 1), np.uint8)
  with pytest.raises(UserInputError):
    fpjax.embed(x, "wavelet")
  for batch_size in (0, -1, 1.5):
    with pytest.raises(UserInputError):
      fpjax.embed(x, "rgb", batch_size=batch_size)
  with pytest.raises(UserInputError):  # one feature vector for the whole batch
    fpjax.embed(x, lambda im: im.reshape(1, -1))
  with pytest.raises(UserInputError):
    fpjax.embed(x, lambda im: im.sum(), batch_size=2)


@pytest.mark.parametrize("space", ["rgb", "freq", "dct"])
def test_embed_traces_under_jit_and_scan(space, mnist):
  x = mnist[0][:8]
  eager = np.asarray(fpjax.embed(x, space))
  jitted = np.asarray(jax.jit(lambda im: fpjax.embed(im, space))(x))
  _, scanned = jax.lax.scan(lambda c, im: (c, fpjax.embed(im, space)), 0,
                            x.reshape(2, 4, 28, 28, 1))
  keep = eager > np.log(1e-2) if space != "rgb" else np.ones_like(eager, bool)
  np.testing.assert_allclose(jitted[keep], eager[keep], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(scanned).reshape(eager.shape)[keep], eager[keep],
                             rtol=1e-5, atol=1e-5)
