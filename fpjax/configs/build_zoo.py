"""`python -m fpjax.bin.build_zoo`: train, sample and score the zoo (fpjax.zoo.build_zoo).

    python -m fpjax.bin.build_zoo --workdir=ZOO [--config.preset=tiny] [--config.real=digits]

The presets' sizes are in configs/zoo.py.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.preset = 'quick'                   # a preset of configs/zoo.py: tiny | cross | quick | full
  c.real = 'mnist5k'                   # mnist5k | mnist5k_0to4 | mnist5k_5to9 | digits
  c.seed = 0                           # same seed, same zoo
  c.num_samples = ml_collections.config_dict.placeholder(int)  # per model; None: the preset's
  # Models trained at once, each in a worker process (None: min(2, cores) on the CPU, 1 on
  # GPU/TPU); results do not depend on it.
  c.workers = ml_collections.config_dict.placeholder(int)
  return c
