"""The zoo's family registry (fpjax.zoo.families), its typed training state and its checkpoint
layout, and the trained weights and samples of each family pinned to the numbers of the code
before the registry (commit 4e410a8): the demo's zoo must not change for the same seed."""
import os

from flax import nnx
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from fpjax.data import load_real
from fpjax.configs import zoo as zoo_configs
from fpjax.zoo import build as zoo_build
from fpjax.zoo import families, recipes, train

TINY = recipes.PRESETS['tiny']
# What tests/test_zoo_families.py trains: 10 steps in chunks of 5 (a resume at step 5), GAN
# decoder pretraining, EMA for the GAN and the DDPM, class-conditional DDPM sampling.
SHORT = recipes.replace_preset(
    TINY, steps={'gan': 10, 'vae': 10, 'flow': 10, 'diffusion': 10}, gan_pretrain_steps=10,
    chunk=5, ema_decay={'gan': 0.9, 'diffusion': 0.9}, ancestral_steps=5, ddim_steps=4)


def _recipe(name):
  return next(r for r in recipes.DEFAULT_ZOO if r.name == name)


def test_every_family_of_the_recipe_table_is_registered():
  assert set(families.REGISTRY) == set(recipes.FAMILIES)
  for name, family in families.REGISTRY.items():
    assert families.get(name) is family and family.name == name
  with pytest.raises(ValueError):
    families.get('autoregressive')


@pytest.mark.parametrize('name', sorted(recipes.FAMILIES))
def test_a_family_builds_its_optimised_and_sampled_modules(name):
  r = next(r for r in recipes.DEFAULT_ZOO if r.family == name)
  family = families.get(name)
  modules = train.build_modules(r, TINY, (8, 8, 1), 0, num_classes=10)
  txs = family.optimizers(r, TINY, train.learning_rate(r, TINY))
  assert set(txs) == set(modules) and family.sampled in modules
  _, _, state = train.init_state(r, TINY, modules)
  assert set(state.params) == set(state.rest) == set(state.opt) == set(modules)
  has_ema = bool(TINY.ema_decay.get(name, 0.0))
  assert (state.ema is not None) == has_ema


def test_the_learning_rate_is_the_familys_unless_the_preset_overrides_it():
  quick = recipes.PRESETS['quick']
  assert train.learning_rate(_recipe('ddpm_nearest_gn_silu_ancestral'), quick) == 4e-3
  assert train.learning_rate(_recipe('vae_tconv_bn_relu'), quick) == 2e-3
  assert train.learning_rate(_recipe('gan_tconv_bn_relu_ns'), quick) == 5e-4


@pytest.mark.parametrize('name', ['tiny', 'quick'])
def test_a_configdict_preset_reads_as_the_preset_dataclass(name):
  # fpjax/configs/zoo.py's ConfigDicts have the Preset's field names: the zoo reads either.
  config, preset = zoo_configs.get_config(name), recipes.PRESETS[name]
  assert recipes.preset_dict(config) == recipes.preset_dict(preset)
  assert zoo_build._config(config, 'digits', 0, 8, (8, 8, 1)) == zoo_build._config(
      preset, 'digits', 0, 8, (8, 8, 1))
  for family in recipes.FAMILIES:
    assert recipes.training_steps(config, family) == recipes.training_steps(preset, family)
  assert recipes.class_conditional(config) == recipes.class_conditional(preset)
  gan = _recipe('gan_tconv_bn_relu_ns')
  assert train.learning_rate(gan, config) == train.learning_rate(gan, preset)
  (r1, p1), (r2, p2) = families.gan.pretraining(gan, config), families.gan.pretraining(gan, preset)
  assert r1 == r2 and recipes.preset_dict(p1) == recipes.preset_dict(p2)
  assert config.steps.gan == preset.steps['gan']  # the copy changed, not the original
  for r in (gan, _recipe('ddpm_nearest_gn_silu_ancestral')):
    shapes = [jax.eval_shape(lambda p=p: train.init_state(
        r, p, train.build_modules(r, p, (8, 8, 1), 0, num_classes=10))[2])
              for p in (config, preset)]
    assert jax.tree.structure(shapes[0]) == jax.tree.structure(shapes[1])
    assert jax.tree.leaves(shapes[0]) == jax.tree.leaves(shapes[1])


