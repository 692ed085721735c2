"""The zoo as data: one Recipe per generative model, and presets that size the training.

A recipe fixes the architecture knobs (its tags); a preset fixes how long and how wide models are
trained. Recipes that differ only in `seed` are different models (the paper's finding that
fingerprints separate even such pairs is checked with them). A recipe may share the trained
network of another recipe (`shares_training_with`) when they differ only in the sampler.
"""
from __future__ import annotations

import dataclasses

from fpjax.configs import defaults
from fpjax.configs import zoo as zoo_configs

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
  # A GAN's generator is first trained this many steps as the decoder of a VAE (fpjax.zoo.
  # families.gan.pretraining); 0: the adversarial training starts from a random generator.
  gan_pretrain_steps: int = 0
  flow_steps_per_scale: int = 2
  ancestral_steps: int = 50         # respaced DDPM sampler steps
  ddim_steps: int = 20
  diffusion_timesteps: int = 1000
  # None: unconditional DDPMs. A number w >= 0: class-conditional DDPMs (labels replaced by
  # "no class" for LABEL_DROPOUT of the training batch) sampled with classifier-free guidance
  # (1 + w) * f(x, y) - w * f(x), y drawn uniformly (fpjax.zoo.families.diffusion).
  diffusion_guidance: float | None = None
  # family -> EMA decay of the sampled net's parameters (0 or absent: no EMA)
  ema_decay: dict = dataclasses.field(default_factory=dict)
  lr: dict = dataclasses.field(default_factory=dict)         # family -> learning rate override
  classifier_steps: int = 800       # the realism references (fpjax.zoo.quality.QualityReference)
  encoder_steps: int = defaults.QUICK_SL_STEPS


# The presets' values and the reasons for them: fpjax/configs/zoo.py.
PRESETS = {name: Preset(**zoo_configs.get_config(name).to_dict()) for name in zoo_configs.PRESETS}


# A preset is a Preset or an ml_collections.ConfigDict with Preset's field names (fpjax/configs):
# the functions below read and copy either by attribute.


def class_conditional(preset) -> bool:
  """Whether the preset's DDPMs are class-conditional (sampled with classifier-free guidance)."""
  return preset.diffusion_guidance is not None


def training_steps(preset, family: str) -> int:
  """Optimizer steps of one network of the family; a GAN's include its generator's pretraining."""
  return preset.steps[family] + (preset.gan_pretrain_steps if family == 'gan' else 0)


def replace_preset(preset, **changes):
  """A copy of the preset with some fields changed (dataclasses.replace for either kind)."""
  if dataclasses.is_dataclass(preset):
    return dataclasses.replace(preset, **changes)
  new = preset.copy_and_resolve_references()
  for name, value in changes.items():
    setattr(new, name, value)
  return new


def preset_dict(preset) -> dict:
  """The preset's fields as plain data (what a zoo's recipe hash is computed from)."""
  return dataclasses.asdict(preset) if dataclasses.is_dataclass(preset) else preset.to_dict()


def recipes_for(preset: Preset) -> list[Recipe]:
  by_name = {r.name: r for r in DEFAULT_ZOO}
  names = preset.recipes or tuple(by_name)
  out = [by_name[n] for n in names]
  for r in out:
    if r.shares_training_with and r.shares_training_with not in names:
      raise ValueError(f'recipe {r.name} shares training with {r.shares_training_with}, '
                       f'which preset {preset.name} does not build.')
  return sorted(out, key=lambda r: r.name)
