"""report: row fields, Table 1 as space x estimator x classifier with input controls, the diff
table with intervals and significance, the discussion read off the numbers, the zoo realism
table, and what the demo ran."""
import json
import re
import types

import numpy as np
import pytest

from fpjax.evals import metrics
from fpjax import report


def _cells(md: str) -> list:
  """The markdown tables' rows as lists of stripped cells."""
  return [[c.strip() for c in l.strip().strip('|').split('|')] for l in md.splitlines()
          if l.startswith('|')]


def _lines(text, *tokens) -> list:
  """The lines of `text` (a str or a list of lines) holding every token (labels, numbers)."""
  lines = text.splitlines() if isinstance(text, str) else text
  return [l for l in lines if all(t in l for t in tokens)]


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
  with pytest.raises(ValueError, match='num_seeds'):   # the error names the unknown field
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
  cells = _cells(md)
  t1 = [c for c in cells if c[:2] == ['RGB', 'probe'] or c[0] == 'FREQ']
  # The control of RGB/probe sits above its estimators; the chosen settings are compact.
  assert t1 == [['RGB', 'probe', 'input (control)', 'l2 1e-3', '60.0 ± 1.0', '1'],
                ['RGB', 'probe', 'nn', 'l2 1e-3/1e-2/1e-3', '55.0 ± 1.0', '1'],
                ['RGB', 'probe', 'knn_mean', 'k10, l2 1e-3', '70.0 ± 1.0', '1'],
                ['RGB', 'probe', 'local_pca', 'k20-m4/k10-m2/k20-m4', '61.0 ± 1.0', '1'],
                ['FREQ', 'attributor', 'knn_mean', 'k10', '50.0 ± 1.0', '1']]
  # The caption gives the splits and their sizes.
  assert _lines(md, '3 ', '700', '300')
  assert ['Yu19', '90.0 ± 1.0', '—'] in cells               # baselines: own table, NaN -> —
  # The diff table: signed points, the interval, a significance mark.
  assert ['ManiFPT RGB knn_mean (probe)', 'RGB input (probe)', '+10.0 \\*', '[+6.0, +14.0]',
          'yes'] in cells
  assert ['ManiFPT RGB local_pca (probe)', 'RGB input (probe)', '+1.0', '[-2.0, +4.0]',
          'no'] in cells
  # Tables 2, 3 and the open set get an estimator column when their rows have one.
  assert ['method', 'estimator', 'classifier', 'a -> b'] in cells
  assert ['ManiFPT RGB', 'knn_mean', 'probe', '50.0 ± 1.0'] in cells
  assert ['Frank20', '—', 'own', '80.0 ± 1.0'] in cells
  assert ['RGB', 'knn_mean', '0.500', '0.700'] in cells        # all-None 'loss' dropped
  assert ['ManiFPT RGB', 'nn', '0.750', '60.0', '40.0'] in cells


def test_rows_without_estimators_render_without_the_column():
  rows = [report.make_row(table='3', method='ManiFPT', space='rgb', dataset='d',
                          nmi={'upsampling': 0.5, 'model': 0.7}),
          report.make_row(table='1', method='ManiFPT', space='rgb', classifier='probe',
                          dataset='d', accuracy_mean=0.8, accuracy_std=0.0, num_train=7,
                          num_test=3)]
  md = report.markdown_tables(rows)
  cells = _cells(md)
  assert ['RGB', '0.500', '0.700'] in cells
  assert ['RGB', 'probe', '—', '—', '80.0 ± 0.0', '—'] in cells
  assert md.count('### ') == 2                        # Tables 1 and 3: no diff table


