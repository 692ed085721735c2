"""`python -m fpjax.bin.demo`: the main job (fpjax.evals.run_demo), sized for 2 CPU cores.

Builds or reuses WORKDIR/zoo (`preset` on `real`) and the two Table 2 zoos
WORKDIR/zoo_<cross_preset>_<r> for r in `cross_reals`, then the evaluation (evaluate.py's keys).

The sizing: everything after the zoos is meant to take at most 4.5 minutes on 2 quiet CPU cores.
Measured in process CPU seconds with every estimator in RGB and SL, all nine baselines and Table
2 with both classifiers: 577 in all; encoders 60, artifact stores 94, selection 65 (138 probe
fits), reported probe fits 24, attributor 73, baselines 100 (Nataraj19 and Wang20 a third of
it), Table 3 and open set 24, Table 2 131. With the values below: 390 (encoders 66, stores 78,
selection 40 (99 fits), probe 14, attributor 67, baselines 44, Table 3 and open set 26, Table 2
48). So the demo runs every estimator with the probe in RGB (the paper's space), nn and the
input control in FREQ, DCT, SL and SSL (each k-neighbour estimator costs a selection fit per
candidate, split and space); the attributor on the probe's choice per split ('best') and on
the input control, in every space; seven baselines (not Nataraj19 and Wang20: the two slowest,
neither the best on this zoo); Table 2 with the probe only and Durall20 and Frank20. The probe's
l2 is chosen among two candidates and its epochs by early stopping (at most 50, patience 5). The
report says what ran and what was left out (full.py runs all of it).
"""
import ml_collections

from fpjax.configs import defaults
from fpjax.configs import evaluate


def get_config() -> ml_collections.ConfigDict:
  c = evaluate.get_config()
  del c['gm'], c['cross']              # the demo's zoos
  c.real = 'mnist5k'                   # the Table 1/3 zoo's real set (an embedded one)
  c.preset = 'quick'                   # its zoo preset (configs/zoo.py)
  c.zoo = ml_collections.config_dict.placeholder(str)  # evaluate this zoo workdir instead
  c.cross_preset = 'cross'             # the Table 2 zoos' preset
  c.cross_reals = 'mnist5k_0to4,mnist5k_5to9'  # '' : no Table 2
  c.cross_num_samples = ml_collections.config_dict.placeholder(int)  # None: the preset's
  c.estimators = 'all'
  c.estimator_spaces = 'rgb'
  c.attributor_estimators = 'best,input'
  c.baselines = 'McClo18,Durall20,Dzanic20,Frank20,Marra18,Marra19,Yu19'
  c.cross_baselines = 'Durall20,Frank20'
  c.cross_classifiers = 'probe'
  c.cfg = evaluate.classifier_config(
      selection=dict(l2=(1e-4, 1e-2), max_epochs=50, patience=5),
      attributor=dict(widths=(8, 16, 32), epochs=5, milestones=(3, 4)))
  # SL: the quick zoo's reference encoder (defaults.QUICK_SL_STEPS), copied instead of trained.
  c.encoder_steps.sl = defaults.QUICK_SL_STEPS
  c.encoder_steps.ssl = 60
  # The demo fits hundreds of classifiers of a few shapes: each program compiled once is read
  # back from WORKDIR/jax_cache instead of compiled again (the same program, the same numbers).
  c.compilation_cache = True
  return c
