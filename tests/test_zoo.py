"""The GM zoo: recipe table, output format, no-op rebuild, determinism, resume, sample quality."""
import dataclasses
import json
import os

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from sklearn import mixture

from fpjax import zoo
from fpjax.data import load_real
from fpjax.errors import ConfigMismatchError, UserInputError
from fpjax.zoo import build as zoo_build
from fpjax.zoo import models, quality, recipes, train
from fpjax.zoo.families import diffusion, vae as vae_family

TAG_KEYS = {'family', 'upsampling', 'normalization', 'nonlinearity', 'loss', 'sampler'}


def test_recipe_table_covers_families_and_knobs():
  table = recipes.DEFAULT_ZOO
  assert len(table) >= 12 and len({r.name for r in table}) == len(table)
  assert {r.family for r in table} == set(recipes.FAMILIES)
  for knob, at_least in [('upsampling', 4), ('normalization', 4), ('nonlinearity', 3),
                         ('loss', 6), ('sampler', 2)]:
    values = {r.tags[knob] for r in table} - {recipes.NA}
    assert len(values) >= at_least, (knob, values)
  # Two models differing only in seed.
  pairs = [(a, b) for a in table for b in table if a.name < b.name and
           dataclasses.replace(a, name='', seed=0) == dataclasses.replace(b, name='', seed=0)]
  assert pairs
  for r in table:
    assert set(r.tags) == TAG_KEYS


@pytest.fixture(scope='module')
def tiny_zoo(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('zoo'))
  meta = zoo.build_zoo(workdir, preset='tiny', real='digits', seed=0, progress=False)
  return workdir, meta


def test_zoo_output_format(tiny_zoo):
  workdir, meta = tiny_zoo
  with open(os.path.join(workdir, 'zoo.json')) as f:
    assert json.load(f) == meta
  assert meta['real'] == 'digits' and meta['preset'] == 'tiny' and meta['image_shape'] == [8, 8, 1]
  ref = meta['reference']
  assert set(ref) == {'real_test', 'noise', 'num_test', 'classifier', 'sl_encoder'}
  for kind in ('real_test', 'noise'):
    assert set(ref[kind]) == {'distance_ratio', 'recognisable', 'frechet_distance', 'diversity'}
  assert ref['noise']['distance_ratio'] == 1.0
  assert ref['real_test']['distance_ratio'] < 0.6
  assert ref['real_test']['frechet_distance'] < ref['noise']['frechet_distance']
  assert {m['family'] for m in meta['models']} == set(recipes.FAMILIES)
  for m in meta['models']:
    assert set(m['tags']) == TAG_KEYS and m['tags']['family'] == m['family']
    q = m['quality']
    assert set(q) == {'sample_to_manifold', 'real_test_to_manifold', 'noise_to_manifold',
                      'distance_ratio', 'recognisable', 'recognisable_vs_real',
                      'frechet_distance', 'diversity'}
    assert q['distance_ratio'] == pytest.approx(q['sample_to_manifold'] / q['noise_to_manifold'])
    assert 0 <= q['recognisable'] <= 1 and q['frechet_distance'] >= 0
    assert q['recognisable_vs_real'] == pytest.approx(
        q['recognisable'] / meta['reference']['real_test']['recognisable'])
    assert np.isfinite(m['final_loss']) and m['steps'] > 0 and m['num_samples'] == 32
    files = sorted(os.listdir(os.path.join(workdir, 'images', m['name'])))
    assert len(files) == 32 and files[0] == '000000.png'
    assert os.path.exists(os.path.join(workdir, 'grids', m['name'] + '.png'))
  images, meta2 = zoo.load_zoo(workdir)
  assert meta2 == meta and images.images.shape == (4 * 32, 8, 8, 1)
  assert images.class_names == [m['name'] for m in meta['models']]


def test_digit_classifier_rejects_noise_and_recognises_real_digits(tiny_zoo):
  _, meta = tiny_zoo
  ref = meta['reference']
  # Calibrated on non-digits: uniform noise (another seed than its training noise) is not a digit.
  assert ref['noise']['recognisable'] <= 0.02, ref
  assert ref['real_test']['recognisable'] >= 0.8, ref
  assert ref['classifier']['test_accuracy'] >= 0.9, ref
  assert ref['classifier']['temperature'] > 0