def test_discussion_when_a_baseline_wins():
  lines = report.discussion(_rows(baseline_mean=0.9))
  # First: the best ManiFPT row and its accuracy.
  assert 'ManiFPT RGB knn_mean (probe)' in lines[0] and '70.0 ± 1.0' in lines[0]
  # The baseline 20 points above it, flagged (bold), with the paired interval oriented as the
  # statement reads: baseline - ManiFPT.
  won = _lines(lines, 'Yu19', '90.0 ± 1.0', '20.0', 'ManiFPT RGB knn_mean (probe)')
  assert len(won) == 1 and '**' in won[0] and '[+17.0, +23.0]' in won[0]
  assert won[0].index('Yu19 −') < won[0].index('[+17.0')
  # Every estimator against its input control: the tally of significant / not significant
  # intervals (1 above, 1 below, 1 neither of 3), then one line per estimator.
  head = [l for l in lines if 'control' in l and re.search(r'\b3\b', l)]
  assert len(head) == 1 and re.findall(r': (\d+)', head[0]) == ['1', '1', '1']
  for label, points, word in (('knn_mean', '+10.0', 'beats'), ('nn', '-5.0', 'below'),
                              ('local_pca', '+1.0', 'not')):
    row = _lines(lines, f'ManiFPT RGB {label} (probe)', 'control', points)
    assert len(row) == 1 and word in row[0], (label, row)
  assert _lines(lines, 'nn: ManiFPT RGB nn (probe) 55.0 ± 1.0')         # best per estimator
  assert _lines(lines, 'RGB: ManiFPT RGB knn_mean (probe) 70.0 ± 1.0', 'FREQ:')  # per space
  t2 = _lines(lines, 'a -> b', 'Frank20', '80.0 ± 1.0')
  assert len(t2) == 1 and 'baseline' in t2[0] and '**' in t2[0]
  assert _lines(lines, '0.750', 'ManiFPT RGB nn')                       # open set's best
  base_wins = report.make_row(table='openset', method='Marra19', classifier='prototype',
                              dataset='zoo', auroc=0.8)
  won = _lines(report.discussion(_rows() + [base_wins]), '0.800', 'Marra19')
  assert len(won) == 1 and '**' in won[0]


def test_discussion_when_manifpt_leads_without_an_interval():
  rows = [r for r in _rows(baseline_mean=0.65) if r['table'] != 'diff']
  lines = report.discussion(rows)
  lead = _lines(lines, 'Yu19', '65.0 ± 1.0', '5.0')
  # Not flagged (ManiFPT leads), and no interval was computed for the pair.
  assert len(lead) == 1 and '**' not in lead[0] and '[' not in lead[0]
  ctrl = _lines(lines, 'ManiFPT RGB knn_mean (probe)', '70.0 ± 1.0', '60.0 ± 1.0', '+10.0')
  assert len(ctrl) == 1 and 'above' in ctrl[0]


def test_discussion_says_when_the_control_beats_every_estimator():
  rows = [_acc('1', 'rgb', 'input', 'probe', 0.8), _acc('1', 'rgb', 'nn', 'probe', 0.7)]
  flagged = _lines(report.discussion(rows), '**', 'RGB input (probe)', '80.0 ± 1.0',
                   'ManiFPT RGB nn (probe)')
  assert len(flagged) == 1
  rows[0]['accuracy_mean'] = 0.6                           # the estimator leads: no flag
  assert not _lines(report.discussion(rows), '**', 'RGB input (probe)', 'ManiFPT RGB nn (probe)')


def test_diff_rows_from_paired_bootstrap_render():
  """The producer's path: metrics.paired_bootstrap's dict goes into make_row as it is."""
  y = np.arange(100) % 4
  ci = metrics.paired_bootstrap([y], [y], [(y + 1) % 4])
  row = report.make_row(table='diff', dataset='d', method='x vs y', a='x', b='y',
                        num_test=100, **ci)
  assert ['x', 'y', '+100.0 \\*', '[+100.0, +100.0]', 'yes'] in _cells(
      report.markdown_tables([row]))


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


