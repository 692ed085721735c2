"""End to end on a tiny zoo: Tables 1-3, Table 2 (a self pair), open set, figures, report.

The configuration is fpjax/configs/tiny.py: the 'tiny' zoo (4 models x 32 samples of 8x8
'digits'), 2 splits, three spaces, two estimators and the input control, three baselines, one
probe l2 candidate, a narrow attributor for 2 epochs. The artifacts come from the stores
compute_artifacts writes under WORKDIR/artifacts/<gm>/<space>/<estimators>. The binaries
themselves run in tests/test_bin_*.py.
"""
import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from fpjax import configs
from fpjax import evals
from fpjax.data.bad_inputs import read_bad_inputs
from fpjax import store as store_lib
from fpjax import zoo
from fpjax.evals import metrics


@pytest.fixture(scope='module')
def tiny_zoo(tmp_path_factory):
  root = tmp_path_factory.mktemp('demo')
  zoo.build_zoo(str(root / 'zoo'), preset='tiny', real='digits', progress=False)
  return root


def tiny(**changes):
  """configs/tiny.py with `changes`."""
  config = configs.get_config('tiny')
  config.update(changes)
  return config


@pytest.mark.slow
def test_run_demo_reads_the_artifact_stores_and_writes_tables_report_and_figures(tiny_zoo, capsys):
  out = str(tiny_zoo)
  ev = evals.run_demo(configs.get_config('tiny'), out)   # reuses the complete OUT/zoo
  printed = capsys.readouterr().out
  for name in ('tables.md', 'tables.json', 'report.md'):
    assert os.path.getsize(os.path.join(out, name)) > 0
  with open(os.path.join(out, 'tables.md')) as f:
    assert f.read().strip() in printed                  # the tables printed are those written
  with open(os.path.join(out, 'tables.json')) as f:
    obj = json.load(f)
  rows = obj['rows']
  t1 = [r for r in rows if r['table'] == '1']
  # Per space the probe on its estimators and the control (knn_mean only in the estimator
  # spaces RGB and SL), the attributor on best and input; 3 baselines.
  names = {'rgb': ('nn', 'knn_mean', 'input'), 'freq': ('nn', 'input'),
           'sl': ('nn', 'knn_mean', 'input')}
  mani = [(r['space'], r['estimator'], r['classifier']) for r in t1 if r['space']]
  assert mani == [x for s in ('rgb', 'freq', 'sl')
                  for x in [(s, e, 'probe') for e in names[s]]
                  + [(s, e, 'attributor') for e in ('best', 'input')]]
  assert len(t1) == 5 + 4 + 5 + 3
  splits = obj['config']['splits']
  assert [s['split_seed'] for s in splits] == [0, 1]
  for r in t1:
    assert 0.0 <= r['accuracy_mean'] <= 1.0 and len(r['accuracies']) == 2
    assert r['num_splits'] == 2
    assert r['num_train'] == 4 * 22 and r['num_test'] == 4 * 10   # 70/30 of 32 per model
    if r['space']:
      keys = r['estimator_params']
      assert len(keys) == 2
      if r['estimator'] == 'knn_mean':
        assert all(k.startswith('knn_mean-k') for k in keys)
      elif r['estimator'] == 'best':
        assert all(k in ('nn', 'knn_mean-k5', 'knn_mean-k10', 'knn_mean-k20') for k in keys)
      else:
        assert keys == [r['estimator']] * 2
      assert r['probe_l2'] == ([1e-4, 1e-4] if r['classifier'] == 'probe' else None)
  assert all(r['fdr'] is not None and r['fdr'] >= 0 for r in t1)
  # Every selection recorded (space x estimator x split), on the training part only.
  choices = obj['config']['selection']['choices']
  assert len(choices) == (3 + 2 + 3) * 2
  assert all(1 <= c['epochs'] <= 30 and 'seconds' not in c for c in choices)
  # One complete store per space holding every candidate and the control, written by
  # compute_artifacts; Table 1's FDR is that of split 0's validation rows of the chosen key
  # (float64 numpy on all of them at once as the reference).
  stores = os.listdir(os.path.join(out, 'artifacts', 'zoo-tiny-digits'))
  assert {'rgb', 'freq'} <= set(stores) and any(s.startswith('sl-digits-') for s in stores)
  d = os.path.join(out, 'artifacts', 'zoo-tiny-digits', 'rgb', 'nn+knn_mean+input')
  store = store_lib.ArtifactStore.open(d)
  assert store.estimators == ['nn', 'knn_mean-k10', 'knn_mean-k5', 'knn_mean-k20', 'input']
  assert store.num_rows == 4 * 32 and store.config['real'] == 'digits'
  val = ~metrics.split_per_class(store.labels, 0.7, 0)
  rgb_knn = next(r for r in t1 if r['space'] == 'rgb' and r['estimator'] == 'knn_mean'
                 and r['classifier'] == 'probe')
  x = np.asarray(store.artifacts(rgb_knn['estimator_params'][0]))
  ref = metrics.fisher_discriminant_ratio(x[val], store.labels[val])
  assert rgb_knn['fdr'] == pytest.approx(ref, rel=1e-9)
  # Intervals: each estimator row vs its control, the best ManiFPT row vs the best baseline.
  diffs = [r for r in rows if r['table'] == 'diff']
  # (controls: RGB, FREQ, SL; the best vs the best baseline; the best estimator vs the
  # runner-up in RGB and in SL probe rows, the overall pair being one of them)
  assert len(diffs) == (2 + 1) + (1 + 1) + (2 + 1) + 1 + 2
  assert {(d['a'], d['b']) for d in diffs[1:3]} == {
      (f'ManiFPT {s} {a} (probe)', f'ManiFPT {s} {b} (probe)') for s in ('RGB', 'SL')
      for a, b in [sorted(('nn', 'knn_mean'), key=lambda e: -next(
          r['accuracy_mean'] for r in t1 if r['space'] == s.lower() and r['estimator'] == e
          and r['classifier'] == 'probe'))]}
  assert all(r['ci_low'] <= r['diff_mean'] <= r['ci_high'] for r in diffs)
  best_base = max((r for r in t1 if not r['space']), key=lambda r: r['accuracy_mean'])
  assert diffs[0]['b'] == best_base['method']
  t3 = [r for r in rows if r['table'] == '3']
  assert {(r['space'], r['estimator']) for r in t3} == {
      (s, e) for s in ('rgb', 'freq', 'sl') for e in names[s]}
  assert all(0.0 <= r['nmi']['family'] <= 1.0 for r in t3)
  # Every space's estimators + the fit-free baselines (Durall20, Marra19; Marra18 is a learned
  # CNN).
  op = [r for r in rows if r['table'] == 'openset']
  assert [r['method'] for r in op[-2:]] == ['Durall20', 'Marra19'] and len(op) == 8 + 2
  assert os.listdir(os.path.join(out, 'artifacts', 'zoo-tiny-digits', 'freq')) == ['nn+input']
  knn_key = {c['space']: c['key'] for c in choices
             if c['estimator'] == 'knn_mean' and c['split'] == 0}
  assert all(r['estimator_params'] == [knn_key[r['space']]] for r in t3 + op
             if r['estimator'] == 'knn_mean')
  assert obj['config']['baselines'] == ['Durall20', 'Marra19', 'Marra18']
  assert obj['config']['cfg']['attributor'] == dict(widths=[8, 16, 32], epochs=2,
                                                    milestones=[1, 2])
  demo = obj['config']['demo']     # what ran and what was left out, in words (also in the report)
  # ran: the probe, the attributor, the baselines; left out: knn_mean in FREQ, the attributor on
  # the other estimators, six baselines (no Table 2 here).
  assert (len(demo['ran']), len(demo['left_out'])) == (3, 3)
  assert demo['preset'] == 'tiny' and demo['zoo'] is None
  report = open(os.path.join(out, 'report.md')).read()
  for fig in ('confusion.png', 'embedding_pca.png', 'mean_artifact_rgb.png', 'spectra_rgb.png'):
    path = os.path.join(out, 'figures', fig)
    assert os.path.getsize(path) > 1000 and f'figures/{fig}' in report
  assert ev.files['tables.json'] == os.path.join(out, 'tables.json')
  assert not hasattr(evals, 'compute_artifacts')   # one artifact path


