"""The binaries end to end on the tiny zoo: build_zoo and the demo run to completion; evaluate and
the demo exit 143 after a SIGTERM and resume; the resume policy for changed settings and for a
corrupt checkpoint.

The resume policy (each refusal one stderr line, exit 2, nothing changed on disk):
- kept: complete zoos, encoders and artifact stores; a partial store resumes from its latest
  checkpoint when the store's settings (real, gm, space, estimators, k, precision) are unchanged,
  whatever else changed (splits, baselines, classifiers, selection: the tables are recomputed);
- refused: a partial store whose checkpoint was made with other store settings, and a
  checkpoint that cannot be read (the line names the folder to delete to start that store over).

The SIGTERM is sent by the test once the job has committed its first batch: the artifact job's
`on_batch` hook writes a marker file and waits for the signal, so nothing depends on timing.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from fpjax import configs
from fpjax import store as store_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The binary, its first artifact batch waiting for a SIGTERM: argv = marker, binary, flags...
WAIT_FOR_SIGTERM = textwrap.dedent("""
    import functools, importlib, os, signal, sys, time
    from fpjax import artifact_job
    from fpjax.bin import flags
    marker, binary = sys.argv.pop(1), sys.argv.pop(1)
    def wait_for_sigterm(done):
      if done != 1 or os.path.exists(marker):
        return
      seen = []
      previous = signal.getsignal(signal.SIGTERM)
      def on_term(signum, frame):
        seen.append(signum)
        previous(signum, frame)   # the job's own handler: stop after this batch
      signal.signal(signal.SIGTERM, on_term)
      open(marker, 'w').close()
      while not seen:
        time.sleep(0.01)
    artifact_job.compute_artifacts = functools.partial(artifact_job.compute_artifacts,
                                                       on_batch=wait_for_sigterm)
    flags.run(importlib.import_module(f'fpjax.bin.{binary}').main, binary)