def test_state_leaves_are_in_the_order_of_the_former_dict_state():
  # Checkpoints store the leaves by position: the typed state keeps the order of the nested
  # dict {'params', 'rest', 'opt', 'ema'} it replaced (jax flattens a dict by sorted keys).
  r = _recipe('gan_tconv_bn_relu_ns')
  p = recipes.replace_preset(TINY, ema_decay={'gan': 0.9})
  _, _, state = train.init_state(r, p, train.build_modules(r, p, (8, 8, 1), 0))
  old = {'params': state.params, 'rest': state.rest, 'opt': state.opt, 'ema': state.ema}
  new, old = jax.tree.leaves(state), jax.tree.leaves(old)
  assert len(new) == len(old) and all(a is b for a, b in zip(new, old))


def test_a_checkpoint_of_the_former_dict_state_resumes(tmp_path):
  # Steps 0-5 written as the code before the registry wrote them (the dict state's leaves,
  # numbered), then resumed by train(): the same weights as a run never interrupted.
  real = load_real('digits')
  r = _recipe('ddpm_nearest_gn_silu_ancestral')
  p = recipes.replace_preset(SHORT, steps={'diffusion': 10}, chunk=5)
  full, _, loss_full = train.train(r, p, real.train_images, 3, str(tmp_path / 'full'),
                                   real_labels=real.train_labels)
  modules = train.build_modules(r, p, real.image_shape, 3, num_classes=10)
  gdefs, txs, state = train.init_state(r, p, modules)
  data = (jax.numpy.asarray(real.train_images, np.float32) / 255.0,
          jax.numpy.asarray(real.train_labels, np.int32))
  loop = train.train_loop(r, p, gdefs, txs)
  state, losses = loop.run(state, (np.int32(i) for i in range(5)), jax.random.key(3), data)
  old = {'params': state.params, 'rest': state.rest, 'opt': state.opt, 'ema': state.ema}
  with ocp.CheckpointManager(os.path.abspath(tmp_path / 'old')) as mngr:
    mngr.save(5, args=ocp.args.Composite(
        state=ocp.args.StandardSave({str(i): l for i, l in enumerate(jax.tree.leaves(old))}),
        meta=ocp.args.JsonSave({'step': 5,
                                'chunk_losses': [float(np.mean(np.asarray(losses)))]})))
    mngr.wait_until_finished()
  resumed, steps, loss = train.train(r, p, real.train_images, 3, str(tmp_path / 'old'),
                                     real_labels=real.train_labels)
  assert steps == 10 and loss == loss_full
  for (path, a), (_, b) in zip(nnx.to_flat_state(nnx.state(full['unet'])),
                               nnx.to_flat_state(nnx.state(resumed['unet']))):
    np.testing.assert_array_equal(np.asarray(a[...]), np.asarray(b[...]), err_msg=str(path))


# Numbers of the code at 4e410a8 (before the registry) on the CPU: the last chunk's loss, the
# sum of |w| and of w^2 over every float of the trained modules, and the sum of 8 samples' pixels
# (seed 3). A change to how any family trains or samples (keys, batches, losses, EMA, prior)
# moves them by far more than the float rounding of another machine.
PINNED = {
    'gan_tconv_bn_relu_ns': (0.5647925138473511, 1480.580285984457, 522.483793987558, 66003),
    'vae_tconv_bn_relu': (44.34291458129883, 1139.9834592197876, 402.5613183679207, 64173),
    'flow_glow_actnorm_relu': (7.061376094818115, 835.8347543705702, 199.35036349409518, 33010),
    'ddpm_nearest_gn_silu_ancestral': (0.16068728268146515, 2317.790975589402,
                                       432.1724676928355, 46843),
}


@pytest.mark.skipif(jax.default_backend() != 'cpu',
                    reason='CPU numbers: GPUs and TPUs multiply float32 at lower precision')
@pytest.mark.parametrize('name', sorted(PINNED))
def test_training_and_sampling_give_the_numbers_of_the_code_before_the_registry(tmp_path, name):
  real = load_real('digits')
  r = _recipe(name)
  modules, steps, loss = train.train(r, SHORT, real.train_images, 7, str(tmp_path),
                                     real_labels=real.train_labels)
  samples = train.sample(r, SHORT, modules, 8, 3, real.image_shape)
  floats = [np.asarray(v[...], np.float64) for m in modules.values()
            for _, v in nnx.to_flat_state(nnx.state(m))
            if np.issubdtype(np.asarray(v[...]).dtype, np.floating)]
  want_loss, want_abs, want_sq, want_pixels = PINNED[name]
  assert steps == 10
  assert loss == pytest.approx(want_loss, rel=1e-4)
  assert sum(np.abs(f).sum() for f in floats) == pytest.approx(want_abs, rel=1e-5)
  assert sum(np.square(f).sum() for f in floats) == pytest.approx(want_sq, rel=1e-5)
  assert samples.shape == (8, 8, 8, 1) and abs(int(samples.astype(np.int64).sum())
                                                - want_pixels) <= 64
