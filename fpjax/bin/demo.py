r"""The main job: zoo -> artifact stores per space -> probe, attributor, baselines -> Tables 1-3.

python -m fpjax.bin.demo --workdir=OUT     (console script: fpjax-demo --workdir=OUT)
Builds or reuses OUT/zoo (quick preset on mnist5k; --zoo=DIR evaluates another zoo workdir as
it is) and the two Table 2 zoos, computes or reuses their artifact stores
OUT/artifacts/<zoo>/<space>/<estimators> (fpjax.compute_artifacts), prints the tables and writes
OUT/report.md, OUT/tables.md, OUT/tables.json and OUT/figures/. By default (sized for the
demo's budget; the report says what ran and what was left out) every estimator runs with the
probe in RGB (--estimator_spaces; nn and the input control in the other spaces), the
attributor on the probe's choice ('best') and the input control (--attributor_estimators),
seven of the nine baselines (--baselines), Table 2 with the probe only (--cross_classifiers)
and two baselines (--cross_baselines).
"""
import os
import sys

from absl import flags

from fpjax import evals
from fpjax.bin import flags as fpjax_flags

_WORKDIR = flags.DEFINE_string('workdir', '/tmp/fpjax_demo',
                               'Output folder (zoos, encoders and artifact stores are kept '
                               'here and reused).')
_SPLITS = fpjax_flags.splits_flag(3)
_ESTIMATORS = fpjax_flags.estimators_flag(['all'])
_ESTIMATOR_SPACES = fpjax_flags.estimator_spaces_flag(evals.DEMO_CONFIG['estimator_spaces'])
_ATTRIBUTOR_ESTIMATORS = fpjax_flags.attributor_estimators_flag(
    evals.DEMO_CONFIG['attributor_estimators'])
_ZOO = flags.DEFINE_string('zoo', None, 'Evaluate this zoo workdir (reused as it is) instead '
                           'of building OUT/zoo.')
_PRESET = flags.DEFINE_string('preset', 'quick', 'Zoo preset of the Table 1/3 zoo.')
_REAL = flags.DEFINE_string('real', 'mnist5k', 'Real dataset the Table 1/3 zoo is trained on and '
                            'measured against (the zoo trains on an embedded set: mnist5k, '
                            'mnist5k_0to4, mnist5k_5to9, digits).')
_CROSS_PRESET = flags.DEFINE_string('cross_preset', 'cross',
                                    'Zoo preset of the Table 2 zoos.')
_CROSS = flags.DEFINE_bool('cross', True, 'Build the two Table 2 zoos and run Table 2.')
_SPACES = flags.DEFINE_list('spaces', list(evals.MANIFPT_SPACES), 'ManiFPT spaces.')
_BASELINES = flags.DEFINE_list(
    'baselines', list(evals.DEMO_CONFIG['baselines'] or ['all']),
    "Table 1 baselines ('all', 'none' or names).")
_CROSS_BASELINES = flags.DEFINE_list(
    'cross_baselines', list(evals.DEMO_CONFIG['cross_baselines'] or ['all']),
    "Table 2 baselines ('all', 'none' or names).")
_CLASSIFIERS = flags.DEFINE_list('classifiers', list(evals.CLASSIFIERS), 'On the artifacts.')
_CROSS_CLASSIFIERS = flags.DEFINE_list(
    'cross_classifiers', list(evals.DEMO_CONFIG['cross_classifiers']),
    'Table 2 classifiers on the artifacts.')
_ATTRIBUTOR_EPOCHS = flags.DEFINE_integer('attributor_epochs', None,
                                          'Attributor epochs (default: the demo\'s, 5).')
_ENCODER_STEPS = flags.DEFINE_integer('encoder_steps', None,
                                      'SL/SSL training steps (default: the demo\'s).')
_ARTIFACTS = fpjax_flags.artifact_flags()
_COMPILATION_CACHE = flags.DEFINE_bool(
    'compilation_cache', True, "Keep XLA's compiled programs in WORKDIR/jax_cache (JAX's "
    'persistent compilation cache): the demo fits hundreds of classifiers of a few shapes, and '
    'a program compiled once is then read back instead of compiled again (the same program, '
    'so the same numbers).')


def main(argv):
  del argv
  fpjax_flags.initialize()
  evals.quiet_library_logs()
  if _COMPILATION_CACHE.value:
    import jax
    jax.config.update('jax_compilation_cache_dir', os.path.join(_WORKDIR.value, 'jax_cache'))
    # Every program: the classifiers' small ones compile in well under JAX's 1 s default.
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  cfg = None
  if _ATTRIBUTOR_EPOCHS.value:
    cfg = {k: dict(v) for k, v in evals.DEMO_CONFIG['cfg'].items()}
    e = _ATTRIBUTOR_EPOCHS.value
    cfg['attributor'] = dict(cfg['attributor'], epochs=e,
                             milestones=(max(1, e * 3 // 5), max(1, e * 4 // 5)))
  steps = ({'sl': _ENCODER_STEPS.value, 'ssl': _ENCODER_STEPS.value}
           if _ENCODER_STEPS.value else None)
  try:
    evals.run_demo(
        _WORKDIR.value, preset=_PRESET.value, real=_REAL.value, cross_preset=_CROSS_PRESET.value,
        splits=_SPLITS.value, estimators=_ESTIMATORS.value,
        estimator_spaces=_ESTIMATOR_SPACES.value,
        attributor_estimators=fpjax_flags.attributor_estimators_arg(
            _ATTRIBUTOR_ESTIMATORS.value),
        cross_reals=('mnist5k_0to4', 'mnist5k_5to9') if _CROSS.value else (),
        spaces=_SPACES.value, baselines=evals.baselines_arg(_BASELINES.value),
        cross_baselines=evals.baselines_arg(_CROSS_BASELINES.value),
        classifiers=_CLASSIFIERS.value, cross_classifiers=_CROSS_CLASSIFIERS.value, cfg=cfg,
        cross_cfg=cfg, encoder_steps=steps,
        zoo=_ZOO.value, artifact_kwargs=_ARTIFACTS.kwargs())
  except evals.Preempted as e:  # an artifact job checkpointed after SIGTERM: rerun
    print(e, file=sys.stderr, flush=True)
    sys.exit(143)


def run():
  fpjax_flags.run(main)


if __name__ == '__main__':
  run()