""")
STORE = os.path.join('artifacts', 'zoo-tiny-digits', 'rgb')


def _env():
  return dict(os.environ, JAX_PLATFORMS='cpu')


def _run(binary, *args):
  return subprocess.run([sys.executable, '-m', f'fpjax.bin.{binary}', *args], cwd=ROOT,
                        env=_env(), capture_output=True, text=True, timeout=1800)


def _sigterm_after_first_batch(tmp_path, binary, *args):
  """Runs the binary until its first artifact batch is committed, sends SIGTERM, waits."""
  marker, log = tmp_path / 'first_batch_done', tmp_path / f'{binary}.stderr'
  with open(log, 'w') as stderr:
    p = subprocess.Popen([sys.executable, '-c', WAIT_FOR_SIGTERM, str(marker), binary, *args],
                         cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=stderr)
    try:
      while not marker.exists():
        try:
          p.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
          continue
        pytest.fail(f'{binary} ended before its first batch: {log.read_text()[-3000:]}')
      p.send_signal(signal.SIGTERM)
      p.wait(timeout=600)
    finally:
      p.kill()
  return p.returncode, log.read_text()


def _user_lines(stderr: str, binary: str) -> list:
  """stderr's own lines of the binary (not absl's log lines, not progress bars)."""
  assert 'Traceback' not in stderr, stderr[-3000:]
  return [l for line in stderr.splitlines() for l in line.split('\r')
          if l.startswith(f'{binary}:')]


def _tables(workdir):
  with open(os.path.join(workdir, 'tables.json')) as f:
    return json.load(f)


@pytest.fixture(scope='module')
def tiny_zoo(tmp_path_factory):
  zoo = tmp_path_factory.mktemp('bin') / 'zoo'
  p = _run('build_zoo', f'--workdir={zoo}', '--config.preset=tiny', '--config.real=digits')
  assert p.returncode == 0, p.stderr[-3000:]
  return zoo


@pytest.mark.slow
def test_build_zoo_binary_writes_the_tiny_zoo(tiny_zoo):
  with open(tiny_zoo / 'zoo.json') as f:
    meta = json.load(f)
  preset = configs.zoo.get_config('tiny')
  assert (meta['preset'], meta['real'], meta['num_samples']) == ('tiny', 'digits', 32)
  assert sorted(m['name'] for m in meta['models']) == sorted(preset.recipes)
  for m in meta['models']:
    assert len(os.listdir(tiny_zoo / 'images' / m['name'])) == preset.num_samples


@pytest.mark.slow
def test_demo_binary_exits_143_on_sigterm_then_resumes_to_completion(tiny_zoo, tmp_path):
  out = tmp_path / 'demo'
  shutil.copytree(tiny_zoo, out / 'zoo')     # a complete zoo in place is reused
  args = ['--config=tiny', f'--workdir={out}', '--config.artifacts.batch_size=32']
  rc, err = _sigterm_after_first_batch(tmp_path, 'demo', *args)
  assert rc == 143
  [line] = _user_lines(err, 'demo')
  assert 'SIGTERM' in line and str(out / STORE) in line
  store = next((out / STORE).iterdir())
  assert not store_lib.is_complete(str(store))
  assert os.listdir(store / 'checkpoints') == ['2']   # batches 1-2 of 4 committed
  encoders = sorted(os.listdir(out / 'encoders'))
  stamps = [os.path.getmtime(out / 'encoders' / e / 'config.json') for e in encoders]
  # Resumed with other table settings (one split): the store resumes, the encoders are kept.
  p = _run('demo', *args, '--config.splits=1')
  assert p.returncode == 0, p.stderr[-3000:]
  assert store_lib.is_complete(str(store))
  assert [os.path.getmtime(out / 'encoders' / e / 'config.json') for e in encoders] == stamps
  obj = _tables(out)
  t1 = [r for r in obj['rows'] if r['table'] == '1']
  assert len(t1) == 5 + 4 + 5 + 3 and all(r['num_splits'] == 1 for r in t1)
  assert {r['table'] for r in obj['rows']} == {'1', 'diff', '3', 'openset'}
  with open(out / 'tables.md') as f:
    assert f.read().strip() in p.stdout                 # printed as written
  for name in ('report.md', 'figures/confusion.png', 'figures/embedding_pca.png'):
    assert os.path.getsize(out / name) > 0


@pytest.mark.slow
def test_evaluate_binary_exits_143_on_sigterm_and_the_resume_policy(tiny_zoo, tmp_path):
  out = tmp_path / 'eval'
  # The flags of earlier versions, mapped to their config keys.
  old = [f'--gm={tiny_zoo}', f'--workdir={out}', '--spaces=rgb', '--splits=1', '--estimators=nn',
         '--baselines=none', '--classifiers=probe', '--batch_size=32']
  rc, err = _sigterm_after_first_batch(tmp_path, 'evaluate', *old)
  assert rc == 143 and len(_user_lines(err, 'evaluate')) == 1
  store = out / STORE / 'nn+input'
  checkpoint = store / 'checkpoints' / '2'
  assert checkpoint.is_dir() and not store_lib.is_complete(str(store))
  new = [f'--config.gm={tiny_zoo}', f'--workdir={out}', '--config.spaces=rgb',
         '--config.estimators=nn', '--config.baselines=none', '--config.classifiers=probe',
         '--config.artifacts.batch_size=32']
  # Other store settings (precision) on the partial store: refused, nothing changed.
  p = _run('evaluate', *new, '--config.artifacts.precision=fast')
  assert p.returncode == 2
  [line] = _user_lines(p.stderr, 'evaluate')
  assert line.startswith('evaluate: error: ') and str(store) in line
  assert os.listdir(store / 'checkpoints') == ['2']
  # A corrupt checkpoint: refused, the line names the folder to delete.
  for path, _, files in os.walk(checkpoint):
    for name in files:
      if name not in ('commit_success.txt', '_CHECKPOINT_METADATA'):
        with open(os.path.join(path, name), 'wb') as f:
          f.write(b'torn')
  p = _run('evaluate', *new)
  assert p.returncode == 2
  [line] = _user_lines(p.stderr, 'evaluate')
  assert str(store / 'checkpoints') in line
  shutil.rmtree(store / 'checkpoints')
  # Started over, with other table settings (two splits): complete.
  p = _run('evaluate', *new, '--config.splits=2')
  assert p.returncode == 0, p.stderr[-3000:]
  assert store_lib.ArtifactStore.open(str(store)).num_rows == 4 * 32
  t1 = [r for r in _tables(out)['rows'] if r['table'] == '1']
  assert [(r['estimator'], r['num_splits']) for r in t1] == [('nn', 2), ('input', 2)]
