r"""The main job: zoo -> artifact stores per space -> probe, attributor, baselines -> Tables 1-3.

    python -m fpjax.bin.demo --workdir=OUT     (console script: fpjax-demo --workdir=OUT)
    python -m fpjax.bin.demo --workdir=OUT --config=full --config.splits=5

Builds or reuses OUT/zoo and the two Table 2 zoos, computes or reuses their artifact stores
OUT/artifacts/<zoo>/<space>/<estimators>, prints the tables and writes OUT/report.md,
OUT/tables.md, OUT/tables.json and OUT/figures/ (fpjax.evals.run_demo). The settings are the
keys of fpjax/configs/demo.py (the sizing and what it leaves out are explained there).
"""
from fpjax import evals
from fpjax.bin import flags as fpjax_flags


def main(config, workdir: str) -> None:
  evals.run_demo(config, workdir)


def run() -> None:
  fpjax_flags.run(main, 'demo')


if __name__ == '__main__':
  run()