@pytest.mark.slow
def test_run_demo_builds_table2_zoos_while_table1_runs(tiny_zoo, tmp_path, monkeypatch):
  # Table 1 on the tiny zoo (given, reused); the two Table 2 zoos (two networks each, a few
  # steps, on the digits 0-4 and 5-9) are trained by one pool of workers started before Table 1.
  from fpjax.zoo import recipes
  mini = dataclasses.replace(
      recipes.PRESETS['tiny'], name='mini', recipes=('gan_tconv_bn_relu_ns', 'vae_tconv_bn_relu'),
      steps={'gan': 20, 'vae': 20}, chunk=20, num_samples=12, classifier_steps=20,
      encoder_steps=20)
  monkeypatch.setitem(recipes.PRESETS, 'mini', mini)
  out = str(tmp_path)
  evals.run_demo(tiny(zoo=str(tiny_zoo / 'zoo'), cross_preset='mini',
                      cross_reals='mnist5k_0to4,mnist5k_5to9', spaces='rgb', splits=1,
                      estimators='nn', estimator_spaces='all', baselines='none',
                      classifiers='probe', cross_baselines='Durall20'), out)
  with open(os.path.join(out, 'tables.json')) as f:
    obj = json.load(f)
  t2 = [r for r in obj['rows'] if r['table'] == '2']
  sets = [f'zoo-mini-mnist5k_{a} -> zoo-mini-mnist5k_{b}' for a, b in (('0to4', '5to9'),
                                                                       ('5to9', '0to4'))]
  assert [(r['dataset'], r['method'], r['estimator']) for r in t2] == [
      (d, m, e) for d in sets for m, e in (('ManiFPT', 'nn'), ('ManiFPT', 'input'),
                                           ('Durall20', None))]
  assert all(0.0 <= r['accuracy_mean'] <= 1.0 and r['num_test'] == 2 * 12 for r in t2)
  for r in ('mnist5k_0to4', 'mnist5k_5to9'):
    meta = zoo.load_zoo(os.path.join(out, f'zoo_mini_{r}'))[1]
    assert meta['real'] == r and [m['name'] for m in meta['models']] == list(mini.recipes)
  assert len(obj['config']['demo']['ran']) == 3   # the probe, no baselines, Table 2


