"""Steps per dispatch and streamed inputs (fpjax.models.training).

The scanned path (S steps per dispatch, the GPU/TPU default) must take the same batches, keys
and number of steps as the Python loop (the CPU default), so both are forced here on the CPU
and compared. They agree to float rounding, not bitwise: XLA may fuse the step differently
inside a scan body.

Streaming: the probe and the attributor must accept a lazy array-like and never read it
whole; a wrapper that records every read and refuses anything but short contiguous slices
stands in for an on-disk array.
"""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fpjax.attribution import Attributor, LinearProbe
from fpjax.data import load_real
from fpjax.models import train_encoder, training
from fpjax.zoo import recipes, train


# ------------------------------------------------------------------ steps per dispatch


def test_steps_per_dispatch_default_env_and_override(monkeypatch):
  monkeypatch.delenv(training.STEPS_PER_DISPATCH_ENV, raising=False)
  expected = 1 if jax.default_backend() == 'cpu' else training.ACCELERATOR_STEPS_PER_DISPATCH
  assert training.steps_per_dispatch() == expected
  monkeypatch.setenv(training.STEPS_PER_DISPATCH_ENV, '7')
  assert training.steps_per_dispatch() == 7
  assert training.steps_per_dispatch(3) == 3  # an argument beats the environment
  monkeypatch.setenv(training.STEPS_PER_DISPATCH_ENV, 'many')
  with pytest.raises(ValueError, match='FPJAX_STEPS_PER_DISPATCH'):
    training.steps_per_dispatch()
  with pytest.raises(ValueError, match='>= 1'):
    training.steps_per_dispatch(0)


def test_step_loop_scan_equals_python_loop():
  """Least squares by SGD: 10 batches, S = 1 vs S = 3 (groups 3, 3, 3, 1) vs one scan of 10."""
  rng = np.random.default_rng(0)
  batches = [(rng.normal(size=(8, 5)).astype(np.float32), rng.normal(size=8).astype(np.float32))
             for _ in range(10)]

  def step(w, batch, lr):
    x, y = batch
    loss, g = jax.value_and_grad(lambda w: jnp.mean((x @ w - y) ** 2))(w)
    return w - lr * g, loss

  w_ref = np.zeros(5, np.float64)  # the same SGD in float64 numpy
  ref_losses = []
  for x, y in batches:
    x, y = x.astype(np.float64), y.astype(np.float64)
    r = x @ w_ref - y
    ref_losses.append(np.mean(r ** 2))
    w_ref = w_ref - 0.1 * 2 * x.T @ r / len(r)
  for s in (1, 3, 10):
    w, losses = training.StepLoop(step, per_dispatch=s).run(jnp.zeros(5), iter(batches), 0.1)
    assert losses.shape == (10,)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    np.testing.assert_allclose(w, w_ref, rtol=1e-5, atol=1e-6)


def _flat_state(modules):
  out = {}
  for name, m in modules.items():
    for path, v in nnx.to_flat_state(nnx.state(m)):
      out[(name,) + tuple(path)] = np.asarray(v[...])
  return out


def test_zoo_training_and_sampling_scanned_equal_loop_and_resume(tmp_path):
  """A VAE without normalisation (every parameter has a real gradient) and DDPM sampling."""
  real = load_real('digits')
  r = next(x for x in recipes.DEFAULT_ZOO if x.name == 'vae_pshuffle_none_lrelu_beta2')
  p = recipes.replace_preset(recipes.PRESETS['tiny'], steps={'vae': 12}, chunk=6)
  m1, steps1, loss1 = train.train(r, p, real.train_images, 3, str(tmp_path / 's1'),
                                  per_dispatch=1)
  # 4 steps per dispatch: groups 4, 2 inside each 6-step chunk (checkpoint boundary).
  m5, steps5, loss5 = train.train(r, p, real.train_images, 3, str(tmp_path / 's5'),
                                  per_dispatch=4)
  assert steps1 == steps5 == 12
  np.testing.assert_allclose(loss5, loss1, rtol=1e-5)
  a, b = _flat_state(m1), _flat_state(m5)
  assert a.keys() == b.keys()
  # Adam divides by sqrt(v): a near-zero gradient's rounding can move a weight by up to
  # ~lr (2e-3) per step, so a few weights differ by ~1e-5..1e-4; the bulk agrees to ~1e-7.
  # (The VAE's ex-post prior, fitted by EM to the trained encoder after training, amplifies the
  # encoder's rounding differences: it is held to the per-key tolerance only.)
  trained = [k for k in a if k[1] != 'prior']
  assert len(trained) < len(a)
  diffs = np.concatenate([np.abs(b[k] - a[k]).ravel() for k in trained])
  for k in a:
    np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=2e-4, err_msg=str(k))
  assert np.quantile(diffs, 0.99) < 2e-6, np.quantile(diffs, 0.99)
  # Interrupted after the first chunk and resumed, scanned: the same as uninterrupted, scanned.
  half = recipes.replace_preset(p, steps={'vae': 6})
  train.train(r, half, real.train_images, 3, str(tmp_path / 'r'), per_dispatch=4)
  mr, _, lossr = train.train(r, p, real.train_images, 3, str(tmp_path / 'r'), per_dispatch=4)
  assert lossr == loss5
  c = _flat_state(mr)
  for k in b:
    np.testing.assert_array_equal(c[k], b[k], err_msg=str(k))

  d = next(x for x in recipes.DEFAULT_ZOO if x.name == 'ddpm_nearest_gn_silu_ancestral')
  pd = recipes.replace_preset(recipes.PRESETS['tiny'], ancestral_steps=7)
  unet = train.build_modules(d, pd, real.image_shape, 0, num_classes=10)  # guided sampling
  # Zero-initialised output layer: perturb every parameter so the U-Net computes something.
  params = nnx.state(unet['unet'], nnx.Param)
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  nnx.update(unet['unet'], jax.tree.unflatten(
      tree, [l + 0.05 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)]))
  s1 = train.sample(d, pd, unet, 16, 5, real.image_shape, batch_size=16, per_dispatch=1)
  s3 = train.sample(d, pd, unet, 16, 5, real.image_shape, batch_size=16, per_dispatch=3)
  assert s1.shape == (16, 8, 8, 1) and s1.std() > 5
  # uint8 after rounding: a value on a .5 boundary may round either way.
  assert np.abs(s1.astype(int) - s3).max() <= 1 and np.mean(s1 == s3) > 0.99


