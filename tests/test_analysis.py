"""fpjax.analysis metrics, Table 3 clustering/NMI and the writers, against hand-computed values."""
import json
import math

import numpy as np
import pytest

from fpjax import analysis
from fpjax.analysis import metrics, protocols, report


def test_accuracy_and_mean_std_hand_values():
  assert metrics.accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
  m, s = metrics.mean_std([0.5, 0.7, 0.9])
  assert m == pytest.approx(0.7)
  assert s == pytest.approx(math.sqrt(((0.2) ** 2 + 0 + 0.2 ** 2) / 3))  # ddof 0
  assert metrics.mean_std([0.3]) == (0.3, 0.0)
  with pytest.raises(ValueError):
    metrics.accuracy([0, 1], [0])
  with pytest.raises(ValueError):
    metrics.mean_std([])


def test_fdr_is_the_stats_implementation_and_hand_value():
  assert analysis.fisher_discriminant_ratio is __import__('fpjax').stats.fisher_discriminant_ratio
  # class means 1 and 5, grand mean 3: S_B = 2*4 + 2*4 = 16; S_W = 1+1+1+1 = 4.
  x = np.array([[0.0], [2.0], [4.0], [6.0]])
  assert metrics.fisher_discriminant_ratio(x, [0, 0, 1, 1]) == pytest.approx(4.0)
  # 2-D: second coordinate is pure within-class noise: S_W += 4 * 1, S_B unchanged.
  x2 = np.array([[0.0, 1], [2, -1], [4, 1], [6, -1]])
  assert metrics.fisher_discriminant_ratio(x2, [0, 0, 1, 1]) == pytest.approx(16 / 8)


def test_confusion_matrix_hand_value():
  cm = metrics.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
  np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
  with pytest.raises(ValueError, match='outside'):
    metrics.confusion_matrix([0, 3], [0, 1], 3)


def test_nmi_hand_values():
  assert metrics.nmi([0, 0, 1, 1], [5, 5, 7, 7]) == pytest.approx(1.0)
  assert metrics.nmi([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-12)
  # a = [0,0,1,1], b = [0,0,0,1]: MI and entropies by hand (natural log), arithmetic mean norm.
  mi = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
  ha = math.log(2)
  hb = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
  assert metrics.nmi([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(mi / ((ha + hb) / 2))


def test_split_per_class_is_70_30_and_deterministic():
  labels = np.repeat([0, 1, 2], [10, 20, 7])
  m = metrics.split_per_class(labels, 0.7, seed=3)
  assert [int(m[labels == c].sum()) for c in range(3)] == [7, 14, 5]
  np.testing.assert_array_equal(m, metrics.split_per_class(labels, 0.7, seed=3))
  assert not np.array_equal(m, metrics.split_per_class(labels, 0.7, seed=4))
  with pytest.raises(ValueError, match="class 1 has 1 samples"):
    metrics.split_per_class(np.array([0, 0, 0, 1]), 0.7)


def test_knob_nmi_recovers_the_knob_that_shapes_the_features():
  rng = np.random.default_rng(0)
  names = ['a', 'b', 'c', 'd']
  tags = {'a': dict(upsampling='nearest', loss='x', family='gan'),
          'b': dict(upsampling='nearest', loss='y', family='gan'),
          'c': dict(upsampling='bilinear', loss='x', family='vae'),
          'd': dict(upsampling='n/a', loss='y', family='flow')}
  labels = np.repeat(np.arange(4), 30)
  # Features: a far-apart centre per upsampling value; model 'd' (n/a) sits anywhere.
  centre = {'nearest': 0.0, 'bilinear': 50.0, 'n/a': 25.0}
  x = np.stack([np.full(2, centre[tags[names[l]]['upsampling']]) for l in labels])
  x += 0.1 * rng.normal(size=x.shape)
  out = protocols.knob_nmi(x, labels, names, tags, knobs=('upsampling', 'loss', 'sampler'))
  assert out['upsampling'] == pytest.approx(1.0)   # 'd' (n/a) left out, clusters = knob values
  assert out['loss'] < 0.2
  assert out['sampler'] is None                    # every model 'n/a' (missing) -> no value
  assert 0.0 <= out['model'] <= 1.0


def _rows():
  r = protocols._row
  return [r(table='1', method='ManiFPT', space='rgb', classifier='probe', dataset='d',
            accuracy_mean=0.8, accuracy_std=0.01, accuracies=[0.79, 0.8, 0.81], num_seeds=3,
            fdr=np.float64(2.5), num_train=70, num_test=30),
          r(table='1', method='Durall20', classifier='own', dataset='d', accuracy_mean=0.9,
            accuracy_std=0.0, accuracies=[0.9, 0.9, 0.9], num_seeds=3, fdr=float('nan'),
            num_train=70, num_test=30),
          r(table='2', method='ManiFPT', space='rgb', classifier='probe', dataset='a -> b',
            accuracy_mean=0.5, accuracy_std=0.1, accuracies=[0.4, 0.6], num_seeds=2),
          r(table='3', method='ManiFPT', space='rgb', dataset='d',
            nmi={'upsampling': 0.5, 'loss': None, 'model': 0.7}),
          r(table='openset', method='ManiFPT', space='rgb', classifier='prototype', dataset='d',
            auroc=0.75, few_shot_accuracy=0.6, few_shot_new_model_accuracy=0.4)]


def test_write_json_has_documented_fields_and_no_nan(tmp_path):
  path = str(tmp_path / 'tables.json')
  report.write_json(path, _rows(), {'gm': 'd'}, {'table1_s': 1.0})
  with open(path) as f:
    obj = json.load(f)   # strict JSON: NaN was written as null
  assert obj['version'] == 1 and obj['config'] == {'gm': 'd'}
  for row in obj['rows']:
    assert set(report.ROW_FIELDS) <= set(row)
  assert obj['rows'][1]['fdr'] is None
  assert obj['rows'][0]['fdr'] == 2.5
  assert obj['rows'][3]['nmi'] == {'upsampling': 0.5, 'loss': None, 'model': 0.7}
  with pytest.raises(ValueError, match='row 0 lacks'):
    report.write_json(path, [{'table': '1'}])


def test_markdown_tables_and_discussion_say_when_a_baseline_wins():
  md = report.markdown_tables(_rows())
  for title in ('Table 1', 'Table 2', 'Table 3', 'Open set'):
    assert title in md
  assert '| ManiFPT RGB | probe | 80.0 ± 1.0 | 2.5 |' in md
  assert '| RGB | 0.500 | 0.700 |' in md          # the all-None 'loss' column is dropped
  text = '\n'.join(report.discussion(_rows()))
  assert 'A baseline beats ManiFPT' in text and 'Durall20' in text
