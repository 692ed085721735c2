r"""The paper's evaluation on one GM dataset: Tables 1-3, open set, intervals, figures, report.md.

    python -m fpjax.bin.evaluate --workdir=OUT --config.gm=DIR [--config.real=mnist5k] \
        [--config.spaces=rgb,freq,dct,sl,ssl] [--config.estimators=nn|all|nn,knn_mean,...] \
        [--config.splits=3] [--config.baselines=all] [--config.cross=TRAIN_GM:TEST_GM,...]

The settings are the keys of fpjax/configs/evaluate.py (fpjax.evals.evaluate). Artifacts are
read from OUT/artifacts/<gm>/<space>/<estimators>, the stores `compute_artifacts` writes; a
missing store is computed first (a partial one resumed) with config.artifacts.
"""
from fpjax import evals
from fpjax.bin import flags as fpjax_flags


def main(config, workdir: str) -> None:
  evals.evaluate(config, workdir)


if __name__ == '__main__':
  fpjax_flags.run(main, 'evaluate')
