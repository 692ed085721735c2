"""Marra18: a CNN trained on the images.

Simplification: the paper's Marra18 entry is an Xception net; on 28x28 images fpjax uses
its SmallCNN (three stride-2 conv-BN-ReLU layers, widths 16/32/64), Adam.
"""
from fpjax.baselines._common import CNNBaseline


class Marra18(CNNBaseline):
  QUICK = dict(arch='cnn', widths=(16, 32, 64), optimizer='adam', lr=1e-3, epochs=8,
               batch_size=64)