@pytest.mark.slow
def test_table2_and_evaluate_on_a_folder_with_a_bad_file_and_an_npy_real(tiny_zoo, tmp_path,
                                                                         capfd):
  from fpjax import data
  from fpjax.evals.evaluate import settings  # fpjax.evals.evaluate is the function
  gm = evals.load_gm(str(tiny_zoo / 'zoo'))
  feats = evals.open_features(gm, {'rgb': None}, str(tmp_path / 'table2'))
  cfg = settings(configs.get_config('tiny'), 'demo')['cfg']
  rows = evals.table2(feats, feats, evals.make_splits(feats.labels, 1),
                      classifiers=('probe',), baselines=('Durall20',), cfg=cfg)
  assert [(r['method'], r['estimator']) for r in rows] == [
      ('ManiFPT', 'nn'), ('ManiFPT', 'input'), ('Durall20', None)]
  assert rows[0]['num_train'] == rows[0]['num_test'] == feats.num_rows == 4 * 32
  # A complete store is reused, not recomputed.
  d = evals.store_dir(str(tmp_path / 'table2'), gm, 'rgb')
  stamp = os.path.getmtime(os.path.join(d, store_lib.COMPLETE))
  assert evals.artifact_store(gm, 'rgb', str(tmp_path / 'table2')).num_rows == 4 * 32
  assert os.path.getmtime(os.path.join(d, store_lib.COMPLETE)) == stamp

  # evaluate on the plain image-folder layout (no zoo.json: no Table 3, real required), with a
  # truncated PNG (skipped by the artifact job, so no table reads it) and a .npy real source
  # (no labels: 'sl' is skipped with a note).
  folder = tmp_path / 'gm'
  shutil.copytree(tiny_zoo / 'zoo' / 'images', folder)
  model = sorted(os.listdir(folder))[1]
  good = sorted(os.listdir(folder / model))[0]
  (folder / model / 'zz_truncated.png').write_bytes((folder / model / good).read_bytes()[:40])
  real = tmp_path / 'real.npy'
  np.save(real, data.load_real('digits').train_images)
  out = tmp_path / 'eval'
  evals.evaluate(dict(gm=str(folder), real=str(real), spaces='dct,sl', splits=1,
                      baselines='Marra19', classifiers='probe'), str(out))
  obj = json.load(open(out / 'tables.json'))
  assert {r['table'] for r in obj['rows']} == {'1', 'diff', 'openset'}   # no tags: no Table 3
  assert obj['config']['real'] == str(real)
  assert obj['config']['spaces'] == ['dct'] and obj['config']['skipped_spaces'] == ['sl']
  assert obj['config']['num_images'] == 4 * 32                    # the bad file is left out
  t1 = {r['method']: r for r in obj['rows'] if r['table'] == '1' and r['estimator'] != 'input'}
  assert t1['Marra19']['num_train'] + t1['Marra19']['num_test'] == 4 * 32
  assert 'zz_truncated.png' in capfd.readouterr().err   # one line from the artifact job
  bad = read_bad_inputs(evals.store_dir(str(out), evals.load_gm(
      str(folder), str(real)), 'dct'))
  assert [os.path.basename(b['path']) for b in bad] == ['zz_truncated.png']
  with pytest.raises(ValueError):   # an image folder needs its real dataset
    evals.load_gm(str(tiny_zoo / 'zoo' / 'images'))


@pytest.mark.slow
def test_the_study_copies_the_zoo_reference_sl_encoder_only_when_it_is_the_same_training(
    tiny_zoo, tmp_path):
  from fpjax.data import load_real
  from fpjax.models import encoders
  reference = str(tiny_zoo / 'zoo' / 'reference')
  steps = zoo.PRESETS['tiny'].encoder_steps  # what the tiny zoo's reference was trained with
  got = evals.make_encoders(['sl'], 'digits', workdir=str(tmp_path), zoo_reference=reference,
                            encoder_steps={'sl': steps})
  assert os.path.exists(os.path.join(got['sl'], 'zoo_config.json'))  # copied, not trained
  real = load_real('digits')
  again = encoders.train_encoder('sl', real.train_images, real.train_labels, steps=steps, seed=0)
  x = real.test_images[:64]
  np.testing.assert_allclose(np.asarray(encoders.load_encoder(got['sl'])(x)),
                             np.asarray(again(x)), rtol=1e-5, atol=1e-5)
  # Other steps or another seed: a different encoder, trained here.
  other = evals.make_encoders(['sl'], 'digits', workdir=str(tmp_path),
                              zoo_reference=reference, encoder_steps={'sl': 3}, seed=1)
  assert other['sl'] != got['sl']
  assert not os.path.exists(os.path.join(other['sl'], 'zoo_config.json'))