def test_non_digits_are_not_recognisable(tiny_zoo):
  workdir, _ = tiny_zoo
  real = load_real('digits')
  clf = quality.load_digit_classifier(os.path.join(workdir, 'reference', 'digit_classifier'))
  neg = quality.non_digits(real.test_images, real.test_labels, 200, seed=11)
  assert neg.shape == (200, 8, 8, 1) and neg.dtype == np.uint8
  # Mostly rejected (the blends of two digits are the hardest); real digits mostly kept.
  assert np.mean(clf.recognisable(neg)) <= 0.15
  assert np.mean(clf.recognisable(real.test_images)) >= 0.8


def test_quality_reference_is_deterministic_and_cached(tiny_zoo, tmp_path):
  workdir, meta = tiny_zoo
  p = recipes.PRESETS['tiny']
  kw = dict(seed=0, classifier_steps=p.classifier_steps, encoder_steps=p.encoder_steps,
            num_samples=meta['num_samples'])
  fresh = quality.QualityReference(load_real('digits'), str(tmp_path), **kw)
  assert fresh.summary == meta['reference']  # retrained from scratch: the same numbers
  stamp = tmp_path / 'digit_classifier' / 'zoo_config.json'
  before = stamp.stat().st_mtime_ns
  again = quality.QualityReference(load_real('digits'), str(tmp_path), **kw)
  assert again.summary == fresh.summary and stamp.stat().st_mtime_ns == before  # reused


def _closed_form_fd_diagonal(mu1, var1, mu2, var2):
  return np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)


def test_frechet_distance_closed_form():
  rng = np.random.default_rng(0)
  mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
  var1, var2 = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
  np.testing.assert_allclose(quality.frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)),
                             _closed_form_fd_diagonal(mu1, var1, mu2, var2), rtol=1e-10)
  # Non-commuting covariances against an independent float64 form: tr((C1 C2)^1/2) is the sum
  # of square roots of the eigenvalues of the symmetric C1^1/2 C2 C1^1/2.
  a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
  c1, c2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
  w, v = np.linalg.eigh(c1)
  s1 = (v * np.sqrt(w)) @ v.T
  tr_sqrt = np.sum(np.sqrt(np.linalg.eigvalsh(s1 @ c2 @ s1)))
  want = np.trace(c1) + np.trace(c2) - 2 * tr_sqrt
  np.testing.assert_allclose(quality.frechet_distance(np.zeros(6), c1, np.zeros(6), c2), want,
                             rtol=1e-8)
  assert quality.frechet_distance(mu1, np.diag(var1), mu1, np.diag(var1)) == pytest.approx(
      0, abs=1e-9)
  # gaussian_stats: float64 mean and unbiased covariance.
  f = rng.normal(size=(50, 4)).astype(np.float32)
  mu, cov = quality.gaussian_stats(f)
  np.testing.assert_allclose(mu, f.astype(np.float64).mean(0))
  np.testing.assert_allclose(cov, np.cov(f.astype(np.float64).T))


def test_zoo_rebuild_is_a_noop_and_config_is_checked(tiny_zoo):
  workdir, meta = tiny_zoo
  path = os.path.join(workdir, 'zoo.json')
  before = os.stat(path).st_mtime_ns
  assert zoo.build_zoo(workdir, preset='tiny', real='digits', seed=0, progress=False) == meta
  assert os.stat(path).st_mtime_ns == before
  with pytest.raises(ConfigMismatchError) as e:
    zoo.build_zoo(workdir, preset='tiny', real='digits', seed=1, progress=False)
  assert e.value.workdir == workdir and os.stat(path).st_mtime_ns == before


def test_zoo_samples_near_manifold_and_diverse(tiny_zoo):
  _, meta = tiny_zoo
  for m in meta['models']:
    q = m['quality']
    # Real held-out images set the floor, uniform noise the ceiling.
    assert q['real_test_to_manifold'] < q['sample_to_manifold'] < 0.8 * q['noise_to_manifold'], m
    assert q['diversity'] > 0.05, m  # not one repeated image


def test_quickly_trained_ddpm_samples_look_like_digits(tiny_zoo):
  _, meta = tiny_zoo
  q = {m['family']: m['quality'] for m in meta['models']}['diffusion']
  gap = q['noise_to_manifold'] - q['real_test_to_manifold']
  # Samples close most of the gap between noise and real held-out digits, and do not collapse.
  assert q['sample_to_manifold'] < q['real_test_to_manifold'] + 0.4 * gap
  assert q['diversity'] > 0.3


