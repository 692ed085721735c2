"""End to end on a tiny zoo: Tables 1-3, Table 2 (a self pair), open set, figures, report.

Sized to run in a few minutes on 2 shared CPU cores: the 'tiny' zoo (4 models x 32 samples of
8x8 'digits'), 2 seeds, three spaces, three baselines, a narrow attributor for 2 epochs. The
artifacts come from the stores compute_artifacts writes under WORKDIR/artifacts/<gm>/<space>.
"""
import json
import os
import shutil

from absl import flags
import numpy as np
import pytest

from fpjax import analysis
from fpjax import artifact_io
from fpjax import zoo
from fpjax.analysis import metrics, protocols


@pytest.fixture(scope='module')
def tiny_zoo(tmp_path_factory):
  root = tmp_path_factory.mktemp('demo')
  zoo.build_zoo(str(root / 'zoo'), preset='tiny', real='digits', progress=False)
  return root


FAST = dict(cfg={'attributor': dict(widths=(8, 16, 32), epochs=2, milestones=(1, 2)),
                 'probe': dict(epochs=30)},
            encoder_steps={'sl': 10, 'ssl': 5})


def test_run_demo_reads_the_artifact_stores_and_writes_tables_report_and_figures(tiny_zoo, capsys):
  out = str(tiny_zoo)
  ev = analysis.run_demo(out, preset='tiny', real='digits', cross_reals=(),
                         spaces=('rgb', 'freq', 'sl'), seeds=2,
                         baselines=('Durall20', 'Marra19', 'Marra18'), **FAST)
  printed = capsys.readouterr().out
  assert 'Table 1' in printed and 'Table 3' in printed and 'Open set' in printed
  for name in ('tables.md', 'tables.json', 'report.md'):
    assert os.path.getsize(os.path.join(out, name)) > 0
  with open(os.path.join(out, 'tables.json')) as f:
    obj = json.load(f)
  rows = obj['rows']
  t1 = [r for r in rows if r['table'] == '1']
  # 3 spaces x 2 classifiers + 3 baselines.
  assert len(t1) == 9
  for r in t1:
    assert 0.0 <= r['accuracy_mean'] <= 1.0 and len(r['accuracies']) == 2
    assert r['num_train'] == 4 * 22 and r['num_test'] == 4 * 10   # 70/30 of 32 per model
  assert all(r['fdr'] is not None and r['fdr'] >= 0 for r in t1)
  # One complete store per space, written by compute_artifacts; Table 1's FDR is that of the
  # store's validation rows (float64 numpy on all of them at once as the reference).
  stores = os.listdir(os.path.join(out, 'artifacts', 'zoo-tiny-digits'))
  assert {'rgb', 'freq'} <= set(stores) and any(s.startswith('sl-digits-') for s in stores)
  store = artifact_io.ArtifactStore.open(os.path.join(out, 'artifacts', 'zoo-tiny-digits', 'rgb'))
  assert store.num_rows == 4 * 32 and store.config['real'] == 'digits'
  val = ~metrics.split_per_class(store.labels, 0.7, 0)
  ref = metrics.fisher_discriminant_ratio(np.asarray(store.artifact)[val], store.labels[val])
  rgb_probe = next(r for r in t1 if r['space'] == 'rgb' and r['classifier'] == 'probe')
  assert rgb_probe['fdr'] == pytest.approx(ref, rel=1e-9)
  t3 = [r for r in rows if r['table'] == '3']
  assert {r['space'] for r in t3} == {'rgb', 'freq', 'sl'}
  assert all(0.0 <= r['nmi']['family'] <= 1.0 for r in t3)
  # 3 spaces + the fit-free baselines (Durall20, Marra19; Marra18 is a learned CNN).
  assert [r['space'] or r['method'] for r in rows if r['table'] == 'openset'] == [
      'rgb', 'freq', 'sl', 'Durall20', 'Marra19']
  report = open(os.path.join(out, 'report.md')).read()
  for fig in ('confusion.png', 'embedding_pca.png', 'mean_artifact_rgb.png', 'spectra_rgb.png'):
    path = os.path.join(out, 'figures', fig)
    assert os.path.getsize(path) > 1000 and f'figures/{fig}' in report
  assert ev.files['tables.json'] == os.path.join(out, 'tables.json')
  assert not hasattr(analysis, 'compute_artifacts')   # one artifact path


def test_table2_and_the_binary_on_a_folder_with_a_bad_file_and_an_npy_real(tiny_zoo, tmp_path,
                                                                           capfd, caplog):
  from fpjax import data
  from fpjax.bin import evaluate as evaluate_bin
  gm = analysis.load_gm(str(tiny_zoo / 'zoo'))
  feats = analysis.open_features(gm, {'rgb': None}, str(tmp_path / 'table2'))
  rows = analysis.table2(feats, feats, seeds=(0,), classifiers=('probe',),
                         baselines=('Durall20',), cfg=FAST['cfg'])
  assert [r['method'] for r in rows] == ['ManiFPT', 'Durall20']
  assert rows[0]['num_train'] == rows[0]['num_test'] == feats.num_rows == 4 * 32
  # A complete store is reused, not recomputed.
  d = protocols.store_dir(str(tmp_path / 'table2'), gm, 'rgb')
  stamp = os.path.getmtime(os.path.join(d, artifact_io.COMPLETE))
  assert protocols.artifact_store(gm, 'rgb', str(tmp_path / 'table2')).num_rows == 4 * 32
  assert os.path.getmtime(os.path.join(d, artifact_io.COMPLETE)) == stamp

  # The binary on the plain image-folder layout (no zoo.json: no Table 3, --real required), with
  # a truncated PNG (skipped by the artifact job, so no table reads it) and a .npy real source
  # (no labels: 'sl' is skipped with a note).
  folder = tmp_path / 'gm'
  shutil.copytree(tiny_zoo / 'zoo' / 'images', folder)
  model = sorted(os.listdir(folder))[1]
  good = sorted(os.listdir(folder / model))[0]
  (folder / model / 'zz_truncated.png').write_bytes((folder / model / good).read_bytes()[:40])
  real = tmp_path / 'real.npy'
  np.save(real, data.load_real('digits').train_images)
  out = tmp_path / 'eval'
  flags.FLAGS.unparse_flags()
  flags.FLAGS(['evaluate', f'--gm={folder}', f'--real={real}', f'--workdir={out}',
               '--spaces=dct,sl', '--seeds=1', '--baselines=Marra19', '--classifiers=probe'])
  evaluate_bin.main([])
  obj = json.load(open(out / 'tables.json'))
  assert {r['table'] for r in obj['rows']} == {'1', 'openset'}   # no tags: no Table 3
  assert obj['config']['real'] == str(real)
  assert obj['config']['spaces'] == ['dct'] and obj['config']['skipped_spaces'] == ['sl']
  assert obj['config']['num_images'] == 4 * 32                    # the bad file is left out
  t1 = {r['method']: r for r in obj['rows'] if r['table'] == '1'}
  assert t1['Marra19']['num_train'] + t1['Marra19']['num_test'] == 4 * 32
  assert 'zz_truncated.png' in capfd.readouterr().err   # one line from the artifact job
  assert "space 'sl' skipped: the real source" in caplog.text
  bad = artifact_io.read_bad_inputs(protocols.store_dir(str(out), analysis.load_gm(
      str(folder), str(real)), 'dct'))
  assert [os.path.basename(b['path']) for b in bad] == ['zz_truncated.png']
  with pytest.raises(ValueError, match='give the real dataset'):
    analysis.load_gm(str(tiny_zoo / 'zoo' / 'images'))