def _sections(md: str) -> dict:
  """report.md's '## ' sections: {heading: body lines}."""
  out, head = {}, None
  for line in md.splitlines():
    if line.startswith('## '):
      head = line[3:]
      out[head] = []
    elif head is not None:
      out[head].append(line)
  return out


def test_report_has_zoo_realism_and_what_the_demo_ran(tmp_path):
  gm = _zoo(tmp_path, with_realism=True)
  config = {'num_images': 64, 'demo': {'estimators': ['nn', 'knn_mean'],
                                       'attributor': {'estimators': ['knn_mean'],
                                                      'why': 'best probe row'},
                                       'num_splits': 3},
            'split': '3 splits, 70/30 per model', 'selection': {'protocol': 'inner 80/20'}}
  md = report.report_markdown(_rows(), gm, config, {'t': 1.0}, {}, str(tmp_path))
  sec = _sections(md)
  assert list(sec) == ['What the demo ran', 'Results', 'Zoo realism', 'Discussion', 'Protocol',
                       'Configuration', 'Timings (seconds)']
  # The protocol section says what the run's config says it did.
  assert _lines(sec['Protocol'], '3 splits, 70/30 per model')
  assert _lines(sec['Protocol'], 'inner 80/20')
  # The demo's settings as nested bullets.
  bullets = [l for l in sec['What the demo ran'] if l.lstrip().startswith('- ')]
  assert bullets == ['- estimators: `nn`, `knn_mean`', '- attributor:',
                     '  - estimators: `knn_mean`', '  - why: `"best probe row"`',
                     '- num_splits: `3`']
  ran = dict(config, demo={'ran': ['Table 1: the probe on nn.'], 'left_out': ['Wang20 (--x).'],
                           'preset': 'quick'})
  sec2 = _sections(report.report_markdown(_rows(), gm, ran, {'t': 1.0}, {}, str(tmp_path)))
  # What ran, what was left out (after a line introducing it), then the other settings.
  demo = [l for l in sec2['What the demo ran'] if l]
  assert demo[0] == '- Table 1: the probe on nn.'
  assert demo[2:] == ['- Wang20 (--x).', '- preset: `"quick"`'] and 'Wang20' not in demo[1]
  # The zoo's realism: the reference rows, then one row per model; '—' where a field is missing.
  cells = _cells('\n'.join(sec['Zoo realism']))
  assert ['*real digits*', '', '0.33', '90.0 %', '—', '1', '—'] in cells
  assert ['gan_a', 'gan', '0.30', '45.0 %', '50.0 %', '12.5', '0.80'] in cells
  assert ['vae_b', 'vae', '0.60', '45.0 %', '20.0 %', '12.5', '0.80'] in cells
  # The median models' figures and the models past the thresholds.
  assert _lines(sec['Zoo realism'], '35.0 %', 'vae_b')
  assert _lines(sec['Zoo realism'], '0.45', 'vae_b')
  # The discussion section is `discussion`'s lines; the results are the tables.
  assert [l for l in sec['Discussion'] if l] == report.discussion(_rows())
  assert report.markdown_tables(_rows()) in '\n'.join(sec['Results'])


def test_zoo_realism_of_an_older_zoo_shows_dashes(tmp_path):
  gm = _zoo(tmp_path, with_realism=False)
  sec = _sections(report.report_markdown(_rows(), gm, {'num_images': 64}, {}, {},
                                         str(tmp_path)))
  # The ratio is derived from the two distances an older zoo stored; the rest is missing.
  cells = _cells('\n'.join(sec['Zoo realism']))
  assert ['gan_a', 'gan', '0.50', '—', '—', '—', '0.80'] in cells
  assert not [c for c in cells if c[0] == '*real digits*'] and 'What the demo ran' not in sec
  folder = types.SimpleNamespace(**{**vars(gm), 'tags': None})   # an image folder: no zoo
  assert 'Zoo realism' not in _sections(report.report_markdown(
      _rows(), folder, {'num_images': 64}, {}, {}, str(tmp_path)))
