"""report: row fields, Table 1 as space x estimator x classifier with input controls, the diff
table with intervals and significance, the discussion read off the numbers, the zoo realism
table, and what the demo ran."""
import json
import types

import numpy as np
import pytest

from fpjax.evals import metrics
from fpjax import report


def _acc(table, space, estimator, classifier, mean, std=0.01, params=None, l2=None, fdr=1.0,
         method='ManiFPT', dataset='zoo'):
  return report.make_row(table=table, method=method, space=space, estimator=estimator,
                         classifier=classifier, dataset=dataset, accuracy_mean=mean,
                         accuracy_std=std, accuracies=[mean - std, mean, mean + std],
                         num_splits=3, estimator_params=params, probe_l2=l2, fdr=fdr,
                         num_train=700, num_test=300)


def _diff(a, b, mean, low, high):
  return report.make_row(table='diff', method=f'{report.row_label(a)} vs {report.row_label(b)}',
                         dataset=a['dataset'], a=report.row_label(a), b=report.row_label(b),
                         diff_mean=mean, ci_low=low, ci_high=high,
                         significant=bool(low > 0 or high < 0), num_test=300)


def _rows(baseline_mean=0.9):
  ctrl = _acc('1', 'rgb', 'input', 'probe', 0.60, l2=[1e-3, 1e-3, 1e-3])
  nn = _acc('1', 'rgb', 'nn', 'probe', 0.55, params=['nn'] * 3, l2=[1e-3, 1e-2, 1e-3])
  knn = _acc('1', 'rgb', 'knn_mean', 'probe', 0.70, params=['knn_mean-k10'] * 3,
             l2=[1e-3, 1e-3, 1e-3])
  lpca = _acc('1', 'rgb', 'local_pca', 'probe', 0.61,
              params=['local_pca-k20-m4', 'local_pca-k10-m2', 'local_pca-k20-m4'])
  freq = _acc('1', 'freq', 'knn_mean', 'attributor', 0.50, params=['knn_mean-k10'] * 3)
  base = _acc('1', None, None, 'own', baseline_mean, fdr=float('nan'), method='Yu19')
  t1 = [nn, knn, ctrl, lpca, freq, base]
  best = max((r for r in t1 if r['method'] == 'ManiFPT' and r['estimator'] != 'input'),
             key=lambda r: r['accuracy_mean'])
  gap = best['accuracy_mean'] - baseline_mean
  diffs = [_diff(knn, ctrl, 0.10, 0.06, 0.14),      # significant, above
           _diff(nn, ctrl, -0.05, -0.09, -0.01),    # significant, below
           _diff(lpca, ctrl, 0.01, -0.02, 0.04),    # not significant
           _diff(best, base, gap, gap - 0.03, gap + 0.03)]
  return t1 + diffs + [
      _acc('2', 'rgb', 'knn_mean', 'probe', 0.5, dataset='a -> b'),
      _acc('2', None, None, 'own', 0.8, method='Frank20', dataset='a -> b'),
      report.make_row(table='3', method='ManiFPT', space='rgb', estimator='knn_mean',
                      dataset='zoo', nmi={'upsampling': 0.5, 'loss': None, 'model': 0.7}),
      report.make_row(table='openset', method='ManiFPT', space='rgb', estimator='nn',
                      classifier='prototype', dataset='zoo', auroc=0.75, few_shot_accuracy=0.6,
                      few_shot_new_model_accuracy=0.4)]


def test_make_row_is_strict_and_complete():
  r = report.make_row(table='1', estimator='nn', num_splits=3)
  assert set(r) == set(report.ROW_FIELDS) and r['estimator'] == 'nn' and r['fdr'] is None
  for field in ('estimator', 'estimator_params', 'num_splits', 'probe_l2', 'a', 'b',
                'diff_mean', 'ci_low', 'ci_high', 'significant'):
    assert field in report.ROW_FIELDS
  assert 'num_seeds' not in report.ROW_FIELDS      # replaced by num_splits
  with pytest.raises(ValueError, match="unknown row fields \\['num_seeds'\\]"):
    report.make_row(table='1', num_seeds=3)


