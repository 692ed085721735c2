r"""Builds the GM zoo: python -m fpjax.bin.build_zoo --preset=quick --real=mnist5k --workdir=DIR."""
from absl import flags

from fpjax import parallel
from fpjax import zoo
from fpjax.bin import flags as fpjax_flags

_PRESET = flags.DEFINE_enum('preset', 'quick', sorted(zoo.PRESETS), 'Zoo size and training length.')
_REAL = flags.DEFINE_enum('real', 'mnist5k', ['mnist5k', 'mnist5k_0to4', 'mnist5k_5to9', 'digits'],
                          'Embedded real dataset the models are trained on.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder (images/, grids/, zoo.json).',
                               required=True)
_SEED = flags.DEFINE_integer('seed', 0, 'Build seed: same seed, same zoo.')
_NUM_SAMPLES = flags.DEFINE_integer('num_samples', None, 'Samples per model (default: preset).')
_WORKERS = flags.DEFINE_integer('workers', None, 'Models trained at once, each in a worker '
                                'process (default: min(2, cores) on the CPU, 1 on GPU/TPU); '
                                'results do not depend on it.')


def main(argv):
  del argv
  fpjax_flags.initialize()
  if not parallel.is_chief():
    return  # the zoo is small: process 0 trains it on its devices; the others have nothing to do
  zoo.build_zoo(_WORKDIR.value, preset=_PRESET.value, real=_REAL.value, seed=_SEED.value,
                num_samples=_NUM_SAMPLES.value, workers=_WORKERS.value)


if __name__ == '__main__':
  fpjax_flags.run(main)
