"""Baseline feature extractors against float64 numpy/scipy references on tiny inputs."""
import numpy as np
import pytest
import scipy.fft
import scipy.ndimage

from fpjax.baselines import BASELINES
from fpjax.baselines import wang20


@pytest.fixture(scope='module')
def images():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, size=(4, 6, 7, 3)).astype(np.uint8)
  x[0, 0, :3] = 0      # under-exposed pixels
  x[1, 1, :2] = 255    # over-exposed pixels
  x[2, 2, 2] = [8, 7, 8]  # saturation exactly 1/8: a bin edge
  return x


def _ps_profile_ref(gray):  # gray float64 [H, W] -> (power, integer-radius mean)
  h, w = gray.shape
  p = np.abs(np.fft.fftshift(np.fft.fft2(gray))) ** 2
  yy, xx = np.indices((h, w))
  r = np.rint(np.hypot(yy - h // 2, xx - w // 2)).astype(int).ravel()
  return p, np.bincount(r, p.ravel()) / np.bincount(r)


def test_mcclo18(images):
  got = BASELINES['McClo18']().features(images)
  for img, row in zip(images.astype(np.int64), got):
    mx, mn = img.max(-1), img.min(-1)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1), 0.0)
    s_hist = np.bincount(np.minimum(np.floor(16 * sat), 15).astype(int).ravel(), minlength=16)
    inten = img.mean(-1) / 256.0
    i_hist = np.bincount(np.floor(16 * inten).astype(int).ravel(), minlength=16)
    ref = np.concatenate([s_hist / mx.size, i_hist / mx.size,
                          [(mx == 0).mean(), (mn == 255).mean()]])
    np.testing.assert_allclose(row, ref, atol=1e-6)


def test_nataraj19_cooccurrence(images):
  got = BASELINES['Nataraj19'](levels=8).cooccurrence(images)
  q = images.astype(np.int64) * 8 // 256
  for i in range(len(images)):
    for c in range(3):
      ref = np.zeros((8, 8))
      np.add.at(ref, (q[i, :, :-1, c].ravel(), q[i, :, 1:, c].ravel()), 1)
      np.testing.assert_allclose(got[i, :, :, c], ref / ref.sum(), atol=1e-7)