@pytest.mark.parametrize('normalization,permutation', [('actnorm', 'invconv'), ('none', 'reverse')])
def test_flow_is_invertible_with_exact_log_determinant(normalization, permutation):
  flow = models.Flow((8, 8, 1), 8, 2, normalization, 'silu', permutation, rngs=nnx.Rngs(0))
  # Zero-initialised couplings are the identity: perturb every parameter to test a real map.
  params = nnx.state(flow, nnx.Param)
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  nnx.update(flow, jax.tree.unflatten(tree, [l + 0.1 * jax.random.normal(k, l.shape)
                                            for l, k in zip(leaves, keys)]))
  x = jax.random.uniform(jax.random.key(2), (3, 8, 8, 1), minval=0.02, maxval=0.98)
  # Full float32 matmuls and convolutions: GPUs default to TF32, TPUs to bfloat16 passes,
  # which this 2e-5 check would see (training needs no such precision).
  with jax.default_matmul_precision('float32'):
    z, logdet = flow.forward(x)
    np.testing.assert_allclose(flow.inverse(z), x, atol=2e-5)
    # log|det J| against the dense Jacobians of the 64-dim map, one per example.
    jac = jax.jit(jax.vmap(jax.jacfwd(lambda v: flow.forward(v.reshape(1, 8, 8, 1))[0].ravel())))(
        x.reshape(3, 64))
  np.testing.assert_allclose(logdet, np.linalg.slogdet(np.asarray(jac, np.float64))[1],
                             rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize('name', ['flow_glow_actnorm_relu', 'flow_realnvp_none_silu'])
def test_briefly_trained_flows_sample_digits(tmp_path, name):
  real = load_real('digits')
  r = next(x for x in recipes.DEFAULT_ZOO if x.name == name)
  p = recipes.replace_preset(recipes.PRESETS['tiny'], steps={'flow': 400})
  modules, _, bpd = train.train(r, p, real.train_images, 0, str(tmp_path))
  samples = train.sample(r, p, modules, 200, 1, real.image_shape)
  distance = quality.ManifoldDistance(real.train_images)
  noise = np.random.default_rng(0).integers(0, 256, (200, 8, 8, 1), dtype=np.uint8)
  d_sample, d_real, d_noise = distance(samples), distance(real.test_images), distance(noise)
  # Same bar as the DDPM: samples close most of the gap from noise to real held-out digits.
  assert d_sample < d_real + 0.3 * (d_noise - d_real), (bpd, d_sample, d_real, d_noise)
  diversity = (quality.mean_pairwise_distance(samples)
               / quality.mean_pairwise_distance(real.test_images))
  assert diversity > 0.3, diversity


def test_training_is_deterministic_and_resumes(tmp_path):
  real = load_real('digits')
  r = [x for x in recipes.DEFAULT_ZOO if x.family == 'gan'][0]
  p = recipes.replace_preset(recipes.PRESETS['tiny'], steps={'gan': 40}, chunk=20)
  half = recipes.replace_preset(p, steps={'gan': 20})
  m1, _, loss1 = train.train(r, p, real.train_images, 3, str(tmp_path / 'a'))
  train.train(r, half, real.train_images, 3, str(tmp_path / 'b'))  # "interrupted" at step 20
  m2, steps, loss2 = train.train(r, p, real.train_images, 3, str(tmp_path / 'b'))
  assert steps == 40 and loss1 == loss2
  s1 = train.sample(r, p, m1, 16, 5, real.image_shape)
  s2 = train.sample(r, p, m2, 16, 5, real.image_shape)
  np.testing.assert_array_equal(s1, s2)
  assert not np.array_equal(s1, train.sample(r, p, m1, 16, 6, real.image_shape))


def test_workdir_of_another_zoo_is_refused(tmp_path):
  # A workdir whose build.json was written under another preset definition (recipe_hash) is
  # never resumed: its checkpoints would be of other networks.
  with open(tmp_path / 'build.json', 'w') as f:
    json.dump({'real': 'digits', 'preset': 'tiny', 'seed': 0, 'num_samples': 32,
               'image_shape': [8, 8, 1], 'recipe_hash': 'older-definition'}, f)
  with pytest.raises(ConfigMismatchError) as e:
    zoo.build_zoo(str(tmp_path), preset='tiny', real='digits', seed=0, progress=False)
  assert e.value.workdir == str(tmp_path)
  assert sorted(os.listdir(tmp_path)) == ['build.json']  # nothing trained or written


def test_unknown_preset():
  with pytest.raises(UserInputError) as e:
    zoo.build_zoo('/nonexistent', preset='huge')
  assert "'huge'" in str(e.value)
  assert not os.path.exists('/nonexistent')


@pytest.mark.parametrize('flag, message', [('--workers=0', 'workers must be >= 1, got 0'),
                                           ('--preset=huge', "flag --preset=huge")])
def test_build_zoo_binary_refuses_bad_flags_in_one_line(tmp_path, flag, message):
  import subprocess
  import sys
  res = subprocess.run([sys.executable, '-m', 'fpjax.bin.build_zoo', f'--workdir={tmp_path}',
                        '--preset=tiny', flag], capture_output=True, text=True, timeout=300)
  assert res.returncode == 2, res.stderr[-2000:]
  errors = [l for l in res.stderr.splitlines() if 'error:' in l]
  assert len(errors) == 1 and message in errors[0], res.stderr[-2000:]
  assert 'Traceback' not in res.stderr
  assert os.listdir(tmp_path) == []  # nothing written




def test_worker_processes_train_as_this_process_and_a_failed_model_is_named(tmp_path, monkeypatch):
  # Two networks in two worker processes, a few steps each (compiling dominates this test). The
  # VAE's 30 steps are no multiple of a chunk of 20: its training raises. Jobs finish longest
  # first, so the GAN's entry is written before the VAE's failure fails the build.
  p = recipes.replace_preset(
      recipes.PRESETS['tiny'], name='mini', recipes=('gan_tconv_bn_relu_ns', 'vae_tconv_bn_relu'),
      steps={'gan': 40, 'vae': 30}, chunk=20, num_samples=8, classifier_steps=20,
      encoder_steps=20)
  monkeypatch.setitem(recipes.PRESETS, 'mini', p)
  with pytest.raises(RuntimeError) as e:
    zoo.build_zoo(str(tmp_path / 'two'), preset='mini', real='digits', progress=False, workers=2)
  # The failed model is named; the cause is the worker's ValueError (30 steps, chunk 20).
  assert 'vae_tconv_bn_relu' in str(e.value) and 'gan_tconv_bn_relu_ns' not in str(e.value)
  assert isinstance(e.value.__cause__, ValueError)
  assert '30' in str(e.value.__cause__) and '20' in str(e.value.__cause__)
  assert not (tmp_path / 'two' / 'zoo.json').exists()
  with open(tmp_path / 'two' / 'models' / 'gan_tconv_bn_relu_ns.json') as f:
    entry = json.load(f)
  assert entry['train_seconds'] > 0 and entry['sample_seconds'] > 0
  # The worker's network and samples are this process's.
  gan = [r for r in recipes.recipes_for(p) if r.family == 'gan']
  [mine] = zoo_build._train_and_sample(gan, p, 'digits', 0, 8, str(tmp_path / 'one'))
  assert mine['final_loss'] == entry['final_loss'] and mine['steps'] == entry['steps'] == 40
  for i, want in enumerate(mine['samples']):
    got = np.asarray(Image.open(tmp_path / 'two' / 'images' / gan[0].name / f'{i:06d}.png'))
    np.testing.assert_array_equal(got, want[..., 0])
  with pytest.raises(UserInputError):
    zoo.build_zoo(str(tmp_path / 'two'), preset='mini', real='digits', progress=False, workers=0)


# ----------------------------------------------------------------------------- DDPM samplers
# On Gaussian data x0 ~ N(m, s^2) (each pixel) the optimal eps-prediction is known in closed
# form, and both samplers then map x_T affinely: the references below are float64 numpy.

GAUSS_M, GAUSS_S = 0.2, 0.15


def _linear_alpha_bar64(T):
  scale = 1000.0 / T
  return np.cumprod(1.0 - np.linspace(1e-4 * scale, 0.02 * scale, T))


class _GaussianOracle(nnx.Module):
  """The exact U-Net output for x0 ~ N(m, s^2): E[eps | x_t] = sqrt(1 - a) (x_t - sqrt(a) m) /
  (a s^2 + 1 - a), or for 'v' E[v | x_t] = (E[eps | x_t] - sqrt(1 - a) x_t) / sqrt(a).

  Class-conditional (num_classes > 0): class y has mean m + CLASS_SHIFT * y, "no class"
  (y = num_classes) mean m."""

  def __init__(self, T, target='eps', num_classes=0):
    self.T, self.target, self.num_classes = T, target, num_classes

  def __call__(self, x, t, y=None, **unused):  # the U-Net's call: (x, t, train=..., y=...)
    a = diffusion.ddpm_schedule(self.T)[t][:, None, None, None]
    m = GAUSS_M
    if y is not None:
      m = m + CLASS_SHIFT * jnp.where(y == self.num_classes, 0, y)[:, None, None, None]
    eps = jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * m) / (a * GAUSS_S ** 2 + 1 - a)
    return eps if self.target == 'eps' else (eps - jnp.sqrt(1 - a) * x) / jnp.sqrt(a)


