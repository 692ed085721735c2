r"""The main job: zoo -> artifacts in every space -> probe, attributor, baselines -> Tables 1-3.

python -m fpjax.bin.demo --workdir=OUT     (console script: fpjax-demo --workdir=OUT)
Builds or reuses OUT/zoo (quick preset on mnist5k) and the two Table 2 zoos, prints the tables
and writes OUT/report.md, OUT/tables.md, OUT/tables.json and OUT/figures/.
"""
from absl import app
from absl import flags

from fpjax import analysis
from fpjax.bin import flags as fpjax_flags

_WORKDIR = flags.DEFINE_string('workdir', '/tmp/fpjax_demo',
                               'Output folder (zoos and encoders are cached here).')
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Classifier seeds (mean ± std over them).')
_PRESET = flags.DEFINE_string('preset', 'quick', 'Zoo preset of the Table 1/3 zoo.')
_CROSS_PRESET = flags.DEFINE_string('cross_preset', 'cross',
                                    'Zoo preset of the Table 2 zoos.')
_CROSS = flags.DEFINE_bool('cross', True, 'Build the two Table 2 zoos and run Table 2.')


def main(argv):
  del argv
  fpjax_flags.initialize()
  analysis.quiet_library_logs()
  analysis.run_demo(_WORKDIR.value, preset=_PRESET.value, cross_preset=_CROSS_PRESET.value,
                    seeds=_SEEDS.value,
                    cross_reals=('mnist5k_0to4', 'mnist5k_5to9') if _CROSS.value else ())


def run():
  app.run(main)


if __name__ == '__main__':
  run()