def test_durall20(images):
  got = BASELINES['Durall20']().features(images)
  for img, row in zip(images / 255.0, got):
    p, _ = _ps_profile_ref(img.mean(-1))
    h, w = p.shape
    yy, xx = np.indices((h, w))
    r = np.rint(np.hypot(yy - h // 2, xx - w // 2)).astype(int).ravel()
    logprof = np.bincount(r, np.log(p + 1e-12).ravel()) / np.bincount(r)
    ref = (logprof - logprof.min()) / (logprof.max() - logprof.min())
    np.testing.assert_allclose(row, ref, atol=2e-4)


def test_dzanic20():
  rng = np.random.default_rng(1)
  x = rng.integers(0, 256, size=(3, 16, 16, 1)).astype(np.uint8)
  got = BASELINES['Dzanic20']().features(x)
  for img, row in zip(x / 255.0, got):
    _, prof = _ps_profile_ref(img.mean(-1))
    k = np.arange(4, 9)  # k_max = 8, upper half
    y = np.log(prof[k] + 1e-12) - np.log(prof[0] + 1e-12)
    slope, intercept = np.polyfit(np.log(k), y, 1)
    rms = np.sqrt(np.mean((y - (intercept + slope * np.log(k))) ** 2))
    np.testing.assert_allclose(row, [intercept, -slope, rms], rtol=1e-3, atol=1e-3)


def test_frank20(images):
  got = BASELINES['Frank20']().features(images)
  ref = np.log(np.abs(scipy.fft.dctn(images / 255.0, type=2, norm='ortho', axes=(1, 2))) + 1e-12)
  # log of near-zero coefficients is ill-conditioned; compare where |DCT| is not tiny
  big = np.abs(scipy.fft.dctn(images / 255.0, type=2, norm='ortho', axes=(1, 2))) > 1e-3
  np.testing.assert_allclose(got.reshape(ref.shape)[big], ref[big], atol=1e-3)


def test_marra19_residual_and_attribution(images):
  got = BASELINES['Marra19']().features(images)
  x = images / 255.0
  ref = x - scipy.ndimage.gaussian_filter(x, sigma=(0, 1, 1, 0), mode='reflect', truncate=4.0)
  np.testing.assert_allclose(got, ref.reshape(len(x), -1), atol=1e-5)
  # Each "model" adds its own fixed high-frequency pattern: attribution by correlation.
  rng = np.random.default_rng(2)
  pats = rng.normal(size=(3, 8, 8, 1)) * 20
  y = np.repeat(np.arange(3), 10)
  imgs = np.clip(120 + pats[y] + rng.normal(size=(30, 8, 8, 1)) * 5, 0, 255).astype(np.uint8)
  m = BASELINES['Marra19']().fit(imgs[::2], y[::2])
  assert np.mean(m.predict(imgs[1::2]) == y[1::2]) == 1.0


def test_wang20_augmentation_identity_and_range():
  rng = np.random.default_rng(0)
  x = rng.random((3, 8, 8, 1)).astype(np.float32)
  same = wang20.blur_jpeg(x, np.random.default_rng(0), p_blur=0.0, p_jpeg=0.0)
  np.testing.assert_allclose(same, np.round(x * 255) / 255, atol=1e-6)
  aug = wang20.blur_jpeg(x, np.random.default_rng(0), p_blur=1.0, p_jpeg=1.0)
  assert aug.shape == x.shape and aug.min() >= 0 and aug.max() <= 1 and not np.allclose(aug, x)


@pytest.mark.parametrize('name', ['Marra18', 'Yu19', 'Wang20', 'Nataraj19'])
def test_cnn_baselines_learn_toy_task(name):
  rng = np.random.default_rng(0)
  y = np.repeat(np.arange(2), 48)
  x = rng.integers(0, 80, size=(96, 8, 8, 1)).astype(np.uint8)
  x[y == 1] = np.clip(x[y == 1].astype(int) * 3, 0, 255)  # brighter, wider spread
  b = BASELINES[name](epochs=4, batch_size=16)
  with pytest.raises(ValueError):            # no features before fit
    b.features(x)
  b.fit(x[::2], y[::2])
  assert np.mean(b.predict(x[1::2]) == y[1::2]) >= 0.9
  f = b.features(x[:5])
  assert f.ndim == 2 and f.shape[0] == 5 and np.all(np.isfinite(f))


def test_registry_and_bad_input():
  assert sorted(BASELINES) == sorted(['McClo18', 'Nataraj19', 'Durall20', 'Dzanic20', 'Frank20',
                                      'Wang20', 'Marra18', 'Marra19', 'Yu19'])
  with pytest.raises(ValueError, match='McClo18'):
    BASELINES['McClo18']().features(np.zeros((2, 4, 4, 2), np.uint8))
  with pytest.raises(ValueError, match='bogus'):     # the error names the unknown option
    BASELINES['Frank20'](bogus=1)


class _SliceOnly:
  """An image array that can only be sliced (like the evaluation's view of an image folder);
  it counts the rows read per call, so a test sees that nothing reads all rows at once."""

  def __init__(self, x):
    self.x, self.shape, self.dtype, self.ndim = x, x.shape, x.dtype, x.ndim
    self.largest_read = 0

  def __len__(self):
    return len(self.x)

  def __getitem__(self, key):
    if not isinstance(key, slice) or key.step not in (None, 1):
      raise TypeError(f'contiguous slices only, got {key!r}')
    out = self.x[key]
    self.largest_read = max(self.largest_read, len(out))
    return out

  def __array__(self, *a, **k):
    raise AssertionError('read whole')


@pytest.mark.parametrize('name', ['Durall20', 'Marra19', 'Marra18'])
def test_baselines_read_images_in_slices_with_the_same_result(name, monkeypatch):
  from fpjax.baselines import _common
  monkeypatch.setattr(_common, 'SLICE_ROWS', 7)
  rng = np.random.default_rng(3)
  pats = rng.normal(size=(3, 8, 8, 1)) * 25
  y = np.repeat(np.arange(3), 16)
  imgs = np.clip(120 + pats[y] + rng.normal(size=(48, 8, 8, 1)) * 5, 0, 255).astype(np.uint8)
  kw = dict(epochs=2, batch_size=16) if name == 'Marra18' else {}
  ref = BASELINES[name](**kw).fit(imgs[::2], y[::2])
  lazy_train, lazy_test = _SliceOnly(imgs[::2]), _SliceOnly(imgs[1::2])
  got = BASELINES[name](**kw).fit(lazy_train, y[::2])
  if name != 'Marra18':  # a CNN's training reads blocks of the Attributor's own size
    assert 0 < lazy_train.largest_read <= 7
  np.testing.assert_array_equal(got.predict(lazy_test), ref.predict(imgs[1::2]))
  np.testing.assert_allclose(got.features(lazy_test), ref.features(imgs[1::2]), rtol=1e-5,
                             atol=1e-6)
  assert lazy_test.largest_read <= 7