CLASS_SHIFT = 0.02  # small: no sample reaches the sampler's x0 clipping at 1


def _run_sampler(sampler, T, k, n=64, seed=0, target='eps', guidance=None, num_classes=0):
  """(x_T, x_0, the labels or None) of the zoo's sampler driven by the Gaussian oracle."""
  r = recipes.Recipe('toy', 'diffusion', loss=target, sampler=sampler)
  p = recipes.replace_preset(recipes.PRESETS['tiny'], diffusion_timesteps=T, ancestral_steps=k,
                             ddim_steps=k, diffusion_guidance=guidance)
  init, step, num = diffusion.ddpm_sampler(r, p)
  gdef, params, rest = nnx.split(_GaussianOracle(T, target, num_classes), nnx.Param, ...)
  (x_T, y), key = init(jax.random.key(seed), n, (8, 8, 1), num_classes)
  x = x_T
  for j in range(num):
    (x, y), _ = step((x, y), j, key, gdef, params, rest)
  labels = None if y is None else np.asarray(y)
  return np.asarray(x_T, np.float64), np.asarray(x, np.float64), labels


def _respaced(T, k):
  ab = _linear_alpha_bar64(T)[np.round(np.linspace(0, T - 1, k)).astype(int)]
  return ab, np.concatenate([[1.0], ab[:-1]])  # alpha_bar at each step and at the next


