"""What a zoo family is (`Family`: its networks, optimizer, training step and sampler) and the
typed training state (`TrainState`) every family's step carries.

A family's step is step(state, key, data) -> (state, losses): a pure function (jitted, or
scanned on GPU/TPU by fpjax.models.training.StepLoop) of a TrainState whose modules are split
nnx state (`split`). data is float32 images [N,H,W,C] in [0, 1], or (images, int labels [N])
for a family that trains on labels (Family.needs_labels).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from flax import nnx
from flax import struct
import jax
import optax


@struct.dataclass
class TrainState:
  """Per module name: its parameters, its other nnx state (batch statistics, spectral-norm
  vectors, fitted priors) and its optimizer state; `ema`: the moving average of the sampled
  module's parameters (None without EMA).

  The fields are in the order of the former nested-dict state's sorted keys (ema, opt, params,
  rest): a checkpoint stores the state's flattened leaves in this order, so zoo checkpoints
  written before this class load unchanged (tests/test_zoo_families.py checks the order).
  """
  ema: Any
  opt: dict
  params: dict
  rest: dict


def split(module: nnx.Module):
  """(graphdef, parameters, other state) of a module."""
  return nnx.split(module, nnx.Param, ...)


def minibatch(key, data, batch_size: int):
  """A batch of batch_size rows drawn with replacement on the device (data: array or tuple)."""
  idx = jax.random.randint(key, (batch_size,), 0, jax.tree.leaves(data)[0].shape[0])
  return jax.tree.map(lambda a: a[idx], data)


def apply_grads(state: TrainState, txs: dict, name: str, grads) -> TrainState:
  """The state after one optimizer update of module `name`."""
  updates, opt = txs[name].update(grads, state.opt[name], state.params[name])
  return state.replace(params={**state.params, name: optax.apply_updates(state.params[name],
                                                                         updates)},
                       opt={**state.opt, name: opt})


def with_rest(state: TrainState, name: str, rest) -> TrainState:
  """The state with module `name`'s non-parameter state replaced (after a training call)."""
  return state.replace(rest={**state.rest, name: rest})


def no_labels(preset) -> bool:
  del preset
  return False


@dataclasses.dataclass(frozen=True)
class Family:
  """One family of generative models: how to build, optimise, train and sample it.

  build(recipe, preset, image_shape, rngs, num_classes) -> {module name: nnx module};
  optimizers(recipe, preset, lr) -> {module name: optax transformation} (lr: the family's
  learning rate, fpjax.zoo.train.LEARNING_RATES unless the preset overrides it);
  make_step(recipe, preset, graphdefs, optimizers) -> step (module docstring);
  make_sampler(recipe, preset, modules, image_shape, per_dispatch) -> draw(key, n): float
  images [n,H,W,C] in [0, 1];
  sampled: the module sampled with (it carries the EMA of its parameters when the preset asks);
  needs_labels(preset): whether training takes the real labels;
  pretraining(recipe, preset) -> (recipe, preset) of a training to run first, or None;
  start_from(modules, pretrained modules): takes over what the pretraining trained;
  init_from_data(recipe, modules, real uint8 images, seed): a data-dependent initialisation;
  after_training(modules, real uint8 images, seed): e.g. a prior fitted to the trained model.
  """
  name: str
  sampled: str
  build: Callable[..., dict]
  optimizers: Callable[..., dict]
  make_step: Callable[..., Callable]
  make_sampler: Callable[..., Callable]
  needs_labels: Callable[[Any], bool] = no_labels
  pretraining: Callable | None = None
  start_from: Callable | None = None
  init_from_data: Callable | None = None
  after_training: Callable | None = None
