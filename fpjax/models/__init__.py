"""Flax NNX models: the paper's ResNet attributor, MLP, small CNN, SL/SSL encoders, and the
`learned` manifold estimator's autoencoder."""
from fpjax.models.resnet import ARCHITECTURES, MLP, Linear, ResNet, SmallCNN, build
from fpjax.models.encoders import Encoder, load_encoder, train_encoder
from fpjax.models.autoencoder import (ManifoldAutoencoder, load_manifold_autoencoder,
                                      train_manifold_autoencoder)
from fpjax.models.training import NonFiniteLossError
from fpjax.models import autoencoder, checkpoints, encoders, resnet, streaming, training

__all__ = ['ARCHITECTURES', 'MLP', 'Linear', 'ResNet', 'SmallCNN', 'build', 'Encoder',
           'load_encoder', 'train_encoder', 'ManifoldAutoencoder', 'load_manifold_autoencoder',
           'train_manifold_autoencoder', 'NonFiniteLossError', 'autoencoder', 'checkpoints',
           'encoders', 'resnet', 'streaming', 'training']