def test_ddim_with_an_exact_eps_oracle_is_the_analytic_affine_map():
  T, k = 200, 20
  x_T, x0, _ = _run_sampler('ddim', T, k)
  # Deviation d = x_t - sqrt(a) m; x0_hat = m + g d with g = s^2 sqrt(a) / V, V = a s^2 + 1 - a;
  # a DDIM step multiplies d by sqrt(a') g + sqrt(1 - a') (1 - sqrt(a) g) / sqrt(1 - a).
  s2, gain = GAUSS_S ** 2, 1.0
  ab, ab_prev = _respaced(T, k)
  for a, ap in zip(ab[::-1], ab_prev[::-1]):
    g = s2 * np.sqrt(a) / (a * s2 + 1 - a)
    gain *= np.sqrt(ap) * g + np.sqrt(1 - ap) * (1 - np.sqrt(a) * g) / np.sqrt(1 - a)
  expected = GAUSS_M + gain * (x_T - np.sqrt(ab[-1]) * GAUSS_M)
  np.testing.assert_allclose(x0, expected, atol=2e-5)
  # With every timestep it approaches the probability-flow ODE, which carries N(sqrt(a_T) m, V_T)
  # to the data distribution N(m, s^2): per sample, x0 = m + s (x_T - sqrt(a_T) m) / sqrt(V_T)
  # (the discretisation shrinks the deviation by 2.4 % at 400 steps, 1 % at 1000).
  T = k = 400
  x_T, x0, _ = _run_sampler('ddim', T, k)
  a_T = _linear_alpha_bar64(T)[-1]
  exact = GAUSS_M + GAUSS_S * (x_T - np.sqrt(a_T) * GAUSS_M) / np.sqrt(a_T * s2 + 1 - a_T)
  np.testing.assert_allclose(x0 - GAUSS_M, exact - GAUSS_M, rtol=0.03)