def _toy_images(n=160, seed=0):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 3, n)
  x = rng.normal(size=(n, 8, 8, 1)).astype(np.float32) * 0.5
  x[y == 1, :4] += 1.0
  x[y == 2, :, ::2] -= 1.0
  return x, y


def test_probe_and_attributor_scanned_equal_loop():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 3, 300)
  x = (np.eye(3)[y] * 2 + rng.normal(size=(300, 3)))
  x = np.concatenate([x, rng.normal(size=(300, 5))], 1).astype(np.float32)
  p1 = LinearProbe(epochs=12, batch_size=32, per_dispatch=1).fit(x[:200], y[:200])
  p4 = LinearProbe(epochs=12, batch_size=32, per_dispatch=4).fit(x[:200], y[:200])
  assert p1.history_['steps'] == p4.history_['steps'] == 12 * (180 // 32)
  np.testing.assert_allclose(p4.history_['val_loss'], p1.history_['val_loss'], rtol=1e-5)
  np.testing.assert_allclose(p4.predict_proba(x[200:]), p1.predict_proba(x[200:]), atol=1e-5)

  img, iy = _toy_images()
  kw = dict(widths=(4, 8, 8), epochs=2, milestones=(1,), batch_size=32)
  a1 = Attributor(per_dispatch=1, **kw).fit(img[:128], iy[:128])
  a3 = Attributor(per_dispatch=3, **kw).fit(img[:128], iy[:128])
  np.testing.assert_allclose(a3.history_['train_loss'], a1.history_['train_loss'], rtol=1e-4)
  np.testing.assert_allclose(a3.predict_proba(img[128:]), a1.predict_proba(img[128:]), atol=1e-4)


def test_encoders_scanned_equal_loop():
  real = load_real('digits')
  x, y = real.train_images[:256], real.train_labels[:256]
  for kind in ('sl', 'ssl'):
    e1 = train_encoder(kind, x, y, steps=6, batch_size=32, per_dispatch=1)
    e4 = train_encoder(kind, x, y, steps=6, batch_size=32, per_dispatch=4)
    np.testing.assert_allclose(e4.config['final_loss'], e1.config['final_loss'], rtol=1e-4)
    np.testing.assert_allclose(np.asarray(e4(x[:64])), np.asarray(e1(x[:64])), rtol=1e-3,
                               atol=1e-4)


# ------------------------------------------------------------------ streamed inputs


class LazyRows:
  """An on-disk-like array: contiguous slices of at most ``max_rows`` rows, nothing else."""

  def __init__(self, a, max_rows):
    self._a, self.max_rows = a, max_rows
    self.shape, self.dtype = a.shape, a.dtype
    self.reads = []

  def __len__(self):
    return len(self._a)

  def __getitem__(self, s):
    if not isinstance(s, slice) or s.step not in (None, 1):
      raise AssertionError(f'non-contiguous read {s!r}')
    start, stop, _ = s.indices(len(self._a))
    assert stop - start <= self.max_rows, f'read of {stop - start} rows > {self.max_rows}'
    self.reads.append((start, stop))
    return self._a[s].copy()

  def __array__(self, *args, **kwargs):
    raise AssertionError('the whole array was materialised')


def test_shuffled_minibatches_cover_rows_once_per_epoch():
  x = np.arange(1000)[:, None] * np.ones((1, 3))
  lazy = LazyRows(x, max_rows=64 * 3)
  rows = np.sort(np.random.default_rng(1).choice(1000, 900, replace=False))
  batches = list(training.shuffled_minibatches(lazy, rows, 50, np.random.default_rng(0),
                                               block_rows=64, buffer_blocks=3))
  assert len(batches) == 900 // 50
  idx = np.concatenate([i for i, _ in batches])
  assert len(np.unique(idx)) == len(idx) and set(idx) <= set(rows)
  for i, xb in batches:
    np.testing.assert_array_equal(xb[:, 0], i)
  assert sorted(set(lazy.reads)) == sorted(lazy.reads)  # each block read once
  # Buffer >= N: one full shuffle of the listed rows (900 // 50 * 50 rows, none twice).
  one = list(training.shuffled_minibatches(x, rows, 900, np.random.default_rng(0)))
  assert len(one) == 1 and sorted(one[0][0]) == list(rows)


@pytest.mark.parametrize('per_feature', [True, False])
def test_streamed_moments_match_float64(per_feature):
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(1000, 6)) * [1, 1e-3, 10, 1, 1, 1] + 1e4).astype(np.float32)
  mean, std = training.streamed_moments(LazyRows(x, 128), 'x', per_feature=per_feature,
                                        block_rows=128)
  x64 = x.astype(np.float64)
  axis = 0 if per_feature else None
  np.testing.assert_allclose(mean, x64.mean(axis), rtol=1e-13)
  np.testing.assert_allclose(std, x64.std(axis), rtol=1e-9)
  x[517, 2] = np.inf
  with pytest.raises(ValueError, match='row 517'):
    training.streamed_moments(LazyRows(x, 128), 'x', per_feature=per_feature, block_rows=128)


