"""Flax NNX classifiers used by fpjax: the paper's CIFAR-style ResNet, an MLP, a small CNN.

Every module maps inputs to logits with ``__call__(x, train=False)`` and exposes the
penultimate vector with ``features(x, train=False)``; ``train`` only switches BatchNorm
between batch statistics and running averages, so one graph serves training and
inference (no mutable mode flag hidden in the module).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


class BasicBlock(nnx.Module):
  """conv3x3-BN-ReLU-conv3x3-BN plus a (projected) shortcut, as in the CIFAR ResNets."""

  def __init__(self, in_ch: int, out_ch: int, stride: int, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(in_ch, out_ch, (3, 3), strides=stride, use_bias=False, rngs=rngs)
    self.bn1 = nnx.BatchNorm(out_ch, momentum=0.9, rngs=rngs)
    self.conv2 = nnx.Conv(out_ch, out_ch, (3, 3), use_bias=False, rngs=rngs)
    self.bn2 = nnx.BatchNorm(out_ch, momentum=0.9, rngs=rngs)
    if stride != 1 or in_ch != out_ch:
      self.proj = nnx.Conv(in_ch, out_ch, (1, 1), strides=stride, use_bias=False, rngs=rngs)
      self.proj_bn = nnx.BatchNorm(out_ch, momentum=0.9, rngs=rngs)
    else:
      self.proj = None
      self.proj_bn = None

  def __call__(self, x, train: bool):
    ura = not train
    y = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=ura))
    y = self.bn2(self.conv2(y), use_running_average=ura)
    shortcut = x if self.proj is None else self.proj_bn(self.proj(x), use_running_average=ura)
    return jax.nn.relu(y + shortcut)


class ResNet(nnx.Module):
  """CIFAR-style ResNet (the paper's attributor: widths 16/32/64, n blocks per stage).

  Stage i > 0 halves the spatial size; global average pooling makes it work for any
  H, W (28x28 digits, 32x32 CIFAR, 8x8 sklearn digits, or C x H x W spectra laid out as
  [H, W, C]).
  """

  def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int] = (16, 32, 64),
               blocks_per_stage: int = 3, *, rngs: nnx.Rngs):
    widths = tuple(int(w) for w in widths)
    self.stem = nnx.Conv(in_channels, widths[0], (3, 3), use_bias=False, rngs=rngs)
    self.stem_bn = nnx.BatchNorm(widths[0], momentum=0.9, rngs=rngs)
    blocks = []
    in_ch = widths[0]
    for stage, width in enumerate(widths):
      for b in range(int(blocks_per_stage)):
        stride = 2 if (stage > 0 and b == 0) else 1
        blocks.append(BasicBlock(in_ch, width, stride, rngs=rngs))
        in_ch = width
    self.blocks = nnx.List(blocks)
    self.head = nnx.Linear(in_ch, num_classes, rngs=rngs)
    self.feature_dim = in_ch

  def features(self, x, train: bool = False):
    x = jax.nn.relu(self.stem_bn(self.stem(x), use_running_average=not train))
    for block in self.blocks:
      x = block(x, train)
    return jnp.mean(x, axis=(1, 2))

  def __call__(self, x, train: bool = False):
    return self.head(self.features(x, train))


class SmallCNN(nnx.Module):
  """A few stride-2 conv-BN-activation layers, global pooling, linear head.

  The CNN baselines (Marra18, Yu19, Nataraj19) use it: their original networks
  (Xception, GAN-discriminator-like nets) are far larger than needed on 28x28 inputs.
  """

  def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int] = (16, 32, 64),
               activation: str = 'relu', *, rngs: nnx.Rngs):
    if activation not in ('relu', 'leaky_relu'):
      raise ValueError(f"SmallCNN: activation must be 'relu' or 'leaky_relu', got {activation!r}")
    self.activation = activation
    convs, norms = [], []
    in_ch = in_channels
    for width in widths:
      convs.append(nnx.Conv(in_ch, int(width), (3, 3), strides=2, use_bias=False, rngs=rngs))
      norms.append(nnx.BatchNorm(int(width), momentum=0.9, rngs=rngs))
      in_ch = int(width)
    self.convs = nnx.List(convs)
    self.norms = nnx.List(norms)
    self.head = nnx.Linear(in_ch, num_classes, rngs=rngs)
    self.feature_dim = in_ch

  def features(self, x, train: bool = False):
    act = jax.nn.relu if self.activation == 'relu' else (lambda v: jax.nn.leaky_relu(v, 0.2))
    for conv, norm in zip(self.convs, self.norms):
      x = act(norm(conv(x), use_running_average=not train))
    return jnp.mean(x, axis=(1, 2))

  def __call__(self, x, train: bool = False):
    return self.head(self.features(x, train))


class MLP(nnx.Module):
  """MLP for vector inputs (artifacts in the sl/ssl encoder spaces)."""

  def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int] = (256,), *,
               rngs: nnx.Rngs):
    layers, norms = [], []
    d = int(in_features)
    for h in hidden:
      layers.append(nnx.Linear(d, int(h), rngs=rngs))
      norms.append(nnx.BatchNorm(int(h), momentum=0.9, rngs=rngs))
      d = int(h)
    self.layers = nnx.List(layers)
    self.norms = nnx.List(norms)
    self.head = nnx.Linear(d, num_classes, rngs=rngs)
    self.feature_dim = d

  def features(self, x, train: bool = False):
    x = x.reshape(x.shape[0], -1)
    for layer, norm in zip(self.layers, self.norms):
      x = jax.nn.relu(norm(layer(x), use_running_average=not train))
    return x

  def __call__(self, x, train: bool = False):
    return self.head(self.features(x, train))


class Linear(nnx.Module):
  """Multinomial logistic regression head (the linear probe's model)."""

  def __init__(self, in_features: int, num_classes: int, *, rngs: nnx.Rngs):
    # Zero init: the probe's convex objective then starts from the uniform prediction,
    # like scikit-learn, and does not depend on the seed.
    self.linear = nnx.Linear(int(in_features), num_classes, kernel_init=nnx.initializers.zeros,
                             rngs=rngs)
    self.feature_dim = int(in_features)

  def features(self, x, train: bool = False):
    return x.reshape(x.shape[0], -1)

  def __call__(self, x, train: bool = False):
    return self.linear(self.features(x))


# Name -> class; checkpoints record the name so load needs no arguments.
ARCHITECTURES = {'resnet': ResNet, 'cnn': SmallCNN, 'mlp': MLP, 'linear': Linear}


def build(arch: str, seed: int = 0, **kwargs) -> nnx.Module:
  if arch not in ARCHITECTURES:
    raise ValueError(f'unknown architecture {arch!r}; expected one of {sorted(ARCHITECTURES)}')
  return ARCHITECTURES[arch](**kwargs, rngs=nnx.Rngs(seed))