def test_ancestral_sampler_with_an_exact_eps_oracle_has_the_analytic_moments():
  T, k = 200, 20
  _, x0, _ = _run_sampler('ancestral', T, k, n=256)
  # Mean of d and its variance through posterior steps d' = (c0 g + c1) d + sqrt(var) noise.
  s2 = GAUSS_S ** 2
  ab, ab_prev = _respaced(T, k)
  mean, var = -np.sqrt(ab[-1]) * GAUSS_M, 1.0  # x_T ~ N(0, 1)
  for i, (a, ap) in reversed(list(enumerate(zip(ab, ab_prev)))):
    beta = 1 - a / ap
    c0, c1 = np.sqrt(ap) * beta / (1 - a), np.sqrt(1 - beta) * (1 - ap) / (1 - a)
    g = s2 * np.sqrt(a) / (a * s2 + 1 - a)
    mean, var = (c0 * g + c1) * mean, (c0 * g + c1) ** 2 * var
    var += beta * (1 - ap) / (1 - a) if i > 0 else 0.0
  # 16384 values: the standard errors are 0.8 % of the std and 0.008 std on the mean.
  assert abs(np.mean(x0) - (GAUSS_M + mean)) < 0.04 * np.sqrt(var)
  assert abs(np.std(x0) / np.sqrt(var) - 1) < 0.04
  # (Not those of the data: 20 respaced posterior steps that plug in E[x0 | x_t] shrink the std
  # to 0.58 s here, 50 of 1000 to 0.75 s; all 1000 reach 0.975 s.)


@pytest.mark.parametrize('sampler', ['ddim', 'ancestral'])
def test_v_prediction_samples_like_eps_prediction_given_the_exact_outputs(sampler):
  # The same x0 estimate read off either parameterisation: the same samples.
  _, x_eps, _ = _run_sampler(sampler, 200, 20, target='eps')
  _, x_v, _ = _run_sampler(sampler, 200, 20, target='v')
  np.testing.assert_allclose(x_v, x_eps, atol=1e-4)


def test_classifier_free_guidance_extrapolates_the_class_conditional_output():
  # The guided output (1 + w) f(x, y) - w f(x) of the Gaussian oracle is the oracle of the mean
  # m + (1 + w) * shift_y: DDIM then maps x_T affinely to that mean (as in the test above).
  T, k, w, classes = 200, 20, 2.0, 4
  x_T, x0, y = _run_sampler('ddim', T, k, guidance=w, num_classes=classes)
  assert set(np.unique(y)) == set(range(classes))  # drawn uniformly: 64 draws hit all 4
  m = GAUSS_M + (1 + w) * CLASS_SHIFT * y[:, None, None, None]
  s2, gain = GAUSS_S ** 2, 1.0
  ab, ab_prev = _respaced(T, k)
  for a, ap in zip(ab[::-1], ab_prev[::-1]):
    g = s2 * np.sqrt(a) / (a * s2 + 1 - a)
    gain *= np.sqrt(ap) * g + np.sqrt(1 - ap) * (1 - np.sqrt(a) * g) / np.sqrt(1 - a)
  np.testing.assert_allclose(x0, m + gain * (x_T - np.sqrt(ab[-1]) * m), atol=2e-5)


def test_a_class_conditional_ddpm_trains_on_the_labels_and_refuses_to_train_without(tmp_path):
  real = load_real('digits')
  r = next(x for x in recipes.DEFAULT_ZOO if x.family == 'diffusion')
  p = recipes.replace_preset(recipes.PRESETS['tiny'], steps={'diffusion': 4}, chunk=4)
  assert p.diffusion_guidance is not None  # the zoo's DDPMs are class-conditional
  with pytest.raises(ValueError):
    train.train(r, p, real.train_images, 0, str(tmp_path / 'a'))
  assert not os.path.exists(tmp_path / 'a')  # refused before anything is trained or written
  mods, steps, loss = train.train(r, p, real.train_images, 0, str(tmp_path / 'b'),
                                  real_labels=real.train_labels)
  assert mods['unet'].num_classes == 10 and steps == 4 and np.isfinite(loss)
  plain = recipes.replace_preset(p, diffusion_guidance=None)
  assert train.build_modules(r, plain, real.image_shape, 0, num_classes=10)['unet'].label is None


