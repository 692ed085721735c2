"""The zoo presets: how big and how long each generative model of the zoo is trained.

    from fpjax.configs import zoo
    zoo.get_config('quick').steps.gan        # 300
    fpjax.zoo.recipes.Preset(**zoo.get_config('quick').to_dict())

Each preset has exactly the fields of `fpjax.zoo.recipes.Preset` (which `fpjax.zoo.PRESETS`
builds from these); `--config=fpjax/configs/zoo.py:tiny` loads one with the ml_collections flag.
"""
import ml_collections

from fpjax.configs import defaults

PRESETS = ('tiny', 'cross', 'quick', 'full')

# The fields a preset leaves at their usual value.
_COMMON = dict(
    batch_size=64, num_samples=200,
    chunk=100,                  # steps per checkpoint (a scan runs up to steps_per_dispatch)
    latent_dim=32,              # GAN latents
    vae_latent_dim=16,
    # A GAN's generator is first trained this many steps as the decoder of a VAE (fpjax.zoo.
    # train.pretrain_generator); 0: the adversarial training starts from a random generator.
    gan_pretrain_steps=0,
    flow_steps_per_scale=2,
    ancestral_steps=50,         # respaced DDPM sampler steps
    ddim_steps=20,
    diffusion_timesteps=1000,
    # None: unconditional DDPMs. A number w >= 0: class-conditional DDPMs (labels replaced by
    # "no class" for LABEL_DROPOUT of the training batch) sampled with classifier-free guidance
    # (1 + w) * f(x, y) - w * f(x), y drawn uniformly (fpjax.zoo.train).
    diffusion_guidance=None,
    ema_decay={},               # family -> EMA decay of the sampled net
    lr={},                      # family -> learning rate (default: defaults.ZOO_LEARNING_RATES)
    classifier_steps=800,       # the realism references (fpjax.zoo.quality.QualityReference)
    # The realism reference's SL encoder; the demo's SL space copies it when the steps agree.
    encoder_steps=defaults.QUICK_SL_STEPS,
)

_PRESETS = {
    'tiny': dict(recipes=('gan_tconv_bn_relu_ns', 'vae_tconv_bn_relu', 'flow_glow_actnorm_relu',
                          'ddpm_nearest_gn_silu_ancestral'),
                 steps={'gan': 200, 'vae': 300, 'flow': 100, 'diffusion': 200},
                 width={'gan': 8, 'vae': 8, 'flow': 16, 'diffusion': 8}, gan_pretrain_steps=100,
                 num_samples=32, chunk=100, ancestral_steps=10, ddim_steps=10,
                 diffusion_guidance=2.0, classifier_steps=300, encoder_steps=100),
    # The two extra zoos of the demo's cross-dataset table (Table 2): no DDPM, short training;
    # two GANs that differ only in architecture keep the table about design, not family. The
    # table needs the same recipes trained on two digit sets, not realistic samples: no GAN
    # pretraining (its steps and compiles would overrun the demo's budget).
    'cross': dict(recipes=('gan_tconv_bn_relu_ns', 'gan_nearest_bn_relu_hinge_sn',
                           'vae_tconv_bn_relu', 'flow_glow_actnorm_relu'),
                  steps={'gan': 300, 'vae': 300, 'flow': 100, 'diffusion': 0},
                  width={'gan': 8, 'vae': 8, 'flow': 16, 'diffusion': 8},
                  num_samples=100, chunk=100, classifier_steps=300, encoder_steps=150),
    # For 2 CPU cores with build_zoo's two worker processes, sized for the demo's 15-minute
    # budget (timings in benchmarks/README.md). EMA weights are what the GANs and DDPMs sample
    # with. A GAN's generator is first a VAE decoder for 600 steps, then trained adversarially
    # for 300: from a random generator 800 adversarial steps drew strokes, not digits (0.11-0.26
    # of real digits' recognisable rate). The DDPMs (v-prediction, class-conditional, sampled
    # with classifier-free guidance w = 3, lr 4e-3) draw digits at 2400 steps; unconditional
    # eps-prediction DDPMs reached 0.06-0.21 at 1500-3000 steps; at lr 2e-3 and w = 2
    # ddpm_bilinear_ln_relu stayed at 0.28 (lr 1e-3 was worse for every DDPM). DDIM takes 20
    # steps: with 50-100 the deterministic sampler keeps more of the network's errors (0.59 ->
    # 0.34-0.39 on one DDPM); the ancestral sampler 25 (as good as 50, at half the cost). The
    # flows need only the distance bar (0.34-0.35 at 500 steps, 300 now); the VAEs (sampling
    # their ex-post mixture prior) score 0.74-0.83 of real digits' recognisable rate at 600.
    'quick': dict(recipes=None,
                  steps={'gan': 300, 'vae': 600, 'flow': 300, 'diffusion': 2400},
                  width={'gan': 12, 'vae': 16, 'flow': 64, 'diffusion': 8},
                  gan_pretrain_steps=600, batch_size=32, num_samples=200, chunk=100,
                  flow_steps_per_scale=3, ancestral_steps=25, ddim_steps=20,
                  diffusion_guidance=3.0, ema_decay={'gan': 0.99, 'diffusion': 0.995},
                  lr={'diffusion': 4e-3}, classifier_steps=600),
    # For an accelerator: wide nets trained long (unmeasured on CPU).
    'full': dict(recipes=None,
                 steps={'gan': 10000, 'vae': 10000, 'flow': 10000, 'diffusion': 30000},
                 width={'gan': 64, 'vae': 64, 'flow': 128, 'diffusion': 64},
                 gan_pretrain_steps=2000, batch_size=128, num_samples=1000, chunk=1000,
                 flow_steps_per_scale=4, ancestral_steps=250, ddim_steps=100,
                 diffusion_guidance=2.0, ema_decay={'gan': 0.999, 'diffusion': 0.9995},
                 classifier_steps=3000, encoder_steps=2000),
}


def get_config(preset: str = 'quick') -> ml_collections.ConfigDict:
  """The preset's ConfigDict: name, recipes (None: every recipe of fpjax.zoo.recipes.DEFAULT_ZOO),
  steps and width per family, and every other field of fpjax.zoo.recipes.Preset."""
  if preset not in _PRESETS:
    raise KeyError(f'unknown zoo preset {preset!r}; expected one of {list(PRESETS)}')
  c = ml_collections.ConfigDict(dict(_COMMON, name=preset, **_PRESETS[preset]))
  if c.recipes is None:
    c.recipes = ml_collections.config_dict.placeholder(tuple)
  if c.diffusion_guidance is None:
    c.diffusion_guidance = ml_collections.config_dict.placeholder(float)
  return c
