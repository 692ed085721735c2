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
  r = report.make_row
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
  with pytest.raises(ValueError, match='unknown row fields'):
    report.make_row(table='1', acuracy=0.5)
  text = '\n'.join(report.discussion(_rows()))
  assert 'A baseline beats ManiFPT' in text and 'Durall20' in text


def test_nmi_columns_follow_the_zoo_tags_with_model_last():
  rows = [report.make_row(table='3', nmi={'family': 0.1, 'loss': 0.2, 'model': 0.3}),
          report.make_row(table='3', nmi={'family': 0.1, 'sampler': None, 'model': 0.3})]
  assert report.nmi_columns(rows) == ['family', 'loss', 'sampler', 'model']
  tags = {'a': dict(family='gan', upsampling='nearest'), 'b': dict(family='vae', loss='elbo')}
  assert protocols.knob_names(tags) == ['family', 'upsampling', 'loss']


def test_spaces_come_from_the_core():
  from fpjax import spaces
  assert protocols.MANIFPT_SPACES == tuple(spaces.SPACES) + ('sl', 'ssl')


class _Counting:
  """An array-like that refuses unsorted or whole reads and counts what is read."""

  def __init__(self, x):
    self.x, self.shape, self.dtype = x, x.shape, x.dtype
    self.reads = []

  def __len__(self):
    return len(self.x)

  def __getitem__(self, key):
    if isinstance(key, slice):
      assert key.step in (None, 1)
      out = self.x[key]
    else:
      assert np.all(np.diff(key) > 0), 'unsorted read'
      out = self.x[key]
    self.reads.append(len(out))
    return out


def test_lazy_rows_match_numpy_indexing():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(50, 3, 2)).astype(np.float32)
  base = _Counting(x)
  rows = np.sort(rng.choice(50, 20, replace=False))
  v = protocols.RowSubset(base, rows)
  assert v.shape == (20, 3, 2) and v.dtype == np.float32 and v.ndim == 3 and len(v) == 20
  np.testing.assert_array_equal(v[3:11], x[rows[3:11]])
  np.testing.assert_array_equal(v[np.array([7, 1, 15])], x[rows[[7, 1, 15]]])  # any order
  np.testing.assert_array_equal(v[4], x[rows[4]])
  np.testing.assert_array_equal(np.asarray(v), x[rows])
  w = v.take(np.array([2, 5, 6]))
  np.testing.assert_array_equal(w[:], x[rows[[2, 5, 6]]])
  np.testing.assert_array_equal(protocols.RowSubset(base)[10:14], x[10:14])
  assert base.reads[-1] == 4   # a contiguous range is one slice read


@pytest.mark.parametrize('rows', [1, 7, 4096])
def test_streamed_fdr_equals_the_in_memory_reference(rows, monkeypatch):
  from fpjax.stats import fisher_discriminant_ratio
  monkeypatch.setattr(protocols, 'SLICE_ROWS', rows)
  rng = np.random.default_rng(1)
  y = rng.integers(0, 4, 300)
  x = (rng.normal(size=(300, 5, 2)) + 3.0 * y[:, None, None] + 100.0).astype(np.float32)
  ref = fisher_discriminant_ratio(x, y)   # float64 numpy on all rows at once
  got = protocols.streamed_fdr(protocols.RowSubset(_Counting(x)), y, 4)
  assert got == pytest.approx(ref, rel=1e-9)
  count, mean, var = protocols.class_moments(x, y, 4, rows=rows)
  for c in range(4):
    xc = x[y == c].astype(np.float64).reshape(-1, 10)
    np.testing.assert_allclose(mean[c], xc.mean(0), rtol=1e-12)
    np.testing.assert_allclose(var[c], xc.var(0), rtol=1e-9)
    assert count[c] == len(xc)


def test_stratified_sample_caps_each_class_and_is_seeded():
  y = np.repeat(np.arange(3), [5, 50, 20])
  s = protocols.stratified_sample(y, 10, seed=0)
  assert np.all(np.diff(s) > 0)
  assert np.bincount(y[s]).tolist() == [5, 10, 10]
  np.testing.assert_array_equal(s, protocols.stratified_sample(y, 10, seed=0))
  assert not np.array_equal(s, protocols.stratified_sample(y, 10, seed=1))
