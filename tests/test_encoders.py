"""SL / SSL encoders: determinism, save/load round trip, user checkpoints, jit-compatibility.

What is bitwise (see README, "Precision and determinism"): the same parameters give the same
features in one process on every backend (save/load round trip). Two trainings from the same
seed give the same bits on the CPU only; GPU reductions and convolution algorithms are not
bitwise deterministic (unless XLA_FLAGS=--xla_gpu_deterministic_ops=true, which fpjax does not
set), so there they agree within a tolerance. Convolutions run at the backend's default
precision (TF32 on NVIDIA GPUs, whose algorithm may change with the batch shape), so features
of different batchings agree to float32 rounding on the CPU and to TF32 rounding elsewhere.
"""
import json
import textwrap

import jax
import numpy as np
import pytest
from flax import nnx

from fpjax.models import encoders

ON_CPU = jax.default_backend() == 'cpu'


def assert_close_features(got, want, *, cpu_atol):
  """Features equal up to float32 rounding on the CPU, TF32 rounding on accelerators."""
  atol = cpu_atol if ON_CPU else 1e-2 * float(np.abs(want).max())
  np.testing.assert_allclose(got, want, rtol=0, atol=atol)


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
  fb = np.asarray(b(x))
  if ON_CPU:
    np.testing.assert_array_equal(fa, fb)
  else:  # reductions in another order: same model up to rounding, far from another seed's
    assert np.linalg.norm(fa - fb) <= 1e-3 * np.linalg.norm(fa)
  if kind == 'sl':  # (one kind suffices: the seed path is shared)
    c = encoders.train_encoder(kind, x, y, steps=3, seed=1, batch_size=32)
    assert np.linalg.norm(fa - np.asarray(c(x))) > 1e-2 * np.linalg.norm(fa)
  a.save(str(tmp_path / 'enc'))
  loaded = encoders.load_encoder(str(tmp_path / 'enc'))
  np.testing.assert_array_equal(np.asarray(loaded(x)), fa)
  # float input in [0, 1], internal batching with a ragged tail, and use inside jit
  small = encoders.Encoder(loaded.module, loaded.config, batch_size=24)
  assert_close_features(np.asarray(small(x.astype(np.float32) / 255)), fa, cpu_atol=1e-5)
  assert_close_features(np.asarray(jax.jit(loaded)(x[:5].astype(np.float32) / 255)), fa[:5],
                        cpu_atol=1e-5)
  with pytest.raises(ValueError) as e:
    loaded(np.zeros((2, 9, 9, 1), np.uint8))
  assert '(2, 9, 9, 1)' in str(e.value)


def test_sl_needs_labels(data):
  with pytest.raises(ValueError):
    encoders.train_encoder('sl', data[0], steps=1)
  with pytest.raises(ValueError) as e:
    encoders.train_encoder('byol', data[0], steps=1)
  assert "'byol'" in str(e.value)


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
