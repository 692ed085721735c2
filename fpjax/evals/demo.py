"""`run_demo(config, workdir)`: the main job (fpjax.bin.demo): build or reuse the zoos, then the
whole evaluation, printed and written. `config` holds the keys of fpjax/configs/demo.py (a
ConfigDict, or a dict of the keys to change); tiny.py and full.py are the other presets.
"""
from __future__ import annotations

import os
import time

from absl import logging

from fpjax import estimators as est_lib
from fpjax import zoo as zoo_lib
from fpjax.baselines import BASELINES
from fpjax.estimators import CONTROL
# Names, not the module: `fpjax.evals.evaluate` is also the function's name in the package.
from fpjax.evals.evaluate import (Evaluation, check_settings, names_of, record_time, run,
                                  settings)
from fpjax.evals.gm_data import load_gm
from fpjax.evals.table1_accuracy import BEST


def run_demo(config, workdir: str) -> Evaluation:
  """The main job: build (or reuse) the zoos, then the whole evaluation, printed and written.

  WORKDIR/zoo (config.preset on config.real) is the Table 1/3 dataset (config.zoo: another zoo
  workdir to evaluate instead, reused as it is); WORKDIR/zoo_<cross_preset>_<r> for each r of
  config.cross_reals are the Table 2 datasets, evaluated in both directions. A zoo already
  complete in its folder is reused. tables.json's config['demo'] records what ran and what was
  left out.
  """
  s = settings(config, base='demo')
  check_settings(s)  # bad settings are refused before the zoo is built
  cross_reals = names_of(s['cross_reals'])
  timings = {}
  t, c = time.time(), time.process_time()
  zoo_dir = s['zoo'] or os.path.join(workdir, 'zoo')
  cross_dirs = [os.path.join(workdir, f'zoo_{s["cross_preset"]}_{r}') for r in cross_reals]
  # One pool of workers trains every zoo: while Table 1 runs on the first, the workers go on
  # training Table 2's (2 cores stay busy; each zoo alone would leave them idle in turns).
  zoos = zoo_lib.build_zoos(
      ([] if s['zoo'] else [zoo_lib.ZooSpec(zoo_dir, s['preset'], s['real'])])
      + [zoo_lib.ZooSpec(d, s['cross_preset'], r, num_samples=s['cross_num_samples'])
         for d, r in zip(cross_dirs, cross_reals)])
  try:
    if s['zoo'] is None:
      next(zoos)
    record_time(timings, 'zoo', t, c)

    def cross_pairs():  # Table 2's pairs, once their zoos are complete
      t = time.time()
      for _ in cross_dirs:
        next(zoos)
      logging.info('run_demo: the Table 2 zoos were ready %.0f s after Table 2 asked for them',
                   time.time() - t)
      a, b = (load_gm(d) for d in cross_dirs)
      yield a, b
      yield b, a

    has_cross = len(cross_dirs) == 2
    s['real'] = None if s['zoo'] else s['real']
    demo = dict(preset=s['preset'], zoo=s['zoo'], cross_preset=s['cross_preset'],
                cross_num_samples=s['cross_num_samples'], **demo_coverage(s, has_cross))
    return run(s, workdir, gm=zoo_dir, cross=cross_pairs() if has_cross else [],
               timings=timings, extra_config=dict(demo=demo))
  finally:
    zoos.close()  # the pool ends (jobs not started are cancelled)


def demo_coverage(s: dict, cross: bool) -> dict:
  """{'ran': [...], 'left_out': [...]}: what the settings `s` (evaluate.settings) run of the
  full evaluation (every estimator with both classifiers in every space, every baseline, Table
  2 with both classifiers), in words, for config['demo'] and the report."""
  spaces, classifiers = s['spaces'], s['classifiers']
  names = [n for n in est_lib.parse_estimators(list(s['estimators'])) if n != CONTROL]
  est_spaces = (list(spaces) if s['estimator_spaces'] is None
                else [sp for sp in spaces if sp in s['estimator_spaces']])
  rest = [sp for sp in spaces if sp not in est_spaces]
  up = lambda ss: ', '.join(sp.upper() for sp in ss)
  ran, left = [], []
  if 'probe' in classifiers:
    ran.append(f'Table 1, the linear probe: the estimators {", ".join(names)} and the input '
               f'control in {up(est_spaces)}' + (f'; nn and the input control in {up(rest)}'
                                                  if rest else '') + '.')
    other = [n for n in names if n != 'nn']
    if rest and other:
      left.append(f'Table 1: the estimators {", ".join(other)} in {up(rest)} (run them with '
                  f'--config.estimator_spaces={",".join(spaces)}).')
  att = s['attributor_estimators']
  if 'attributor' in classifiers:
    words = ('every estimator and the input control' if att is None else
             ', '.join("the probe's choice per split ('best')" if n == BEST else
                       'the input control' if n == CONTROL else n for n in att))
    ran.append(f'Table 1, the attributor: {words}, in every space.')
    if att is not None:
      left.append('Table 1: the attributor on the other estimators one by one (run them with '
                  '--config.attributor_estimators=all).')
  all_b = list(BASELINES)
  run_b = all_b if s['baselines'] is None else list(s['baselines'])
  ran.append('Baselines: ' + (', '.join(run_b) or 'none') + '.')
  if len(run_b) < len(all_b):
    left.append('Baselines ' + ', '.join(b for b in all_b if b not in run_b)
                + ' (run them with --config.baselines=all).')
  if cross:
    cc = list(s['cross_classifiers'])
    cb = all_b if s['cross_baselines'] is None else s['cross_baselines']
    ran.append(f'Table 2: the {" and the ".join(cc)} on {", ".join(s["cross_estimators"])} and '
               'the input control in every space; baselines ' + (', '.join(cb) or 'none') + '.')
    if set(classifiers) - set(cc):
      left.append('Table 2: the ' + ', '.join(sorted(set(classifiers) - set(cc)))
                  + ' (run it with --config.cross_classifiers='
                  + ','.join(dict.fromkeys(list(cc) + list(classifiers))) + ').')
  return dict(ran=ran, left_out=left)
