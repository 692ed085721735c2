"""Training (optax, orbax checkpoints with resume) and seeded sampling of any zoo family.

What differs between families (networks, optimizer, training step, sampler, the hooks before
and after training) lives in fpjax.zoo.families, one module per family, looked up by the
recipe's family; this module runs them.

Training is a pure function of (recipe, preset, real images, seed): the minibatch and noise of
step s come from `fold_in(key, s)` (the batch is drawn on the device), so a run interrupted and
resumed from the latest orbax checkpoint reaches bit-identical weights and losses. A checkpoint
is written after every `preset.chunk` steps. Within a chunk, steps run
`training.steps_per_dispatch()` per call from Python: one jitted `lax.scan` over that many
steps on GPU/TPU, a Python loop over one jitted step on the CPU (where it is faster; see
benchmarks/training_loops.py). Both give the same weights up to float rounding. Sampling
follows the same rule: a DDPM/DDIM sampler's denoising steps are one scan on GPU/TPU.

A preset is a fpjax.zoo.recipes.Preset or a ConfigDict with its field names (read by attribute).
"""
from __future__ import annotations

import os
from typing import Callable

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from fpjax.configs import defaults
from fpjax.models import training
from fpjax.zoo import families
from fpjax.zoo.families import TrainState
from fpjax.zoo.recipes import Preset, Recipe

LEARNING_RATES = defaults.ZOO_LEARNING_RATES


def learning_rate(recipe: Recipe, preset: Preset) -> float:
  """The family's learning rate (LEARNING_RATES) unless the preset's `lr` overrides it."""
  return preset.lr.get(recipe.family, LEARNING_RATES[recipe.family])


def build_modules(recipe: Recipe, preset: Preset, image_shape, seed: int,
                  num_classes: int = 0) -> dict:
  """The recipe's freshly initialised modules; num_classes: the real labels' (a class-conditional
  DDPM's embedding, when preset.diffusion_guidance is set)."""
  family = families.get(recipe.family)
  return family.build(recipe, preset, image_shape, nnx.Rngs(params=seed), num_classes)


def init_state(recipe: Recipe, preset: Preset, modules: dict) -> tuple[dict, dict, TrainState]:
  """(graphdefs, optimizers, initial TrainState) of the recipe's built modules; the state's
  `ema` is a copy of the sampled module's parameters when the preset's ema_decay for the family
  is > 0, else None."""
  family = families.get(recipe.family)
  txs = family.optimizers(recipe, preset, learning_rate(recipe, preset))
  gdefs, params, rest = {}, {}, {}
  for k, m in modules.items():
    gdefs[k], params[k], rest[k] = families.base.split(m)
  ema = None
  if preset.ema_decay.get(recipe.family, 0.0):
    ema = jax.tree.map(jnp.copy, params[family.sampled])
  return gdefs, txs, TrainState(ema=ema, opt={k: txs[k].init(params[k]) for k in modules},
                                params=params, rest=rest)


def train_loop(recipe: Recipe, preset: Preset, gdefs: dict, txs: dict,
               per_dispatch: int | None = None) -> training.StepLoop:
  """The loop train() runs: loop.run(state, step indices, key, data); loop.scan is its jitted
  lax.scan (the GPU/TPU path). Step s of training uses fold_in(key, s) (drawn on the device).

  With the preset's ema_decay > 0 for the family it also keeps an exponential moving average of
  the sampled module's parameters, decay min(ema_decay, (1 + s) / (10 + s)) at step s (the
  warm-up lets a short training forget its random initialisation).
  """
  family = families.get(recipe.family)
  step = family.make_step(recipe, preset, gdefs, txs)
  ema_decay = preset.ema_decay.get(recipe.family, 0.0)

  def run(state, i, key, data):
    state, loss = step(state, jax.random.fold_in(key, i), data)
    if ema_decay:
      d = jnp.minimum(ema_decay, (1.0 + i) / (10.0 + i))
      state = state.replace(ema=jax.tree.map(lambda e, p: d * e + (1 - d) * p, state.ema,
                                             state.params[family.sampled]))
    return state, loss
  return training.StepLoop(run, per_dispatch=per_dispatch)


def pretrain(recipe: Recipe, preset: Preset, real_images: np.ndarray, seed: int, ckpt_dir: str,
             progress=None) -> dict | None:
  """The modules of the training the recipe's family runs first (a GAN's decoder VAE:
  families.gan.pretraining), trained or resumed in ckpt_dir + '-decoder'; None if it has none."""
  family = families.get(recipe.family)
  plan = family.pretraining(recipe, preset) if family.pretraining else None
  if plan is None:
    return None
  modules, _, _ = train(*plan, real_images, seed, ckpt_dir + '-decoder', progress)
  return modules


def _checkpoint_manager(directory: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False))


def _restore(mngr, state: TrainState) -> tuple[TrainState, int, list]:
  """(state, step, chunk losses) of the latest checkpoint, or the given state at step 0.

  A checkpoint holds the state's leaves by position ('0', '1', ...; TrainState's field order)
  and {'step', 'chunk_losses'}.
  """
  latest = mngr.latest_step()
  if latest is None:
    return state, 0, []
  leaves, treedef = jax.tree.flatten(state)
  restored = mngr.restore(latest, args=ocp.args.Composite(
      state=ocp.args.StandardRestore({str(i): l for i, l in enumerate(leaves)}),
      meta=ocp.args.JsonRestore()))
  state = jax.tree.unflatten(treedef, [jnp.asarray(restored['state'][str(i)])
                                       for i in range(len(leaves))])
  return state, int(restored['meta']['step']), list(restored['meta']['chunk_losses'])