def test_diffusion_targets_give_back_x0_and_weight_it_by_min_snr():
  ab = _linear_alpha_bar64(1000)[::50]
  rng = np.random.default_rng(0)
  x0, eps = rng.standard_normal((2, len(ab), 4, 4, 1))
  a = ab[:, None, None, None]
  xt = np.sqrt(a) * x0 + np.sqrt(1 - a) * eps
  snr = ab / (1 - ab)
  args = [jnp.asarray(v, jnp.float32) for v in (x0, eps, ab)]
  v, wv = (np.asarray(z, np.float64) for z in diffusion.diffusion_target('v', *args))
  np.testing.assert_allclose(np.sqrt(a) * xt - np.sqrt(1 - a) * v, x0, atol=1e-5)
  np.testing.assert_allclose(wv, np.minimum(snr, 5.0) / (snr + 1), rtol=1e-3)
  e, we = (np.asarray(z, np.float64) for z in diffusion.diffusion_target('eps', *args))
  np.testing.assert_allclose(e, eps, atol=1e-6)
  np.testing.assert_allclose(we, np.minimum(snr, 5.0) / snr, rtol=1e-3)
  with pytest.raises(ValueError):
    diffusion.diffusion_target('x0', *args)


def test_min_snr_weights_match_the_formula():
  ab = _linear_alpha_bar64(1000)
  snr = ab / (1 - ab)
  w = np.asarray(diffusion.min_snr_weights(jnp.asarray(ab, jnp.float32), 5.0), np.float64)
  np.testing.assert_allclose(w, np.minimum(snr, 5.0) / snr, rtol=1e-3)  # float32 1 - a
  assert w[0] < 0.01 and w[-1] == 1.0  # clean steps down-weighted, noisy ones untouched


# ----------------------------------------------------------------------------- VAE ex-post prior


def _mixture_latents64(prior, key, n):
  """n latents of a LatentMixture in float64 numpy from the draws its key gives: a component
  by its log weights, then mean + Cholesky factor @ a standard normal draw."""
  kc, kz = jax.random.split(key)
  comp = np.asarray(jax.random.categorical(kc, prior.log_weights[...], shape=(n,)))
  eps = np.asarray(jax.random.normal(kz, (n, prior.latent_dim)), np.float64)
  means, chols = (np.asarray(v[...], np.float64) for v in (prior.means, prior.chols))
  return means[comp] + np.einsum('nij,nj->ni', chols[comp], eps)


def _assert_images_close(samples, images01):
  """uint8 samples against float64 images in [0, 1]: equal after rounding, but for pixels a
  float32 latent moved across a rounding boundary (at most one level)."""
  want = np.clip(np.rint(images01 * 255), 0, 255)
  assert samples.shape == want.shape and samples.dtype == np.uint8
  diff = np.abs(samples.astype(np.int64) - want)
  assert diff.max() <= 1 and np.mean(diff == 0) > 0.97, (diff.max(), np.mean(diff == 0))


def test_vae_samples_from_its_fitted_prior():
  real = load_real('digits')
  r = next(x for x in recipes.DEFAULT_ZOO if x.family == 'vae')
  p = recipes.PRESETS['tiny']
  vae = train.build_modules(r, p, real.image_shape, seed=0)['vae']  # untrained: any encoder will do
  k = vae.prior.log_weights.shape[0]
  assert k == vae_family.PRIOR_COMPONENTS > 1
  vae_family.fit_ex_post_prior(vae, real.train_images, seed=0)
  # The mixture is the fit of one draw from q(z | x) per image, N(mu(x), exp(logvar(x))).
  mu, logvar = (np.asarray(v, np.float64)
                for v in vae.encode(jnp.asarray(real.train_images, jnp.float32) / 255.0))
  draws = mu + np.exp(0.5 * logvar) * np.random.default_rng(0).standard_normal(mu.shape)
  gm = mixture.GaussianMixture(k, covariance_type='full', reg_covar=vae_family.PRIOR_REG,
                               max_iter=200, random_state=0).fit(draws)
  np.testing.assert_allclose(vae.prior.means[...], gm.means_, rtol=1e-3, atol=1e-3)
  np.testing.assert_allclose(np.exp(vae.prior.log_weights[...]), gm.weights_, rtol=1e-4)
  chols = np.asarray(vae.prior.chols[...], np.float64)
  np.testing.assert_allclose(chols @ chols.transpose(0, 2, 1), gm.covariances_, rtol=1e-3,
                             atol=1e-5)
  # Latents drawn from it have the moments of the draws (EM keeps the data's covariance, plus
  # the 1e-4 regularisation of each component).
  z = np.asarray(jax.jit(vae.sample_latent, static_argnums=1)(jax.random.key(0), 20000), np.float64)
  np.testing.assert_allclose(z.mean(0), draws.mean(0), atol=0.05 * draws.std(0).max())
  np.testing.assert_allclose(z.var(0), draws.var(0) + 1e-4, rtol=0.1)
  # And the zoo's samples are the decoder's mean images of mixture latents: the latents and the
  # sigmoid recomputed in float64 numpy from batch 0's draws (fold_in(key(seed), 0)).
  samples = train.sample(r, p, {'vae': vae}, 16, 5, real.image_shape)
  z = _mixture_latents64(vae.prior, jax.random.fold_in(jax.random.key(5), 0), 16)
  logits = np.asarray(vae.decode_logits(jnp.asarray(z, jnp.float32), train=False), np.float64)
  _assert_images_close(samples, 1 / (1 + np.exp(-logits)))