def test_row_labels():
  rows = _rows()
  assert report.row_label(rows[1]) == 'ManiFPT RGB knn_mean (probe)'
  assert report.row_label(rows[2]) == 'RGB input (probe)'
  assert report.row_label(rows[5]) == 'Yu19'
  assert report.row_label(report.make_row(table='1', method='ManiFPT', space='dct',
                                          classifier='probe')) == 'ManiFPT DCT (probe)'


def test_write_json_round_trip(tmp_path):
  path = str(tmp_path / 'tables.json')
  rows = _rows()
  rows[6]['significant'] = np.bool_(True)          # numpy scalars from the producers
  report.write_json(path, rows, {'demo': {'estimators': ['nn']}}, {'t': 1.0})
  with open(path) as f:
    obj = json.load(f)                                  # strict JSON: NaN -> null
  assert obj['version'] == 2
  assert all(set(r) == set(report.ROW_FIELDS) for r in obj['rows'])
  assert obj['rows'][5]['fdr'] is None and obj['rows'][6]['significant'] is True
  assert obj['rows'][0]['estimator_params'] == ['nn'] * 3


def test_table1_is_space_by_estimator_by_classifier_with_controls_first():
  md = report.markdown_tables(_rows())
  lines = md.splitlines()
  t1 = [l for l in lines if l.startswith('| RGB | probe') or l.startswith('| FREQ')]
  # The control of RGB/probe sits above its estimators; the chosen settings are compact.
  assert t1 == ['| RGB | probe | input (control) | l2 1e-3 | 60.0 ± 1.0 | 1 |',
                '| RGB | probe | nn | l2 1e-3/1e-2/1e-3 | 55.0 ± 1.0 | 1 |',
                '| RGB | probe | knn_mean | k10, l2 1e-3 | 70.0 ± 1.0 | 1 |',
                '| RGB | probe | local_pca | k20-m4/k10-m2/k20-m4 | 61.0 ± 1.0 | 1 |',
                '| FREQ | attributor | knn_mean | k10 | 50.0 ± 1.0 | 1 |']
  assert '3 train/validation splits (700 train / 300 validation images each)' in md
  assert '| Yu19 | 90.0 ± 1.0 | — |' in md                 # baselines: own table, NaN -> —
  # The diff table: signed points, the interval, a significance mark.
  assert ('| ManiFPT RGB knn_mean (probe) | RGB input (probe) | +10.0 \\* | [+6.0, +14.0] '
          '| yes |') in md
  assert '| ManiFPT RGB local_pca (probe) | RGB input (probe) | +1.0 | [-2.0, +4.0] | no |' in md
  # Tables 2, 3 and the open set get an estimator column when their rows have one.
  assert '| method | estimator | classifier | a -> b |' in md
  assert '| ManiFPT RGB | knn_mean | probe | 50.0 ± 1.0 |' in md
  assert '| Frank20 | — | own | 80.0 ± 1.0 |' in md
  assert '| RGB | knn_mean | 0.500 | 0.700 |' in md           # all-None 'loss' dropped
  assert '| ManiFPT RGB | nn | 0.750 | 60.0 | 40.0 |' in md


def test_rows_without_estimators_render_without_the_column():
  rows = [report.make_row(table='3', method='ManiFPT', space='rgb', dataset='d',
                          nmi={'upsampling': 0.5, 'model': 0.7}),
          report.make_row(table='1', method='ManiFPT', space='rgb', classifier='probe',
                          dataset='d', accuracy_mean=0.8, accuracy_std=0.0, num_train=7,
                          num_test=3)]
  md = report.markdown_tables(rows)
  assert '| RGB | 0.500 | 0.700 |' in md
  assert '| RGB | probe | — | — | 80.0 ± 0.0 | — |' in md
  assert 'Paired differences' not in md


