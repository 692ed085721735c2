"""Yu19 ("Attributing fake images to GANs"): a CNN trained end to end for N-way attribution.

Adam with beta1 = 0, beta2 = 0.99 and batch 32, as in the paper. Simplification: a
discriminator-like SmallCNN (stride-2 convs, leaky ReLU 0.2, widths 32/64/128) instead
of the paper's deeper network.
"""
from fpjax.baselines._common import CNNBaseline


class Yu19(CNNBaseline):
  QUICK = dict(arch='cnn', widths=(32, 64, 128), activation='leaky_relu', optimizer='adam',
               lr=1e-3, b1=0.0, b2=0.99, epochs=4, batch_size=32)
