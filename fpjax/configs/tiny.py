"""The demo at test size (a few minutes on 2 CPU cores): the tiny zoo of 4 models x 32 samples of
8x8 digits, no Table 2, three spaces, two estimators, three baselines, 2 splits, one probe l2, a
narrow attributor for 2 epochs. tests/test_demo.py and tests/test_bin_demo.py run it:

    python -m fpjax.bin.demo --config=tiny --workdir=OUT
"""
import ml_collections

from fpjax.configs import demo
from fpjax.configs import evaluate


def get_config() -> ml_collections.ConfigDict:
  c = demo.get_config()
  c.preset, c.real, c.cross_reals = 'tiny', 'digits', ''
  c.spaces = 'rgb,freq,sl'
  c.splits = 2
  c.estimators = 'nn,knn_mean'
  c.estimator_spaces = 'rgb,sl'
  c.baselines = 'Durall20,Marra19,Marra18'
  c.cfg = evaluate.classifier_config(
      selection=dict(l2=(1e-4,), max_epochs=30, patience=5),
      attributor=dict(widths=(8, 16, 32), epochs=2, milestones=(1, 2)))
  c.encoder_steps.sl, c.encoder_steps.ssl = 10, 5
  return c
