r"""The main job: zoo -> artifact stores per space -> probe, attributor, baselines -> Tables 1-3.

python -m fpjax.bin.demo --workdir=OUT     (console script: fpjax-demo --workdir=OUT)
Builds or reuses OUT/zoo (quick preset on mnist5k) and the two Table 2 zoos, computes or reuses
their artifact stores OUT/artifacts/<zoo>/<space> (fpjax.compute_artifacts), prints the tables
and writes OUT/report.md, OUT/tables.md, OUT/tables.json and OUT/figures/.
"""
import sys

from absl import flags

from fpjax import analysis
from fpjax.bin import flags as fpjax_flags

_WORKDIR = flags.DEFINE_string('workdir', '/tmp/fpjax_demo',
                               'Output folder (zoos, encoders and artifact stores are kept '
                               'here and reused).')
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Classifier seeds (mean ± std over them).')
_PRESET = flags.DEFINE_string('preset', 'quick', 'Zoo preset of the Table 1/3 zoo.')
_REAL = flags.DEFINE_string('real', 'mnist5k', 'Real dataset the Table 1/3 zoo is trained on and '
                            'measured against (the zoo trains on an embedded set: mnist5k, '
                            'mnist5k_0to4, mnist5k_5to9, digits).')
_CROSS_PRESET = flags.DEFINE_string('cross_preset', 'cross',
                                    'Zoo preset of the Table 2 zoos.')
_CROSS = flags.DEFINE_bool('cross', True, 'Build the two Table 2 zoos and run Table 2.')
_SPACES = flags.DEFINE_list('spaces', list(analysis.MANIFPT_SPACES), 'ManiFPT spaces.')
_BASELINES = flags.DEFINE_list('baselines', ['all'], "Baselines ('all', 'none' or names).")
_CLASSIFIERS = flags.DEFINE_list('classifiers', list(analysis.CLASSIFIERS), 'On the artifacts.')
_ATTRIBUTOR_EPOCHS = flags.DEFINE_integer('attributor_epochs', None,
                                          'Attributor epochs (default: the demo\'s, 5).')
_PROBE_EPOCHS = flags.DEFINE_integer('probe_epochs', None,
                                     'Linear-probe epochs (default: its own, 300 with early stop).')
_ENCODER_STEPS = flags.DEFINE_integer('encoder_steps', None,
                                      'SL/SSL training steps (default: the demo\'s).')


def main(argv):
  del argv
  fpjax_flags.initialize()
  analysis.quiet_library_logs()
  cfg = None
  if _ATTRIBUTOR_EPOCHS.value or _PROBE_EPOCHS.value:
    cfg = {k: dict(v) for k, v in analysis.DEMO_CONFIG['cfg'].items()}
    if _ATTRIBUTOR_EPOCHS.value:
      e = _ATTRIBUTOR_EPOCHS.value
      cfg['attributor'] = dict(cfg['attributor'], epochs=e,
                               milestones=(max(1, e * 3 // 5), max(1, e * 4 // 5)))
    if _PROBE_EPOCHS.value:
      cfg['probe'] = dict(epochs=_PROBE_EPOCHS.value)
  steps = ({'sl': _ENCODER_STEPS.value, 'ssl': _ENCODER_STEPS.value}
           if _ENCODER_STEPS.value else None)
  try:
    analysis.run_demo(
        _WORKDIR.value, preset=_PRESET.value, real=_REAL.value, cross_preset=_CROSS_PRESET.value,
        seeds=_SEEDS.value, cross_reals=('mnist5k_0to4', 'mnist5k_5to9') if _CROSS.value else (),
        spaces=_SPACES.value, baselines=analysis.baselines_arg(_BASELINES.value),
        classifiers=_CLASSIFIERS.value, cfg=cfg, cross_cfg=cfg, encoder_steps=steps,
        artifact_kwargs=dict(on_bad_input=fpjax_flags.ON_BAD_INPUT.value))
  except analysis.Preempted as e:  # an artifact job checkpointed after SIGTERM: rerun
    print(e, file=sys.stderr, flush=True)
    sys.exit(143)


def run():
  fpjax_flags.run(main)


if __name__ == '__main__':
  run()