def test_discussion_when_a_baseline_wins():
  text = '\n'.join(report.discussion(_rows(baseline_mean=0.9)))
  assert 'best ManiFPT row is **ManiFPT RGB knn_mean (probe)**, 70.0 ± 1.0 %' in text
  assert ('**A baseline beats ManiFPT**: Yu19 90.0 ± 1.0 % is 20.0 points above the best '
          'ManiFPT row') in text
  # The interval is oriented as the sentence reads: baseline - ManiFPT.
  assert 'Yu19 − ManiFPT RGB knn_mean (probe): [+17.0, +23.0] points, significant' in text
  # Every estimator against its input control, significant or not.
  assert ('of 3 rows with a paired interval, significantly above their control: 1; '
          'significantly below: 1; not significantly different: 1.') in text
  assert 'ManiFPT RGB knn_mean (probe) beats its input control: +10.0 points' in text
  assert 'ManiFPT RGB nn (probe) is below its input control: -5.0 points' in text
  assert ('ManiFPT RGB local_pca (probe) does not differ significantly from its input '
          'control') in text
  assert 'Best row per estimator: nn: ManiFPT RGB nn (probe) 55.0 ± 1.0 %' in text
  assert 'Best row per space: RGB: ManiFPT RGB knn_mean (probe) 70.0 ± 1.0 %; FREQ:' in text
  assert 'Table 2, a -> b: **a baseline wins**, Frank20 80.0 ± 1.0 %' in text
  assert 'Open set: best leave-one-model-out AUROC 0.750 (ManiFPT RGB nn);' in text
  base_wins = report.make_row(table='openset', method='Marra19', classifier='prototype',
                              dataset='zoo', auroc=0.8)
  text = '\n'.join(report.discussion(_rows() + [base_wins]))
  assert 'AUROC 0.800 (Marra19) — **a baseline wins**' in text


def test_discussion_when_manifpt_leads_without_an_interval():
  rows = [r for r in _rows(baseline_mean=0.65) if r['table'] != 'diff']
  text = '\n'.join(report.discussion(rows))
  assert 'A baseline beats' not in text
  assert ('The best ManiFPT row leads the best baseline, Yu19 65.0 ± 1.0 %, by 5.0 points. '
          'No paired interval was computed for this pair.') in text
  assert ('ManiFPT RGB knn_mean (probe) 70.0 ± 1.0 % is above its control 60.0 ± 1.0 % '
          '(+10.0 points; no paired interval computed)') in text


def test_discussion_says_when_the_control_beats_every_estimator():
  rows = [_acc('1', 'rgb', 'input', 'probe', 0.8), _acc('1', 'rgb', 'nn', 'probe', 0.7)]
  text = '\n'.join(report.discussion(rows))
  assert '**An input control beats every manifold estimator**: RGB input (probe)' in text


def test_diff_rows_from_paired_bootstrap_render():
  """The producer's path: metrics.paired_bootstrap's dict goes into make_row as it is."""
  y = np.arange(100) % 4
  ci = metrics.paired_bootstrap([y], [y], [(y + 1) % 4])
  row = report.make_row(table='diff', dataset='d', method='x vs y', a='x', b='y',
                        num_test=100, **ci)
  assert '| x | y | +100.0 \\* | [+100.0, +100.0] | yes |' in report.markdown_tables([row])


