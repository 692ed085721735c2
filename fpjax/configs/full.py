"""The whole evaluation, for an accelerator: the full zoo, every estimator in every space, every
baseline, both classifiers in Tables 1 and 2, the library's selection defaults, the paper's
attributor and encoder training lengths.

    python -m fpjax.bin.demo --config=full --workdir=OUT
"""
import ml_collections

from fpjax.configs import defaults
from fpjax.configs import demo
from fpjax.configs import evaluate


def get_config() -> ml_collections.ConfigDict:
  c = demo.get_config()
  c.preset = 'full'
  c.estimator_spaces = 'all'
  c.attributor_estimators = 'all'
  c.baselines = 'all'
  c.cross_baselines = 'all'
  c.cross_classifiers = ','.join(defaults.CLASSIFIERS)
  c.cfg = evaluate.classifier_config(attributor_preset='paper')
  c.encoder_steps.sl = defaults.ENCODER_PRESETS['paper']['sl_steps']
  c.encoder_steps.ssl = defaults.ENCODER_PRESETS['paper']['ssl_steps']
  return c
