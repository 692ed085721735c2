"""The binaries' flags: --config files and overrides, each flag defined once, the earlier flags
mapped to config keys or refused in one line, and the one exit-status path for bad values
(exit 2, one stderr line, no traceback, nothing written)."""
import ast
import dataclasses
import inspect
import os
import subprocess
import sys

from absl import flags
import pytest

from fpjax import configs
from fpjax.bin import flags as fpjax_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARIES = ('demo', 'evaluate', 'build_zoo', 'compute_artifacts')


def test_every_binary_imports_in_one_process_and_each_flag_is_defined_once():
  import importlib
  modules = [importlib.import_module(f'fpjax.bin.{b}') for b in BINARIES]
  assert all(callable(m.main) for m in modules)
  by_module = flags.FLAGS.flags_by_module_dict()
  names = [f.name for module, fl in by_module.items() if module.startswith('fpjax.bin')
           for f in fl]
  assert len(names) == len(set(names))
  assert {n for m, fl in by_module.items() for f in fl if m.startswith('fpjax.bin')
          for n in [f.name]} >= {'workdir', 'real', 'preset', 'spaces', 'cross', 'estimators',
                                 'classifiers', 'encoder_steps', 'gm', 'splits', 'baselines'}
  # Every such flag comes from one module: fpjax.bin.flags.
  assert {m for m, fl in by_module.items() if m.startswith('fpjax.bin') and fl} == {
      'fpjax.bin.flags'}


def test_configs_are_pure_data_and_hold_each_default_once():
  for name in configs.NAMES:
    tree = ast.parse(open(configs.path(name)).read())
    imported = [n.module if isinstance(n, ast.ImportFrom) else a.name for n in ast.walk(tree)
                if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names]
    assert all(not m.startswith('fpjax') or m.startswith('fpjax.configs') for m in imported)
    assert len(configs.get_config(name)) > 0
  from fpjax.attribution import attributor
  from fpjax.models import encoders
  from fpjax.zoo import quality
  from fpjax.zoo import recipes
  fields = {f.name for f in dataclasses.fields(recipes.Preset)}
  for preset in configs.zoo.PRESETS:
    config = configs.zoo.get_config(preset)
    assert set(config) == fields
    assert recipes.PRESETS[preset] == recipes.Preset(**config.to_dict())
  # The tie that was a comment: the demo's SL encoder is the quick zoo's reference encoder.
  steps = configs.defaults.QUICK_SL_STEPS
  assert configs.get_config('demo').encoder_steps.sl == steps
  assert recipes.PRESETS['quick'].encoder_steps == steps
  assert encoders.PRESETS['quick']['sl_steps'] == steps
  assert inspect.signature(quality.QualityReference).parameters['encoder_steps'].default == steps
  assert attributor.PRESETS is configs.defaults.ATTRIBUTOR_PRESETS


@pytest.fixture
def parsed():
  """Parses argv into the global flags (the shorthands) and undoes it afterwards."""
  def parse(*args):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(['binary', *args])
  yield parse
  flags.FLAGS.unparse_flags()


def test_earlier_flags_set_their_config_keys(parsed):
  parsed('--real=digits', '--spaces=rgb,sl', '--encoder_steps=7', '--batch_size=8',
         '--nocompilation_cache', '--splits=2', '--cross=false')
  config = configs.get_config('demo')
  fpjax_flags.apply_shorthands(config, 'demo')
  assert (config.real, config.spaces, config.splits) == ('digits', 'rgb,sl', 2)
  assert (config.encoder_steps.sl, config.encoder_steps.ssl) == (7, 7)
  assert config.artifacts.batch_size == 8 and config.compilation_cache is False
  assert config.cross_reals == ''
  parsed('--gm=G', '--cross=a:b,c:d', '--on_bad_input=fail')
  config = configs.get_config('evaluate')
  fpjax_flags.apply_shorthands(config, 'evaluate')
  assert (config.gm, config.cross, config.artifacts.on_bad_input) == ('G', 'a:b,c:d', 'fail')
  parsed('--preset=tiny', '--workers=1', '--num_samples=8')
  config = configs.get_config('build_zoo')
  fpjax_flags.apply_shorthands(config, 'build_zoo')
  assert (config.preset, config.workers, config.num_samples) == ('tiny', 1, 8)


def test_config_names_resolve_and_move_before_their_overrides():
  argv = fpjax_flags._prepare_argv(  # pylint: disable=protected-access
      ['demo', '--config.splits=1', '--config=tiny', '--nocross'], 'demo')
  assert argv == ['demo', f'--config={configs.path("tiny")}', '--config.splits=1',
                  '--cross=false']


def _run(binary, args, tmp_path):
  out = tmp_path / 'out'
  p = subprocess.run([sys.executable, '-m', f'fpjax.bin.{binary}', *args],
                     capture_output=True, text=True, timeout=300, cwd=ROOT,
                     env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert not out.exists()   # refused before anything was computed or written
  return p


@pytest.mark.parametrize('binary, args, token', [
    ('demo', ['--config.splits=0'], '--splits'),
    ('evaluate', ['--splits=0', '--gm=GM'], '--splits'),                    # a shorthand
    ('demo', ['--estimators=nn,bogus'], "'bogus'"),
    ('evaluate', ['--config.estimators=nn,bogus', '--config.gm=GM'], "'bogus'"),
    ('demo', ['--config.splits=x'], '--config.splits=x'),
    ('demo', ['--config.no_such_key=1'], "'no_such_key'"),
    ('demo', ['--config=no_such_file.py'], 'no_such_file.py'),
    ('demo', ['--config.compilation_cache=maybe'], '--config.compilation_cache'),
    ('build_zoo', ['--preset=huge'], '--preset=huge'),
    ('build_zoo', ['--config.preset=huge'], "'huge'"),
    ('evaluate', [], '--config.gm'),
    ('compute_artifacts', [], '--config.gm'),
    ('demo', ['--attributor_epochs=3'], '--config.cfg.attributor.epochs'),  # refused: its key
    ('demo', ['--gm=GM'], '--gm'),                                          # not the demo's
    ('build_zoo', ['--spaces=rgb'], '--spaces'),
    ('demo', ['stray'], 'stray'),
])
def test_bad_values_exit_2_with_one_line_and_no_traceback(binary, args, token, tmp_path):
  args = [a.replace('GM', str(tmp_path)) for a in args]
  p = _run(binary, [f'--workdir={tmp_path / "out"}', *args], tmp_path)
  assert p.returncode == 2, p.stderr[-2000:]
  lines = p.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(f'{binary}: error: ') and token in lines[0]


def test_the_exact_line_of_each_refusal_kind(tmp_path):
  """The user-facing lines themselves (the one test that pins their words)."""
  out = f'--workdir={tmp_path / "out"}'
  lines = {args[-1]: _run('demo', [out, *args], tmp_path).stderr.strip()
           for args in (['--attributor_epochs=3'], ['--config.splits=0'], ['--gm=x'])}
  assert lines == {
      '--attributor_epochs=3':
          "demo: error: --attributor_epochs is replaced by --config.cfg.attributor.epochs=E "
          "with --config.cfg.attributor.milestones='(A, B)' (the epochs where the learning "
          "rate drops)",
      '--config.splits=0': 'demo: error: --splits: need at least 1 train/validation split, '
                           'got 0',
      '--gm=x': 'demo: error: --gm is not a flag of demo; its settings are the keys of '
                'fpjax/configs/demo.py (--config.KEY=VALUE)'}
