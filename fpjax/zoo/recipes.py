"""The zoo as data: one Recipe per generative model, and presets that size the training.

A recipe fixes the architecture knobs (its tags); a preset fixes how long and how wide models are
trained. Recipes that differ only in `seed` are different models (the paper's finding that
fingerprints separate even such pairs is checked with them). A recipe may share the trained
network of another recipe (`shares_training_with`) when they differ only in the sampler.
"""
from __future__ import annotations

import dataclasses

FAMILIES = ('gan', 'vae', 'flow', 'diffusion')
GAN_LOSSES = ('non_saturating', 'hinge', 'least_squares', 'wgan_gp')
SAMPLERS = ('ancestral', 'ddim')
NA = 'n/a'


@dataclasses.dataclass(frozen=True)
class Recipe:
  name: str
  family: str
  upsampling: str = NA
  normalization: str = NA
  nonlinearity: str = NA
  loss: str = NA
  sampler: str = NA
  seed: int = 0                     # added to the build seed
  disc_normalization: str = 'none'  # GAN discriminator: 'spectral' | 'none'
  beta: float = 1.0                 # VAE beta-ELBO weight on the KL term
  permutation: str = 'invconv'      # flow: 'invconv' (Glow) | 'reverse' (RealNVP)
  temperature: float = 0.7          # flow sampling temperature (Glow's 0.7)
  shares_training_with: str | None = None

  @property
  def tags(self) -> dict[str, str]:
    return {'family': self.family, 'upsampling': self.upsampling,
            'normalization': self.normalization, 'nonlinearity': self.nonlinearity,
            'loss': self.loss, 'sampler': self.sampler}

  @property
  def training_name(self) -> str:
    return self.shares_training_with or self.name


R = Recipe
DEFAULT_ZOO = (
    # GANs: DCGAN-style generator, two-layer convolutional discriminator.
    R('gan_tconv_bn_relu_ns', 'gan', 'transposed', 'batch', 'relu', 'non_saturating'),
    R('gan_tconv_bn_relu_ns_seed1', 'gan', 'transposed', 'batch', 'relu', 'non_saturating', seed=1),
    R('gan_nearest_bn_relu_hinge_sn', 'gan', 'nearest', 'batch', 'relu', 'hinge',
      disc_normalization='spectral'),
    R('gan_bilinear_ln_lrelu_lsgan', 'gan', 'bilinear', 'layer', 'leaky_relu', 'least_squares'),
    R('gan_pshuffle_none_silu_wgangp', 'gan', 'pixel_shuffle', 'none', 'silu', 'wgan_gp'),
    R('gan_tconv_gn_lrelu_hinge_sn', 'gan', 'transposed', 'group', 'leaky_relu', 'hinge',
      disc_normalization='spectral'),
    # VAEs.
    R('vae_tconv_bn_relu', 'vae', 'transposed', 'batch', 'relu', 'elbo'),
    R('vae_nearest_gn_silu', 'vae', 'nearest', 'group', 'silu', 'elbo'),
    R('vae_pshuffle_none_lrelu_beta2', 'vae', 'pixel_shuffle', 'none', 'leaky_relu', 'beta_elbo',
      beta=2.0),
    # Normalizing flows (exact likelihood, dequantised).
    R('flow_glow_actnorm_relu', 'flow', NA, 'actnorm', 'relu', 'likelihood'),
    R('flow_realnvp_none_silu', 'flow', NA, 'none', 'silu', 'likelihood', permutation='reverse'),
    # Diffusion (DDPM, v-prediction; class-conditional with classifier-free guidance when the
    # preset sets diffusion_guidance).
    R('ddpm_nearest_gn_silu_ancestral', 'diffusion', 'nearest', 'group', 'silu', 'v', 'ancestral'),
    R('ddpm_nearest_gn_silu_ddim', 'diffusion', 'nearest', 'group', 'silu', 'v', 'ddim',
      shares_training_with='ddpm_nearest_gn_silu_ancestral'),
    R('ddpm_bilinear_ln_relu_ddim', 'diffusion', 'bilinear', 'layer', 'relu', 'v', 'ddim'),
    R('ddpm_tconv_none_silu_ancestral', 'diffusion', 'transposed', 'none', 'silu', 'v',
      'ancestral'),
)


@dataclasses.dataclass(frozen=True)
class Preset:
  """How big and how long: per-family steps and widths, batch size, samples per model."""
  name: str
  recipes: tuple[str, ...] | None   # None: the whole DEFAULT_ZOO
  steps: dict
  width: dict
  batch_size: int = 64
  num_samples: int = 200
  chunk: int = 100                  # steps per checkpoint (a scan runs up to steps_per_dispatch)
  latent_dim: int = 32               # GAN latents
  vae_latent_dim: int = 16
  # A GAN's generator is first trained this many steps as the decoder of a VAE (fpjax.zoo.train.
  # pretrain_generator); 0: the adversarial training starts from a random generator.
  gan_pretrain_steps: int = 0
  flow_steps_per_scale: int = 2
  ancestral_steps: int = 50         # respaced DDPM sampler steps
  ddim_steps: int = 20
  diffusion_timesteps: int = 1000
  # None: unconditional DDPMs. A number w >= 0: class-conditional DDPMs (labels replaced by
  # "no class" for LABEL_DROPOUT of the training batch) sampled with classifier-free guidance
  # (1 + w) * f(x, y) - w * f(x), y drawn uniformly (fpjax.zoo.train).
  diffusion_guidance: float | None = None
  ema_decay: dict = dataclasses.field(default_factory=dict)  # family -> EMA decay of the sampled net
  lr: dict = dataclasses.field(default_factory=dict)         # family -> learning rate override
  classifier_steps: int = 800       # the realism references (fpjax.zoo.quality.QualityReference)
  encoder_steps: int = 250

  @property
  def class_conditional_diffusion(self) -> bool:
    return self.diffusion_guidance is not None

  def training_steps(self, family: str) -> int:
    """Optimizer steps of one network of the family; a GAN's include its generator's pretraining."""
    return self.steps[family] + (self.gan_pretrain_steps if family == 'gan' else 0)