def _zoo(tmp_path, with_realism):
  q_old = {'sample_to_manifold': 2.0, 'real_test_to_manifold': 1.0, 'noise_to_manifold': 4.0,
           'diversity': 0.8}
  q_new = dict(q_old, distance_ratio=0.3, recognisable=0.45, recognisable_vs_real=0.5,
               frechet_distance=12.5)
  zoo = {'real': 'mnist5k', 'preset': 'quick', 'seed': 0,
         'models': [{'name': 'gan_a', 'family': 'gan', 'tags': {'family': 'gan'},
                     'quality': q_new if with_realism else q_old},
                    {'name': 'vae_b', 'family': 'vae', 'tags': {'family': 'vae'},
                     'quality': dict(q_new, distance_ratio=0.6, recognisable_vs_real=0.2)
                     if with_realism else q_old}]}
  if with_realism:
    zoo['reference'] = {
        'real_test': {'distance_ratio': 0.33, 'recognisable': 0.9, 'frechet_distance': 1.0},
        'noise': {'distance_ratio': 1.0, 'recognisable': 0.01, 'frechet_distance': 99.0}}
  (tmp_path / 'zoo.json').write_text(json.dumps(zoo))
  return types.SimpleNamespace(name='zoo', path=str(tmp_path), real='mnist5k', bank_size=5000,
                               class_names=['gan_a', 'vae_b'],
                               tags={m['name']: m['tags'] for m in zoo['models']})


def test_report_has_zoo_realism_and_what_the_demo_ran(tmp_path):
  gm = _zoo(tmp_path, with_realism=True)
  config = {'num_images': 64, 'demo': {'estimators': ['nn', 'knn_mean'],
                                       'attributor': {'estimators': ['knn_mean'],
                                                      'why': 'best probe row'},
                                       'num_splits': 3},
            'split': '3 splits, 70/30 per model', 'selection': {'protocol': 'inner 80/20'}}
  md = report.report_markdown(_rows(), gm, config, {'t': 1.0}, {}, str(tmp_path))
  # The protocol section says what the run's config says it did.
  assert '- Splits: 3 splits, 70/30 per model; rows give mean ± std' in md
  assert "- Selection of the estimator's hyperparameters and the probe's l2: inner 80/20;" in md
  assert '## What the demo ran' in md
  assert '- estimators: `nn`, `knn_mean`' in md
  assert '  - why: `"best probe row"`' in md and '- num_splits: `3`' in md
  ran = dict(config, demo={'ran': ['Table 1: the probe on nn.'], 'left_out': ['Wang20 (--x).'],
                           'preset': 'quick'})
  md2 = report.report_markdown(_rows(), gm, ran, {'t': 1.0}, {}, str(tmp_path))
  assert ("## What the demo ran\n\n- Table 1: the probe on nn.\n\nLeft out to fit the demo's "
          "time budget (the flags that run them):\n\n- Wang20 (--x).\n\n- preset: `\"quick\"`"
          in md2)
  assert '## Zoo realism' in md
  assert '| *real digits* | | 0.33 | 90.0 % | — | 1 | — |' in md
  assert '| gan_a | gan | 0.30 | 45.0 % | 50.0 % | 12.5 | 0.80 |' in md
  assert '| vae_b | vae | 0.60 | 45.0 % | 20.0 % | 12.5 | 0.80 |' in md
  assert "recognisable at 35.0 % of real digits' rate; below 50 %: vae_b" in md
  assert "distance to real 0.45 of noise's; above 0.5: vae_b" in md
  assert '**A baseline beats ManiFPT**' in md


def test_zoo_realism_of_an_older_zoo_shows_dashes(tmp_path):
  gm = _zoo(tmp_path, with_realism=False)
  md = report.report_markdown(_rows(), gm, {'num_images': 64}, {}, {}, str(tmp_path))
  # The ratio is derived from the two distances an older zoo stored; the rest is missing.
  assert '| gan_a | gan | 0.50 | — | — | — | 0.80 |' in md
  assert '*real digits*' not in md and 'What the demo ran' not in md
  folder = types.SimpleNamespace(**{**vars(gm), 'tags': None})   # an image folder: no zoo
  assert 'Zoo realism' not in report.report_markdown(_rows(), folder, {'num_images': 64}, {},
                                                      {}, str(tmp_path))