def _save(mngr, step: int, state: TrainState, chunk_losses: list) -> None:
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave({str(i): l for i, l in enumerate(jax.tree.leaves(state))}),
      meta=ocp.args.JsonSave({'step': step, 'chunk_losses': chunk_losses})))


def _prepared_modules(recipe, preset, real_images, seed, ckpt_dir, progress, real_labels):
  """The modules training starts from (pretrained, data-initialised) and the training data."""
  family = families.get(recipe.family)
  conditional = family.needs_labels(preset)
  if conditional and real_labels is None:
    raise ValueError(f'recipe {recipe.name}: preset {preset.name} trains class-conditional '
                     'DDPMs; give the real labels.')
  num_classes = int(np.max(real_labels)) + 1 if conditional else 0
  modules = build_modules(recipe, preset, real_images.shape[1:], seed, num_classes)
  pretrained = pretrain(recipe, preset, real_images, seed, ckpt_dir, progress)
  if pretrained is not None:
    family.start_from(modules, pretrained)
  if family.init_from_data:
    family.init_from_data(recipe, modules, real_images, seed)
  data = jnp.asarray(real_images, jnp.float32) / 255.0
  if conditional:
    data = (data, jnp.asarray(real_labels, jnp.int32))
  return modules, data


def train(recipe: Recipe, preset: Preset, real_images: np.ndarray, seed: int, ckpt_dir: str,
          progress: Callable[[int], None] | None = None,
          per_dispatch: int | None = None,
          real_labels: np.ndarray | None = None) -> tuple[dict, int, float]:
  """Trains (or resumes) one recipe; returns (modules, steps, final_loss).

  The sampled module (Family.sampled) carries the EMA of its parameters when the preset's
  ema_decay for the family is > 0.

  per_dispatch: steps per call from Python (default training.steps_per_dispatch(): 1 on the
  CPU, a scan of many on GPU/TPU); any value gives the same result up to float rounding.
  real_labels: int class labels of real_images, required by a class-conditional DDPM
  (preset.diffusion_guidance set); the classes are 0 .. max label.
  progress(k) is called after each checkpoint, k the steps it adds.

  final_loss is the mean over the last chunk of the family's objective (GANs: generator loss;
  VAEs: negative beta-ELBO in nats per image; flows: bits per dimension; DDPM: Min-SNR-weighted
  eps or v MSE, families.diffusion.diffusion_target). A VAE's sampling prior is then fitted to
  its aggregate posterior (families.vae.fit_ex_post_prior).
  """
  family = families.get(recipe.family)
  total = preset.steps[recipe.family]
  chunk = min(preset.chunk, total)
  if total % chunk:
    raise ValueError(f'preset {preset.name}: steps {total} not a multiple of chunk {chunk}.')
  modules, data = _prepared_modules(recipe, preset, real_images, seed, ckpt_dir, progress,
                                    real_labels)
  gdefs, txs, state = init_state(recipe, preset, modules)
  mngr = _checkpoint_manager(ckpt_dir)
  state, start, chunk_losses = _restore(mngr, state)
  if start:
    logging.info('zoo: %s resumes from step %d', recipe.training_name, start)
  loop = train_loop(recipe, preset, gdefs, txs, per_dispatch)
  key = jax.random.key(seed)
  for s in range(start, total, chunk):
    state, losses = loop.run(state, (np.int32(i) for i in range(s, s + chunk)), key, data)
    loss = np.mean(np.asarray(losses), axis=0)
    if not np.all(np.isfinite(loss)):
      raise FloatingPointError(f'zoo: {recipe.training_name} has non-finite loss {loss} at step '
                               f'{s + chunk}.')
    chunk_losses.append(float(loss[-1]))
    _save(mngr, s + chunk, state, chunk_losses)
    if progress:
      progress(chunk)
  mngr.wait_until_finished()
  mngr.close()
  for k in modules:
    sampled_ema = state.ema is not None and k == family.sampled
    nnx.update(modules[k], state.ema if sampled_ema else state.params[k], state.rest[k])
  if family.after_training:
    family.after_training(modules, real_images, seed)
  return modules, total, chunk_losses[-1]


def sample(recipe: Recipe, preset: Preset, modules: dict, num_samples: int, seed: int,
           image_shape, batch_size: int = 100, per_dispatch: int | None = None) -> np.ndarray:
  """Draws num_samples images (uint8 [N,H,W,C]); batch b uses fold_in(key(seed), b).

  per_dispatch: denoising steps per call from Python for DDPM/DDIM (as in train).
  """
  draw = families.get(recipe.family).make_sampler(recipe, preset, modules, image_shape,
                                                  per_dispatch)
  key = jax.random.key(seed)
  x = np.concatenate([np.asarray(draw(jax.random.fold_in(key, b), min(batch_size,
                                                                      num_samples - start)))
                      for b, start in enumerate(range(0, num_samples, batch_size))])
  if not np.all(np.isfinite(x)):
    raise FloatingPointError(f'zoo: {recipe.name} produced non-finite samples.')
  return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