# ----------------------------------------------------------------------------- GAN pretraining


def test_gan_starts_from_its_pretrained_decoder_and_samples_its_prior(tmp_path):
  real = load_real('digits')
  r = next(x for x in recipes.DEFAULT_ZOO if x.name == 'gan_tconv_bn_relu_ns')
  p = recipes.replace_preset(recipes.PRESETS['tiny'], steps={'gan': 20}, gan_pretrain_steps=40,
                             chunk=20)
  vae = train.pretrain(r, p, real.train_images, 3, str(tmp_path / 'first'))['vae']
  assert os.path.isdir(tmp_path / 'first-decoder')
  # The VAE is the generator's decoder: same knobs, width and latent size, fitted prior.
  g = train.build_modules(r, p, real.image_shape, 3)['g']
  assert vae.latent_dim == g.latent_dim == p.latent_dim
  assert vae.prior.log_weights.shape == g.prior.log_weights.shape == (
      vae_family.PRIOR_COMPONENTS,)
  assert float(jnp.abs(vae.prior.means[...]).max()) > 0  # fitted, not N(0, I)
  g.start_from(vae)
  # Every latent decodes to the VAE's image (sigmoid(l) = (tanh(l / 2) + 1) / 2)...
  z = vae.sample_latent(jax.random.key(1), 64)
  want = np.asarray(jax.nn.sigmoid(vae.decode_logits(z, train=False)), np.float64)
  got = np.asarray((g(z, train=False) + 1) / 2, np.float64)
  np.testing.assert_allclose(got, want, atol=1e-5)
  # ... and the generator draws its latents from the VAE's prior.
  np.testing.assert_array_equal(g.sample_latent(jax.random.key(2), 8),
                                vae.sample_latent(jax.random.key(2), 8))
  # train() runs the pretraining first, then the adversarial steps from that generator; the
  # zoo's samples are the generator's images of latents from the fitted prior.
  mods, steps, _ = train.train(r, p, real.train_images, 3, str(tmp_path / 'gan'))
  assert steps == 20 and os.path.isdir(tmp_path / 'gan-decoder')
  gen = mods['g']
  np.testing.assert_array_equal(gen.prior.means[...], vae.prior.means[...])
  assert not np.allclose(gen.decoder.out.kernel[...], g.decoder.out.kernel[...])  # trained on
  samples = train.sample(r, p, mods, 16, 5, real.image_shape)
  z = _mixture_latents64(gen.prior, jax.random.fold_in(jax.random.key(5), 0), 16)
  logits = np.asarray(gen.decoder(jnp.asarray(z, jnp.float32), train=False), np.float64)
  _assert_images_close(samples, (np.tanh(logits) + 1) / 2)
  # Without pretraining the generator samples N(0, I), as a plain GAN.
  plain = recipes.replace_preset(p, gan_pretrain_steps=0)
  g0 = train.build_modules(r, plain, real.image_shape, 3)['g']
  assert g0.prior.log_weights.shape == (1,)
  np.testing.assert_array_equal(g0.prior.chols[...][0], np.eye(p.latent_dim))
