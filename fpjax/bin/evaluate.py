r"""The paper's evaluation on one GM dataset: Tables 1-3, open set, intervals, figures, report.md.

python -m fpjax.bin.evaluate --gm=DIR --workdir=OUT [--real=mnist5k] [--spaces=rgb,freq,dct,sl,ssl]
    [--estimators=nn|all|nn,knn_mean,...] [--estimator_spaces=rgb,sl] [--splits=3] [--baselines=all]
    [--classifiers=probe,attributor] [--cross=TRAIN_GM:TEST_GM,...]

The artifacts are read from OUT/artifacts/<gm>/<space>/<estimators>, the stores
`compute_artifacts` writes; a missing store is computed first (a partial one resumed), with the
artifact flags below. Exit status: 0 done, 2 refused input (one line on stderr), 1 a bug, 143
SIGTERM during an artifact job (checkpointed: rerun).
"""
import sys

from absl import flags

from fpjax import evals
from fpjax.bin import flags as fpjax_flags

_GM = flags.DEFINE_string('gm', None, 'Zoo workdir (has zoo.json) or image-folder root '
                          'root/<model>/*.png.', required=True)
_REAL = flags.DEFINE_string(
    'real', None, "Real source the models imitate (the manifold's bank): mnist5k | "
    'mnist5k_0to4 | mnist5k_5to9 | digits | tfds:<name>[:<split>] | a .npy/.npz of images '
    '[N,H,W,C] | an image folder. Default: the zoo\'s own; required for an image folder.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder (tables, figures, report, '
                               'encoders/ and the artifact stores artifacts/<gm>/<space>/...).',
                               required=True)
_SPACES = flags.DEFINE_list('spaces', list(evals.MANIFPT_SPACES), 'ManiFPT spaces.')
_ESTIMATORS = fpjax_flags.estimators_flag(['nn'])
_ESTIMATOR_SPACES = fpjax_flags.estimator_spaces_flag(None)
_ATTRIBUTOR_ESTIMATORS = fpjax_flags.attributor_estimators_flag(['all'])
_SPLITS = fpjax_flags.splits_flag(3)
_BASELINES = flags.DEFINE_list('baselines', ['all'], "Baselines ('all', 'none' or names).")
_CLASSIFIERS = flags.DEFINE_list('classifiers', list(evals.CLASSIFIERS), 'On the artifacts.')
_CROSS = flags.DEFINE_list('cross', [], 'Table 2 pairs TRAIN_GM:TEST_GM (zoo workdirs).')
_SHOTS = flags.DEFINE_integer('shots', 10, 'Few-shot enrolment samples per new model.')
_ATTRIBUTOR_EPOCHS = flags.DEFINE_integer('attributor_epochs', None,
                                          'Attributor epochs (default: its quick preset, 15).')
_ENCODER_STEPS = flags.DEFINE_integer('encoder_steps', None, 'SL/SSL training steps '
                                      '(default: the encoders\' quick preset).')
# compute_artifacts' settings for stores that are missing (one definition: fpjax.bin.flags).
_ARTIFACTS = fpjax_flags.artifact_flags()


def main(argv):
  del argv
  fpjax_flags.initialize()
  evals.quiet_library_logs()
  cfg = None
  if _ATTRIBUTOR_EPOCHS.value:
    e = _ATTRIBUTOR_EPOCHS.value
    cfg = {'attributor': dict(epochs=e, milestones=(max(1, e * 8 // 15), max(1, e * 12 // 15)))}
  steps = ({'sl': _ENCODER_STEPS.value, 'ssl': _ENCODER_STEPS.value}
           if _ENCODER_STEPS.value else None)
  try:
    evals.evaluate(
        _GM.value, _REAL.value, _WORKDIR.value, spaces=_SPACES.value, splits=_SPLITS.value,
        estimators=_ESTIMATORS.value, estimator_spaces=_ESTIMATOR_SPACES.value,
        attributor_estimators=fpjax_flags.attributor_estimators_arg(
            _ATTRIBUTOR_ESTIMATORS.value),
        baselines=evals.baselines_arg(_BASELINES.value), classifiers=_CLASSIFIERS.value,
        cross=[p.split(':', 1) for p in _CROSS.value], shots=_SHOTS.value, cfg=cfg,
        encoder_steps=steps, artifact_kwargs=_ARTIFACTS.kwargs())
  except evals.Preempted as e:  # an artifact job checkpointed after SIGTERM: rerun
    print(e, file=sys.stderr, flush=True)
    sys.exit(143)


if __name__ == '__main__':
  fpjax_flags.run(main)
