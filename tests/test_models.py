"""ResNet / MLP / SmallCNN shapes and the attributor on a separable toy task."""
import numpy as np
import pytest
from flax import nnx
import jax
import jax.numpy as jnp

from fpjax.attribution import Attributor
from fpjax.models import MLP, NonFiniteLossError, ResNet, SmallCNN


def test_shapes():
  x = jnp.zeros((3, 12, 12, 2))
  shape = lambda f, *a: jax.eval_shape(f, *a).shape  # shapes only: eager convs are slow on CPU
  r = ResNet(2, 5, widths=(4, 8, 16), blocks_per_stage=2, rngs=nnx.Rngs(0))
  assert shape(r, x) == (3, 5) and shape(r.features, x) == (3, 16)
  c = SmallCNN(2, 5, widths=(4, 8), rngs=nnx.Rngs(0))
  assert shape(c, x) == (3, 5) and shape(c.features, x) == (3, 8)
  m = MLP(10, 4, hidden=(7,), rngs=nnx.Rngs(0))
  v = jnp.zeros((3, 10))
  assert shape(m, v) == (3, 4) and shape(m.features, v) == (3, 7)
  # 3 blocks per stage, widths 16/32/64: the paper's attributor
  assert len(nnx.eval_shape(lambda: ResNet(1, 2, rngs=nnx.Rngs(0))).blocks) == 9


def _toy_images(n=240, seed=0):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 3, n)
  x = rng.normal(size=(n, 8, 8, 1)).astype(np.float32) * 0.5
  x[y == 1, :4] += 1.0   # model 1: brighter top half
  x[y == 2, :, ::2] -= 1.0  # model 2: stripes
  return x, y


def test_attributor_learns_separable_images(tmp_path):
  x, y = _toy_images()
  att = Attributor(widths=(4, 8, 8), epochs=6, milestones=(4,), batch_size=32)
  att.fit(x[:160], y[:160], seed=0)
  assert att.score(x[160:], y[160:]) >= 0.95
  assert att.arch_ == 'resnet'
  att.save(str(tmp_path / 'att'))
  loaded = Attributor.load(str(tmp_path / 'att'))
  np.testing.assert_array_equal(loaded.predict_proba(x[160:]), att.predict_proba(x[160:]))
  with pytest.raises(ValueError) as e:
    loaded.predict(x[:, :4])
  assert str(x.shape[1:]) in str(e.value) and str(x[:, :4].shape[1:]) in str(e.value)


def test_attributor_mlp_on_vectors():
  rng = np.random.default_rng(1)
  y = rng.integers(0, 4, 400)
  x = np.eye(4)[y] * 3 + rng.normal(size=(400, 4))
  x = np.concatenate([x, rng.normal(size=(400, 12))], 1)
  att = Attributor(hidden=(32,), epochs=10, batch_size=40).fit(x[:300], y[:300])
  assert att.arch_ == 'mlp'
  assert att.score(x[300:], y[300:]) >= 0.9


def test_attributor_nonfinite_loss_is_a_clear_error():
  x, y = _toy_images(64)
  with pytest.raises(NonFiniteLossError):
    Attributor(widths=(4, 4, 4), lr=1e30, weight_decay=0.0, epochs=3, batch_size=16,
               optimizer='sgd').fit(x, y)


def _toy_spectra(n=300, seed=0):
  """Spectrum-like 8x8 inputs: a loud, uninformative centre (low frequencies) and the class
  evidence at fixed border coordinates (high frequencies), as in fftshift(log|FFT|) artifacts."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 3, n)
  radius = np.hypot(*np.meshgrid(np.arange(8) - 3.5, np.arange(8) - 3.5, indexing='ij'))
  x = rng.normal(size=(n, 8, 8, 1)) * np.where(radius < 2.5, 5.0, 0.3)[..., None]
  x[y == 1, 0, :] += 0.8      # model 1: excess energy along the top border
  x[y == 2, :, 7] -= 0.8      # model 2: a missing band at the right border
  return x.astype(np.float32), y


@pytest.mark.parametrize('space', ['freq', 'dct'])
def test_attributor_on_spectra_is_an_mlp_on_z_scored_coordinates(space, tmp_path):
  x, y = _toy_spectra()
  att = Attributor(space=space, hidden=(32,), epochs=5, milestones=(3, 4), batch_size=32)
  att.fit(x[:200], y[:200], seed=0)
  assert att.arch_ == 'mlp' and att.space == space
  # Per-coordinate standardisation, from the training rows (float64 reference).
  np.testing.assert_allclose(att.shift_, x[:200].astype(np.float64).mean(0), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(att.scale_, x[:200].astype(np.float64).std(0), rtol=1e-5)
  assert att.score(x[200:], y[200:]) >= 0.9
  att.save(str(tmp_path / 'att'))
  loaded = Attributor.load(str(tmp_path / 'att'))
  assert loaded.space == space and loaded.arch_ == 'mlp'
  np.testing.assert_array_equal(loaded.shift_, att.shift_)
  np.testing.assert_array_equal(loaded.scale_, att.scale_)
  np.testing.assert_array_equal(loaded.predict_proba(x[200:]), att.predict_proba(x[200:]))


@pytest.mark.parametrize('space', [None, 'rgb', 'my_encoder'])
def test_attributor_on_pixels_stays_a_resnet_with_one_scale(space):
  x, y = _toy_images(64)
  att = Attributor(space=space, widths=(4, 4, 4), epochs=1, milestones=(), batch_size=32)
  att.fit(x, y)
  assert att.arch_ == 'resnet' and att.shift_.shape == () and att.scale_.shape == ()
  assert att.scale_ == pytest.approx(x.astype(np.float64).std(), rel=1e-5)
  # An explicit arch wins over the space's default.
  assert Attributor(space='freq', arch='resnet')._build((8, 8, 1), 3, 0)[0] == 'resnet'
