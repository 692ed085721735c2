"""SL / SSL encoders: determinism, save/load round trip, user checkpoints, jit-compatibility."""
import json
import textwrap

import jax
import numpy as np
import pytest
from flax import nnx

from fpjax.models import encoders


@pytest.fixture(scope='module')
def data():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 3, 64)
  x = rng.integers(0, 60, size=(64, 8, 8, 1)).astype(np.uint8)
  x[y == 1, 2:6, 2:6] = 250
  x[y == 2, :, 3:5] = 200
  return x, y


@pytest.mark.parametrize('kind', ['sl', 'ssl'])
def test_deterministic_and_save_load(kind, data, tmp_path):
  x, y = data
  a = encoders.train_encoder(kind, x, y, steps=3, seed=0, batch_size=32)
  b = encoders.train_encoder(kind, x, y, steps=3, seed=0, batch_size=32)
  fa = np.asarray(a(x))
  assert fa.shape == (64, a.feature_dim) and fa.dtype == np.float32
  np.testing.assert_array_equal(fa, np.asarray(b(x)))
  if kind == 'sl':  # (one kind suffices: the seed path is shared)
    c = encoders.train_encoder(kind, x, y, steps=3, seed=1, batch_size=32)
    assert not np.allclose(fa, np.asarray(c(x)))
  a.save(str(tmp_path / 'enc'))
  loaded = encoders.load_encoder(str(tmp_path / 'enc'))
  np.testing.assert_array_equal(np.asarray(loaded(x)), fa)
  # float input in [0, 1], internal batching with a ragged tail, and use inside jit
  small = encoders.Encoder(loaded.module, loaded.config, batch_size=24)
  np.testing.assert_allclose(np.asarray(small(x.astype(np.float32) / 255)), fa, atol=1e-5)
  np.testing.assert_allclose(np.asarray(jax.jit(loaded)(x[:5].astype(np.float32) / 255)), fa[:5],
                             atol=1e-5)
  with pytest.raises(ValueError, match='expects images of shape'):
    loaded(np.zeros((2, 9, 9, 1), np.uint8))


def test_sl_needs_labels(data):
  with pytest.raises(ValueError, match='labels'):
    encoders.train_encoder('sl', data[0], steps=1)
  with pytest.raises(ValueError, match="'sl' or 'ssl'"):
    encoders.train_encoder('byol', data[0], steps=1)


def test_user_encoder_checkpoint(tmp_path, monkeypatch):
  (tmp_path / 'my_encoders.py').write_text(textwrap.dedent('''
      from flax import nnx
      class Tiny(nnx.Module):
        def __init__(self, dim, *, rngs):
          self.proj = nnx.Linear(16, dim, rngs=rngs)
        def features(self, x):
          return self.proj(x.reshape(x.shape[0], -1))
  '''))
  monkeypatch.syspath_prepend(str(tmp_path))
  import my_encoders
  module = my_encoders.Tiny(3, rngs=nnx.Rngs(5))
  enc = encoders.Encoder(module, {'module': 'my_encoders:Tiny', 'kwargs': {'dim': 3},
                                  'method': 'features', 'image_shape': [4, 4, 1]})
  enc.save(str(tmp_path / 'mine'))
  assert json.loads((tmp_path / 'mine' / 'config.json').read_text())['module'] == 'my_encoders:Tiny'
  x = np.random.default_rng(0).random((5, 4, 4, 1)).astype(np.float32)
  loaded = encoders.load_encoder(str(tmp_path / 'mine'))
  np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(enc(x)))
  assert loaded(x).shape == (5, 3)
