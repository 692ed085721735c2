r"""Builds the GM zoo: python -m fpjax.bin.build_zoo --workdir=DIR [--config.preset=quick].

The settings are the keys of fpjax/configs/build_zoo.py; the presets' sizes are in
fpjax/configs/zoo.py.
"""
from fpjax import parallel
from fpjax import zoo
from fpjax.bin import flags as fpjax_flags


def build_zoo(config, workdir: str) -> dict:
  """fpjax.zoo.build_zoo from a build_zoo config."""
  return zoo.build_zoo(workdir, preset=config.preset, real=config.real, seed=config.seed,
                       num_samples=config.num_samples, workers=config.workers)


def main(config, workdir: str) -> None:
  if parallel.is_chief():  # the zoo is small: process 0 trains it; the others have nothing to do
    build_zoo(config, workdir)


if __name__ == '__main__':
  fpjax_flags.run(main, 'build_zoo')