PRESETS = {
    'tiny': Preset('tiny', recipes=('gan_tconv_bn_relu_ns', 'vae_tconv_bn_relu',
                                    'flow_glow_actnorm_relu', 'ddpm_nearest_gn_silu_ancestral'),
                   steps={'gan': 200, 'vae': 300, 'flow': 100, 'diffusion': 200},
                   width={'gan': 8, 'vae': 8, 'flow': 16, 'diffusion': 8}, gan_pretrain_steps=100,
                   num_samples=32, chunk=100, ancestral_steps=10, ddim_steps=10,
                   diffusion_guidance=2.0, classifier_steps=300, encoder_steps=100),
    # The two extra zoos of the demo's cross-dataset table (Table 2): no DDPM, short training;
    # two GANs that differ only in architecture keep the table about design, not family. The
    # table needs the same recipes trained on two digit sets, not realistic samples: no GAN
    # pretraining (its steps and compiles would overrun the demo's budget).
    'cross': Preset('cross', recipes=('gan_tconv_bn_relu_ns', 'gan_nearest_bn_relu_hinge_sn',
                                      'vae_tconv_bn_relu', 'flow_glow_actnorm_relu'),
                    steps={'gan': 300, 'vae': 300, 'flow': 100, 'diffusion': 0},
                    width={'gan': 8, 'vae': 8, 'flow': 16, 'diffusion': 8},
                    num_samples=100, chunk=100, classifier_steps=300, encoder_steps=150),
    # For 2 CPU cores with build_zoo's two worker processes, sized for the demo's 15-minute
    # budget (see the README for the timings). EMA weights are what the GANs and DDPMs sample
    # with. A GAN's generator is first a VAE decoder for 600 steps, then trained adversarially
    # for 300: from a random generator 800 adversarial steps drew strokes, not digits (0.11-0.26
    # of real digits' recognisable rate). The DDPMs (v-prediction, class-conditional, sampled
    # with classifier-free guidance w = 3, lr 4e-3) draw digits at 2400 steps; unconditional
    # eps-prediction DDPMs reached 0.06-0.21 at 1500-3000 steps; at lr 2e-3 and w = 2
    # ddpm_bilinear_ln_relu stayed at 0.28 (lr 1e-3 was worse for every DDPM). DDIM takes 20
    # steps: with 50-100 the deterministic sampler keeps more of the network's errors (0.59 ->
    # 0.34-0.39 on one DDPM); the ancestral sampler 25 (as good as 50, at half the cost). The flows need only
    # the distance bar (0.34-0.35 at 500 steps, 300 now); the VAEs (sampling their ex-post mixture
    # prior) score 0.74-0.83 of real digits' recognisable rate at 600 steps.
    'quick': Preset('quick', recipes=None,
                    steps={'gan': 300, 'vae': 600, 'flow': 300, 'diffusion': 2400},
                    width={'gan': 12, 'vae': 16, 'flow': 64, 'diffusion': 8}, gan_pretrain_steps=600,
                    batch_size=32, num_samples=200, chunk=100, flow_steps_per_scale=3,
                    ancestral_steps=25, ddim_steps=20, diffusion_guidance=3.0,
                    ema_decay={'gan': 0.99, 'diffusion': 0.995}, lr={'diffusion': 4e-3},
                    classifier_steps=600),
    # For an accelerator: wide nets trained long (unmeasured on CPU; see the README).
    'full': Preset('full', recipes=None,
                   steps={'gan': 10000, 'vae': 10000, 'flow': 10000, 'diffusion': 30000},
                   width={'gan': 64, 'vae': 64, 'flow': 128, 'diffusion': 64},
                   gan_pretrain_steps=2000,
                   batch_size=128, num_samples=1000, chunk=1000, flow_steps_per_scale=4,
                   ancestral_steps=250, ddim_steps=100, diffusion_guidance=2.0,
                   ema_decay={'gan': 0.999, 'diffusion': 0.9995},
                   classifier_steps=3000, encoder_steps=2000),
}


def recipes_for(preset: Preset) -> list[Recipe]:
  by_name = {r.name: r for r in DEFAULT_ZOO}
  names = preset.recipes or tuple(by_name)
  out = [by_name[n] for n in names]
  for r in out:
    if r.shares_training_with and r.shares_training_with not in names:
      raise ValueError(f'recipe {r.name} shares training with {r.shares_training_with}, '
                       f'which preset {preset.name} does not build.')
  return sorted(out, key=lambda r: r.name)
