"""Configs as data: one ml_collections ConfigDict file per preset and per binary.

    defaults.py           library-wide defaults (selection, attributor/encoder presets, ...)
    zoo.py                the zoo presets (fields of fpjax.zoo.recipes.Preset): tiny, cross,
                          quick, full
    demo.py, tiny.py, full.py   the main job (fpjax.evals.run_demo): the README's demo, a
                          test-sized one, the whole evaluation
    evaluate.py           fpjax.evals.evaluate on one GM dataset
    compute_artifacts.py  fpjax.artifact_job.compute_artifacts
    build_zoo.py          fpjax.zoo.build_zoo

Binaries take `--config=NAME` (a file here) or `--config=path/to/config.py`, and
`--config.key=value` overrides. From Python: `configs.get_config('demo')`. Pure data: nothing
here imports the rest of fpjax.
"""
import importlib
import os

import ml_collections

from fpjax.configs import defaults
from fpjax.configs import zoo

NAMES = ('demo', 'tiny', 'full', 'evaluate', 'compute_artifacts', 'build_zoo', 'zoo')
HERE = os.path.dirname(os.path.abspath(__file__))


def path(name: str) -> str:
  """The file of config `name` (one of NAMES)."""
  if name not in NAMES:
    raise KeyError(f'unknown config {name!r}; expected one of {list(NAMES)}')
  return os.path.join(HERE, f'{name}.py')


def get_config(name: str, *args) -> ml_collections.ConfigDict:
  """The ConfigDict of config `name` (one of NAMES); args go to its get_config."""
  path(name)
  return importlib.import_module(f'fpjax.configs.{name}').get_config(*args)


__all__ = ['NAMES', 'defaults', 'get_config', 'path', 'zoo']
