"""Two fresh processes evaluating the same GM dataset with the tiny demo configuration write the
same tables.json.

The GM dataset is a small zoo-shaped folder (zoo.json with design-knob tags, images/<model>/
*.png: 8x8 'digits' images, each model adding its own faint pattern), written here once: the
zoo is the input (its own training is checked for determinism in test_zoo.py). Each process
recomputes everything else from scratch: the artifact stores (nn, knn_mean's candidates, the
input control), the SL encoder, the probe and its inner-validation choices, the attributor, two
baselines (linear, CNN), Table 3's PCA + k-means and the open set. Everything but
the timing fields (report.TIMING_FIELDS wherever they sit, 'timings') must be identical, and so
must the stored artifacts of every estimator. Checked on XLA:CPU; see the README for other backends.
"""
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from fpjax import fileio
from fpjax import store
from fpjax import data
from fpjax import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tiny demo configuration (tests/test_demo.py), one split, two estimators (knn_mean's
# candidates chosen on the inner validation split) and the input control.
FLAGS = ['--config.spaces=rgb,sl', '--config.splits=1', '--config.estimators=nn,knn_mean',
         '--config.attributor_estimators=nn', '--config.baselines=Durall20,Marra18',
         '--config.classifiers=probe,attributor', '--config.cfg.attributor.epochs=2',
         '--config.cfg.attributor.milestones=(1, 1)', '--config.encoder_steps.sl=10',
         '--config.encoder_steps.ssl=10']
TAGS = [dict(family='gan', upsampling='nearest', loss='hinge'),
        dict(family='gan', upsampling='transposed', loss='hinge'),
        dict(family='vae', upsampling='nearest', loss='elbo'),
        dict(family='flow', upsampling='n/a', loss='likelihood')]


def _tiny_zoo(root):
  digits = data.load_real('digits').train_images[..., 0].astype(np.float64)
  models = []
  for m, tags in enumerate(TAGS):
    rng = np.random.default_rng(m)
    name = f'model_{m}'
    os.makedirs(os.path.join(root, 'images', name))
    pattern = rng.normal(0.0, 12.0, (8, 8))
    for i in range(32):
      a = digits[rng.integers(len(digits))] + pattern + rng.normal(0.0, 4.0, (8, 8))
      Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8)).save(
          os.path.join(root, 'images', name, f'{i:06d}.png'))
    models.append({'name': name, 'tags': tags})
  fileio.save_json(os.path.join(root, 'zoo.json'), {
      'real': 'digits', 'preset': 'tiny', 'seed': 0, 'num_samples': 32,
      'image_shape': [8, 8, 1], 'models': models})


def _evaluate(gm, workdir):
  out = subprocess.run([sys.executable, '-m', 'fpjax.bin.evaluate', f'--config.gm={gm}',
                        f'--workdir={workdir}'] + FLAGS,
                       capture_output=True, text=True, timeout=900, cwd=ROOT)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(workdir, 'tables.json')) as f:
    return json.load(f)


def _without_timings(obj):
  """tables.json without 'timings' and without every report.TIMING_FIELDS key, wherever it
  sits (rows and config entries)."""
  if isinstance(obj, dict):
    return {k: _without_timings(v) for k, v in obj.items()
            if k not in report.TIMING_FIELDS and k != 'timings'}
  if isinstance(obj, list):
    return [_without_timings(v) for v in obj]
  return obj


@pytest.mark.slow
def test_two_fresh_processes_write_identical_tables(tmp_path):
  gm = tmp_path / 'zoo'
  _tiny_zoo(str(gm))
  a, b = tmp_path / 'a', tmp_path / 'b'
  first, second = _evaluate(gm, a), _evaluate(gm, b)
  assert {'1', '3', 'openset'} <= {r['table'] for r in first['rows']}
  t1 = [r for r in first['rows'] if r['table'] == '1']
  mani = {(r['space'], r['estimator'], r['classifier']) for r in t1 if r['space']}
  assert mani == {(s, e, c) for s in ('rgb', 'sl') for e, c in [
      ('nn', 'probe'), ('knn_mean', 'probe'), ('input', 'probe'), ('nn', 'attributor')]}
  assert len(t1) == len(mani) + 2
  assert first['timings'] and all(r['seconds'] is not None for r in first['rows']
                                  if r['table'] == '1')
  assert _without_timings(first) == _without_timings(second)
  for space in ('rgb', 'sl-digits-steps10-seed0'):
    stores = [store.ArtifactStore.open(d / 'artifacts' / 'zoo-tiny-digits' / space /
                                             'nn+knn_mean+input') for d in (a, b)]
    assert stores[0].estimators == ['nn', 'knn_mean-k10', 'knn_mean-k5', 'knn_mean-k20', 'input']
    for key in stores[0].estimators:
      np.testing.assert_array_equal(np.asarray(stores[0].artifacts(key)),
                                    np.asarray(stores[1].artifacts(key)), err_msg=key)
