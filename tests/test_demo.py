"""End to end on a tiny zoo: Tables 1-3, Table 2 (a self pair), open set, figures, report.

Sized to run in well under 3 minutes on 2 shared CPU cores: the 'tiny' zoo (4 models x 32
samples of 8x8 'digits'), 2 seeds, three spaces, three baselines, a narrow attributor for 2 epochs.
"""
import json
import os

from absl import flags
import pytest

from fpjax import analysis
from fpjax import zoo


@pytest.fixture(scope='module')
def tiny_zoo(tmp_path_factory):
  root = tmp_path_factory.mktemp('demo')
  zoo.build_zoo(str(root / 'zoo'), preset='tiny', real='digits', progress=False)
  return root


FAST = dict(cfg={'attributor': dict(widths=(8, 16, 32), epochs=2, milestones=(1, 2)),
                 'probe': dict(epochs=30)},
            encoder_steps={'sl': 10, 'ssl': 5})


def test_run_demo_writes_tables_report_and_figures(tiny_zoo, capsys):
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


def test_table2_and_evaluate_binary_on_an_image_folder(tiny_zoo, tmp_path):
  from fpjax.bin import evaluate as evaluate_bin
  gm = analysis.load_gm(str(tiny_zoo / 'zoo'))
  rows = analysis.table2(gm, gm, {'rgb': 'rgb'}, seeds=(0,), classifiers=('probe',),
                         baselines=('Durall20',), cfg=FAST['cfg'])
  assert [r['method'] for r in rows] == ['ManiFPT', 'Durall20']
  assert rows[0]['num_train'] == rows[0]['num_test'] == len(gm.images)
  # The binary on the plain image-folder layout (no zoo.json: no Table 3, --real required).
  flags.FLAGS.unparse_flags()
  flags.FLAGS(['evaluate', f'--gm={tiny_zoo / "zoo" / "images"}', '--real=digits',
               f'--workdir={tmp_path}', '--spaces=dct', '--seeds=1', '--baselines=Marra19',
               '--classifiers=probe'])
  evaluate_bin.main([])
  obj = json.load(open(tmp_path / 'tables.json'))
  assert {r['table'] for r in obj['rows']} == {'1', 'openset'}   # no tags: no Table 3
  assert obj['config']['real'] == 'digits'
  with pytest.raises(ValueError, match='give the real dataset'):
    analysis.load_gm(str(tiny_zoo / 'zoo' / 'images'))