def test_probe_streams_lazy_arrays_with_bounded_reads():
  rng = np.random.default_rng(0)
  n = 1200
  y = rng.integers(0, 4, n)
  x = (np.eye(4)[y] @ rng.normal(size=(4, 12)) + rng.normal(size=(n, 12))).astype(np.float32)
  x = x.reshape(n, 3, 4)  # flattened inside, a slice at a time
  kw = dict(epochs=5, batch_size=64, block_rows=100, buffer_blocks=3)
  ref = LinearProbe(**kw).fit(x[:1000], y[:1000], seed=2)
  lazy = LazyRows(x[:1000], max_rows=300)
  probe = LinearProbe(**kw).fit(lazy, y[:1000], seed=2)
  assert len(lazy.reads) > 5 * 4  # several buffers per epoch
  np.testing.assert_array_equal(probe.mean_, ref.mean_)
  test = LazyRows(x[1000:], max_rows=300)
  np.testing.assert_array_equal(probe.predict(test), ref.predict(x[1000:]))
  np.testing.assert_allclose(probe.predict_proba(test), ref.predict_proba(x[1000:]), atol=1e-6)
  assert ref.score(x[1000:], y[1000:]) > 0.8


def test_attributor_streams_lazy_arrays_with_bounded_reads():
  x, y = _toy_images(240)
  kw = dict(widths=(4, 8, 8), epochs=2, milestones=(1,), batch_size=32, block_rows=40,
            buffer_blocks=2)
  ref = Attributor(**kw).fit(x[:160], y[:160], seed=1)
  lazy = LazyRows(x[:160], max_rows=80)
  att = Attributor(**kw).fit(lazy, y[:160], seed=1)
  assert ref.shift_ == att.shift_ and ref.scale_ == att.scale_
  test = LazyRows(x[160:], max_rows=80)
  np.testing.assert_array_equal(att.predict(test), ref.predict(x[160:]))
  np.testing.assert_allclose(att.predict_proba(test), ref.predict_proba(x[160:]), atol=1e-6)
  np.testing.assert_allclose(att.features(test), ref.features(x[160:]), atol=1e-5)


def test_fit_classifier_validation_streams():
  rng = np.random.default_rng(3)
  y = rng.integers(0, 2, 500)
  x = (y[:, None] * 2.0 + rng.normal(size=(500, 4))).astype(np.float32)
  lazy = LazyRows(x, max_rows=64)

  def fit(data):
    model = nnx.Linear(4, 2, rngs=nnx.Rngs(0))
    return training.fit_classifier(
        _Wrapped(model), data, y, make_tx=lambda *_: optax.adam(1e-2), epochs=3,
        batch_size=32, val_fraction=0.2, block_rows=32, buffer_blocks=2)
  h_ref, h_lazy = fit(x), fit(lazy)
  assert h_ref['val_loss'] == h_lazy['val_loss'] and len(h_ref['val_loss']) == 3


class _Wrapped(nnx.Module):
  """nnx.Linear with the ``train`` keyword fpjax's classifiers take."""

  def __init__(self, inner):
    self.inner = inner

  def __call__(self, x, train=False):
    return self.inner(x)
