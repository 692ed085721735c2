"""Flax NNX models: the paper's ResNet attributor, MLP, small CNN, and SL/SSL encoders."""
from fpjax.models.resnet import ARCHITECTURES, MLP, Linear, ResNet, SmallCNN, build
from fpjax.models.encoders import Encoder, load_encoder, train_encoder
from fpjax.models.training import NonFiniteLossError
from fpjax.models import encoders, resnet, training

__all__ = ['ARCHITECTURES', 'MLP', 'Linear', 'ResNet', 'SmallCNN', 'build', 'Encoder',
           'load_encoder', 'train_encoder', 'NonFiniteLossError', 'encoders', 'resnet', 'training']
