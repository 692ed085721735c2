"""fpjax.evals: metrics, lazy rows, splits, the probe's selection, Table 1 and its paired
differences, Table 3's clustering, against hand-computed values and numpy references."""
import dataclasses
import importlib
import json
import math

import numpy as np
import pytest

from fpjax import evals
from fpjax import report
from fpjax.errors import UserInputError
from fpjax.evals import classifiers
from fpjax.evals import encoders
from fpjax.evals import features
from fpjax.evals import metrics
from fpjax.evals import splits as splits_lib
from fpjax.evals import streamed
from fpjax.evals import table1_accuracy
from fpjax.evals import table3_knobs
from fpjax.store.rows import RowSubset


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
  assert evals.fisher_discriminant_ratio is __import__('fpjax').stats.fisher_discriminant_ratio
  # class means 1 and 5, grand mean 3: S_B = 2*4 + 2*4 = 16; S_W = 1+1+1+1 = 4.
  x = np.array([[0.0], [2.0], [4.0], [6.0]])
  assert metrics.fisher_discriminant_ratio(x, [0, 0, 1, 1]) == pytest.approx(4.0)
  # 2-D: second coordinate is pure within-class noise: S_W += 4 * 1, S_B unchanged.
  x2 = np.array([[0.0, 1], [2, -1], [4, 1], [6, -1]])
  assert metrics.fisher_discriminant_ratio(x2, [0, 0, 1, 1]) == pytest.approx(16 / 8)


def test_confusion_matrix_hand_value():
  cm = metrics.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
  np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
  with pytest.raises(ValueError):
    metrics.confusion_matrix([0, 3], [0, 1], 3)   # label 3 of 3 classes


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
  with pytest.raises(ValueError):
    metrics.split_per_class(np.array([0, 0, 0, 1]), 0.7)   # class 1: one sample, no split
  with pytest.raises(ValueError):
    metrics.split_per_class(labels, 1.0)


def test_split_per_class_is_the_stratified_split_the_open_set_uses():
  """One stratified split: the evaluation's train mask and the open set's enrolment mask are
  the two parts of `training.stratified_split` (strict), drawn from the same seeded rng."""
  from fpjax.attribution import openset
  from fpjax.models import training
  y = np.random.default_rng(0).integers(0, 5, 300)
  _, second = training.stratified_split(y, 0.7, np.random.default_rng(9), strict=True)
  np.testing.assert_array_equal(np.flatnonzero(metrics.split_per_class(y, 0.7, 9)), second)
  first, _ = training.stratified_split(y, 0.5, np.random.default_rng(9), strict=True)
  np.testing.assert_array_equal(np.flatnonzero(openset._split(y, 0.5, 9, None)), first)
  # Not strict, a one-row class stays whole in the first part; strict, it is an error.
  y1 = np.array([0, 0, 0, 0, 1])
  first, second = training.stratified_split(y1, 0.5, np.random.default_rng(0))
  assert 4 in first and len(second) == 2
  with pytest.raises(ValueError):
    training.stratified_split(y1, 0.5, np.random.default_rng(0), strict=True)


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
  out = table3_knobs.knob_nmi(x, labels, names, tags, knobs=('upsampling', 'loss', 'sampler'))
  assert out['upsampling'] == pytest.approx(1.0)   # 'd' (n/a) left out, clusters = knob values
  assert out['loss'] < 0.2
  assert out['sampler'] is None                    # every model 'n/a' (missing) -> no value
  assert 0.0 <= out['model'] <= 1.0


def _rows():
  r = report.make_row
  return [r(table='1', method='ManiFPT', space='rgb', classifier='probe', dataset='d',
            accuracy_mean=0.8, accuracy_std=0.01, accuracies=[0.79, 0.8, 0.81], num_splits=3,
            fdr=np.float64(2.5), num_train=70, num_test=30),
          r(table='1', method='Durall20', classifier='own', dataset='d', accuracy_mean=0.9,
            accuracy_std=0.0, accuracies=[0.9, 0.9, 0.9], num_splits=3, fdr=float('nan'),
            num_train=70, num_test=30),
          r(table='2', method='ManiFPT', space='rgb', classifier='probe', dataset='a -> b',
            accuracy_mean=0.5, accuracy_std=0.1, accuracies=[0.4, 0.6], num_splits=2),
          r(table='3', method='ManiFPT', space='rgb', dataset='d',
            nmi={'upsampling': 0.5, 'loss': None, 'model': 0.7}),
          r(table='openset', method='ManiFPT', space='rgb', classifier='prototype', dataset='d',
            auroc=0.75, few_shot_accuracy=0.6, few_shot_new_model_accuracy=0.4)]


def test_write_json_has_documented_fields_and_no_nan(tmp_path):
  path = str(tmp_path / 'tables.json')
  report.write_json(path, _rows(), {'gm': 'd'}, {'table1_s': 1.0})
  with open(path) as f:
    obj = json.load(f)   # strict JSON: NaN was written as null
  assert obj['version'] == 2 and obj['config'] == {'gm': 'd'}
  for row in obj['rows']:
    assert set(report.ROW_FIELDS) <= set(row)
  assert obj['rows'][1]['fdr'] is None
  assert obj['rows'][0]['fdr'] == 2.5
  assert obj['rows'][3]['nmi'] == {'upsampling': 0.5, 'loss': None, 'model': 0.7}
  with pytest.raises(ValueError):
    report.write_json(path, [{'table': '1'}])     # a row without ROW_FIELDS


def test_markdown_tables_and_discussion_say_when_a_baseline_wins():
  md = report.markdown_tables(_rows())
  assert md.count('### ') == 4                     # Tables 1, 2, 3 and the open set
  cells = [[c.strip() for c in l.strip('|').split('|')] for l in md.splitlines()
           if l.startswith('|')]
  assert ['RGB', 'probe', '—', '—', '80.0 ± 1.0', '2.5'] in cells
  assert ['RGB', '0.500', '0.700'] in cells        # the all-None 'loss' column is dropped
  with pytest.raises(ValueError):
    report.make_row(table='1', acuracy=0.5)
  # The baseline (90 %) beats the best ManiFPT row (80 %) by 10 points: said, with both.
  line = [l for l in report.discussion(_rows()) if 'Durall20' in l and 'ManiFPT' in l]
  assert len(line) == 1 and '90.0 ± 0.0' in line[0] and '10.0' in line[0]


def test_nmi_columns_follow_the_zoo_tags_with_model_last():
  rows = [report.make_row(table='3', nmi={'family': 0.1, 'loss': 0.2, 'model': 0.3}),
          report.make_row(table='3', nmi={'family': 0.1, 'sampler': None, 'model': 0.3})]
  assert report.nmi_columns(rows) == ['family', 'loss', 'sampler', 'model']
  tags = {'a': dict(family='gan', upsampling='nearest'), 'b': dict(family='vae', loss='elbo')}
  assert table3_knobs.knob_names(tags) == ['family', 'upsampling', 'loss']


def test_core_spaces_need_no_encoder_and_unknown_spaces_are_refused(tmp_path):
  from fpjax import spaces
  core = list(spaces.SPACES)
  assert encoders.make_encoders(core, 'digits', workdir=str(tmp_path)) == dict.fromkeys(core)
  assert not (tmp_path / 'encoders').exists()      # nothing trained, nothing written
  with pytest.raises(UserInputError):
    encoders.make_encoders(['rgb', 'fft'], 'digits', workdir=str(tmp_path))


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
  v = RowSubset(base, rows)
  assert v.shape == (20, 3, 2) and v.dtype == np.float32 and v.ndim == 3 and len(v) == 20
  np.testing.assert_array_equal(v[3:11], x[rows[3:11]])
  np.testing.assert_array_equal(v[np.array([7, 1, 15])], x[rows[[7, 1, 15]]])  # any order
  np.testing.assert_array_equal(v[4], x[rows[4]])
  np.testing.assert_array_equal(np.asarray(v), x[rows])
  w = v.take(np.array([2, 5, 6]))
  np.testing.assert_array_equal(w[:], x[rows[[2, 5, 6]]])
  np.testing.assert_array_equal(RowSubset(base)[10:14], x[10:14])
  assert base.reads[-1] == 4   # a contiguous range is one slice read
  np.testing.assert_array_equal(v[-1], x[rows[-1]])
  np.testing.assert_array_equal(RowSubset(base)[-1], x[-1])
  np.testing.assert_array_equal(v[np.array([-2, 0])], x[rows[[-2, 0]]])
  np.testing.assert_array_equal(v[np.arange(20) % 3 == 0], x[rows[::3]])
  with pytest.raises(IndexError):
    v[20]
  with pytest.raises(IndexError):
    RowSubset(base)[np.array([0, 50])]


@pytest.mark.parametrize('rows', [1, 7, 4096])
def test_streamed_fdr_equals_the_in_memory_reference(rows):
  from fpjax.stats import fisher_discriminant_ratio
  rng = np.random.default_rng(1)
  y = rng.integers(0, 4, 300)
  x = (rng.normal(size=(300, 5, 2)) + 3.0 * y[:, None, None] + 100.0).astype(np.float32)
  ref = fisher_discriminant_ratio(x, y)   # float64 numpy on all rows at once
  got = streamed.streamed_fdr(RowSubset(_Counting(x)), y, 4, rows=rows)
  assert got == pytest.approx(ref, rel=1e-9)
  count, mean, var = streamed.class_moments(x, y, 4, rows=rows)
  for c in range(4):
    xc = x[y == c].astype(np.float64).reshape(-1, 10)
    np.testing.assert_allclose(mean[c], xc.mean(0), rtol=1e-12)
    np.testing.assert_allclose(var[c], xc.var(0), rtol=1e-9)
    assert count[c] == len(xc)


def test_stratified_sample_caps_each_class_and_is_seeded():
  y = np.repeat(np.arange(3), [5, 50, 20])
  s = splits_lib.stratified_sample(y, 10, seed=0)
  assert np.all(np.diff(s) > 0)
  assert np.bincount(y[s]).tolist() == [5, 10, 10]
  np.testing.assert_array_equal(s, splits_lib.stratified_sample(y, 10, seed=0))
  assert not np.array_equal(s, splits_lib.stratified_sample(y, 10, seed=1))


# ----------------------------------------------------------------------------- splits, selection

def test_splits_differ_each_has_its_seed_and_inner_rows_come_from_its_training_part():
  y = np.repeat(np.arange(3), [20, 30, 25])
  splits = splits_lib.make_splits(y, 3, seed=5)
  assert [s.seed for s in splits] == [5, 6, 7] and [s.index for s in splits] == [0, 1, 2]
  for s in splits:
    np.testing.assert_array_equal(
        np.isin(np.arange(len(y)), s.train), metrics.split_per_class(y, 0.7, s.seed))
    assert np.intersect1d(s.train, s.val).size == 0 and len(s.train) + len(s.val) == len(y)
    np.testing.assert_array_equal(np.sort(np.concatenate([s.inner_train, s.inner_val])),
                                  s.train)          # the inner split partitions the train part
    assert np.intersect1d(s.inner_train, s.inner_val).size == 0
    # 25 % of each model's training rows are the inner validation rows.
    assert np.bincount(y[s.inner_val]).tolist() == [
        round(0.25 * n) for n in np.bincount(y[s.train])]
  assert not np.array_equal(splits[0].val, splits[1].val)
  assert not np.array_equal(splits[1].val, splits[2].val)
  assert [c['split_seed'] for c in splits_lib.split_config(splits)] == [5, 6, 7]
  for bad in (0, -1, 1.5, True):
    with pytest.raises(UserInputError):
      splits_lib.make_splits(y, bad)


class _Reads:
  """An in-memory artifact array that records which rows are read."""

  def __init__(self, x):
    self.x, self.shape, self.dtype = x, x.shape, x.dtype
    self.rows = set()

  def __len__(self):
    return len(self.x)

  def __getitem__(self, key):
    idx = np.arange(len(self.x))[key]
    self.rows.update(np.atleast_1d(idx).tolist())
    return self.x[key]


class _Store:
  """What the tables read of an ArtifactStore: estimators and artifacts(key)."""

  def __init__(self, arrays):
    self.arrays = arrays
    self.estimators = list(arrays)

  def artifacts(self, key):
    return self.arrays[key]


# Cheap selection for tests: two l2 candidates, a short early-stopping budget.
SEL = {'selection': dict(l2=(1e-4, 1.0), max_epochs=8, patience=3), 'probe': dict(batch_size=32)}


def _features(poison_rows=None, seed=0):
  """3 models x 40 rows of 6-D 'artifacts': nn and input carry a weak model signal, the
  candidate knn_mean-k5 a strong one, the others noise. `poison_rows` get labels-independent
  huge values in every array (what a selection reading them would notice)."""
  rng = np.random.default_rng(seed)
  y = np.repeat(np.arange(3), 40).astype(np.int32)
  centre = np.eye(3, 6) * 3.0
  arrays = {}
  for key, signal in (('nn', 0.6), ('knn_mean-k10', 0.0), ('knn_mean-k5', 1.5),
                      ('knn_mean-k20', 0.0), ('input', 0.4)):
    x = (signal * centre[y] + rng.normal(size=(len(y), 6))).astype(np.float32)
    if poison_rows is not None:   # its own generator: the other rows stay as they were
      x[poison_rows] = np.random.default_rng(99).normal(size=(len(poison_rows), 6)) * 1e3
    arrays[key] = _Reads(x)
  gm = evals.GMData('fake', '', '', ['m0', 'm1', 'm2'], None, (6,), 0)
  return features.Features(gm, y, {'rgb': _Store(arrays)}, None,
                           {'rgb': ('nn', 'knn_mean', 'input')})


def test_selection_reads_only_the_inner_rows_and_ignores_poisoned_validation_rows():
  feats = _features()
  split = splits_lib.make_splits(feats.labels, 2)[1]
  read = lambda key: feats.artifacts('rgb', key)
  clean = splits_lib.select_probe(read, feats.keys('knn_mean'), feats.labels, split, SEL)
  assert clean.key == 'knn_mean-k5'            # the informative candidate wins
  assert clean.fits == 3 + 1 and clean.l2 in SEL['selection']['l2']
  assert 1 <= clean.epochs <= SEL['selection']['max_epochs']
  assert 0.0 <= clean.inner_accuracy <= 1.0
  # The probe's early stopping holds out exactly split.inner_val: its kept epoch's accuracy
  # there is the chosen candidate's inner score.
  probe = classifiers.make_probe(SEL, clean.l2)
  probe.fit(read(clean.key).take(split.train), feats.labels[split.train], seed=split.seed,
            val_rows=np.searchsorted(split.train, split.inner_val))
  assert probe.history_['best_epoch'] + 1 == clean.epochs
  assert metrics.accuracy(feats.labels[split.inner_val], probe.predict(
      np.asarray(read(clean.key).take(split.inner_val)))) == clean.inner_accuracy
  store = feats.stores['rgb']
  inner = set(split.inner_train.tolist()) | set(split.inner_val.tolist())
  for key in ('knn_mean-k10', 'knn_mean-k5', 'knn_mean-k20'):
    assert store.arrays[key].rows and store.arrays[key].rows <= inner
  assert not store.arrays['nn'].rows          # other estimators are not read
  # The reported validation rows poisoned: the same choice and the same inner score.
  poisoned = _features(poison_rows=split.val)
  got = splits_lib.select_probe(lambda key: poisoned.artifacts('rgb', key),
                                poisoned.keys('knn_mean'), poisoned.labels, split, SEL)
  assert (got.key, got.l2, got.epochs, got.inner_accuracy) == (
      clean.key, clean.l2, clean.epochs, clean.inner_accuracy)
  # Poisoning an inner-validation row does change what the selection sees.
  moved = _features(poison_rows=split.inner_val)
  other = splits_lib.select_probe(lambda key: moved.artifacts('rgb', key),
                                  moved.keys('knn_mean'), moved.labels, split, SEL)
  assert other.inner_accuracy != clean.inner_accuracy


def test_table1_has_estimator_and_control_rows_and_diff_rows_with_intervals():
  feats = _features()
  splits = splits_lib.make_splits(feats.labels, 2, seed=3)
  t1 = table1_accuracy.table1(feats, splits, baselines=(), classifiers=('probe',), cfg=SEL)
  rows = t1['rows']
  assert [(r['estimator'], r['classifier']) for r in rows] == [
      ('nn', 'probe'), ('knn_mean', 'probe'), ('input', 'probe')]
  for r in rows:
    assert r['table'] == '1' and r['method'] == 'ManiFPT' and r['space'] == 'rgb'
    assert r['num_splits'] == 2 and len(r['accuracies']) == 2
    assert len(r['estimator_params']) == 2 and len(r['probe_l2']) == 2
    for sp, acc, key, l2 in zip(splits, r['accuracies'], r['estimator_params'], r['probe_l2']):
      c = t1['choices'][('rgb', r['estimator'], sp.index)]
      assert (key, l2) == (c.key, c.l2)
      pred = t1['predictions'][report.row_label(r)][sp.index]
      assert acc == metrics.accuracy(feats.labels[sp.val], pred)
    assert r['accuracy_mean'] == pytest.approx(np.mean(r['accuracies']))
    assert r['num_train'] == len(splits[0].train) and r['num_test'] == len(splits[0].val)
  knn = rows[1]
  assert knn['estimator_params'] == ['knn_mean-k5', 'knn_mean-k5']
  assert rows[0]['estimator_params'] == ['nn', 'nn']
  assert rows[2]['estimator_params'] == ['input'] * 2
  # FDR of split 0's validation rows of the chosen key (float64 numpy reference).
  x = feats.stores['rgb'].arrays['knn_mean-k5'].x
  assert knn['fdr'] == pytest.approx(metrics.fisher_discriminant_ratio(
      x[splits[0].val], feats.labels[splits[0].val]), rel=1e-9)
  assert t1['selection_fits'] == sum(c.fits for c in t1['choices'].values()) == 2 * (2 + 4 + 2)

  diffs = table1_accuracy.diff_rows(t1, num_resamples=200)
  # No baseline: no best-vs-baseline row; the best estimator (knn_mean) vs the runner-up (nn)
  # once (overall and in RGB probe it is the same pair), then each estimator vs its control.
  assert [(d['a'], d['b']) for d in diffs] == [
      ('ManiFPT RGB knn_mean (probe)', 'ManiFPT RGB nn (probe)'),
      ('ManiFPT RGB nn (probe)', 'RGB input (probe)'),
      ('ManiFPT RGB knn_mean (probe)', 'RGB input (probe)')]
  assert diffs[0]['diff_mean'] == pytest.approx(rows[1]['accuracy_mean'] - rows[0]['accuracy_mean'])
  diffs = diffs[1:]
  for d, r in zip(diffs, rows[:2]):
    assert d['table'] == 'diff' and d['method'] == f'{d["a"]} vs {d["b"]}'
    assert d['diff_mean'] == pytest.approx(r['accuracy_mean'] - rows[2]['accuracy_mean'])
    assert d['ci_low'] <= d['diff_mean'] <= d['ci_high']
    assert d['significant'] == (d['ci_low'] > 0 or d['ci_high'] < 0)
    assert d['num_splits'] == 2 and d['num_test'] == len(splits[0].val)
  ref = metrics.paired_bootstrap(t1['y_true'], t1['predictions'][diffs[1]['a']],
                                 t1['predictions'][diffs[1]['b']], num_resamples=200)
  assert {k: diffs[1][k] for k in ref} == ref


def test_diff_rows_compare_the_best_manifpt_row_with_the_best_baseline():
  y = [np.array([0, 1, 0, 1]), np.array([1, 1, 0, 0])]
  right = [a.copy() for a in y]
  wrong = [1 - a for a in y]
  mk = lambda **kw: report.make_row(table='1', dataset='d', **kw)
  half = [np.array([0, 1, 1, 0])] * 2
  rows = [mk(method='ManiFPT', space='rgb', estimator='nn', classifier='probe', accuracy_mean=1.0),
          mk(method='ManiFPT', space='rgb', estimator='input', classifier='probe',
             accuracy_mean=0.0),
          mk(method='ManiFPT', space='sl', estimator='nn', classifier='probe', accuracy_mean=0.5),
          mk(method='ManiFPT', space='sl', estimator='kernel', classifier='probe',
             accuracy_mean=0.0),
          mk(method='ManiFPT', space='sl', estimator='best', classifier='attributor',
             accuracy_mean=0.0),
          mk(method='Yu19', classifier='own', accuracy_mean=0.0),
          mk(method='Marra18', classifier='own', accuracy_mean=0.5)]
  preds = {'ManiFPT RGB nn (probe)': right, 'RGB input (probe)': wrong, 'Yu19': wrong,
           'Marra18': half, 'ManiFPT SL nn (probe)': half, 'ManiFPT SL kernel (probe)': wrong,
           'ManiFPT SL best (attributor)': wrong}
  diffs = table1_accuracy.diff_rows({'rows': rows, 'y_true': y, 'predictions': preds},
                                    num_resamples=100)
  # Best vs best baseline; the best row vs the best row of another estimator (SL kernel);
  # per space and classifier the best estimator vs the runner-up (SL: nn vs kernel; RGB probe
  # has one estimator; 'best' takes no part); each estimator vs its control.
  assert [(d['a'], d['b']) for d in diffs] == [
      ('ManiFPT RGB nn (probe)', 'Marra18'),
      ('ManiFPT RGB nn (probe)', 'ManiFPT SL kernel (probe)'),
      ('ManiFPT SL nn (probe)', 'ManiFPT SL kernel (probe)'),
      ('ManiFPT RGB nn (probe)', 'RGB input (probe)')]
  assert diffs[1]['diff_mean'] == 1.0 and diffs[1]['ci_low'] == 1.0 and diffs[1]['significant']
  assert diffs[2]['diff_mean'] == 0.5 and diffs[3]['diff_mean'] == 1.0
  # The discussion names both pairs with their differences and intervals (in points).
  lines = report.discussion(rows + diffs)
  top = [l for l in lines if 'ManiFPT RGB nn (probe)' in l and 'ManiFPT SL kernel (probe)' in l
         and '[+100.0, +100.0]' in l]
  assert len(top) == 1 and 'by 100.0' in top[0]
  per = [l for l in lines if 'SL probe' in l]
  assert len(per) == 1 and '+50.0' in per[0]


def test_features_hold_small_arrays_in_memory_within_the_budget_and_stream_the_rest():
  feats = _features()
  x = feats.stores['rgb'].arrays['nn']
  lazy = feats.artifacts('rgb', 'nn')            # in_memory_bytes = 0: streamed
  assert lazy.base is x
  held = dataclasses.replace(feats, in_memory_bytes=x.x.nbytes, _memory={})
  a = held.artifacts('rgb', 'nn')
  assert isinstance(a.base, np.ndarray) and x.rows == set(range(len(x)))   # read once, whole
  np.testing.assert_array_equal(np.asarray(a.take([5, 1])), x.x[[5, 1]])
  assert held.artifacts('rgb', 'nn').base is a.base
  # Over the budget: the next array stays lazy.
  assert held.artifacts('rgb', 'input').base is feats.stores['rgb'].arrays['input']


def test_selection_options_are_checked():
  # Each error names the option at fault.
  for bad, name in [(dict(epochs=(30,)), 'epochs'), (dict(l2=()), 'l2'),
                    (dict(max_epochs=0), 'max_epochs'), (dict(patience=1.5), 'patience')]:
    with pytest.raises(UserInputError, match=name):
      classifiers.selection_options({'selection': bad})
  # The defaults are an argument (a config's values); cfg['selection'] overrides them.
  mine = dict(l2=[1.0, 2.0], max_epochs=3, patience=1, inner_fraction=0.5)
  assert classifiers.selection_options({'selection': {'patience': 2}}, mine) == dict(
      mine, l2=(1.0, 2.0), patience=2)
  assert classifiers.selection_options(None) == dict(classifiers.SELECTION,
                                                     l2=tuple(classifiers.SELECTION['l2']))
  probe = classifiers.make_probe({'selection': mine}, epochs=None)
  assert (probe.l2, probe.epochs, probe.patience) == (1.0, 3, 1)


def test_demo_coverage_says_what_ran_and_what_was_left_out():
  from fpjax.evals import demo
  evaluate = importlib.import_module('fpjax.evals.evaluate')   # the module, not the function
  got = demo.demo_coverage(evaluate.settings({}, 'demo'), True)
  # What ran: the estimators of RGB, nn and the control elsewhere; what was left out, each
  # with the setting that runs it.
  ran = got['ran'][0]
  for name in ('nn', 'knn_mean', 'local_pca', 'kernel', 'learned', 'RGB', 'FREQ', 'SSL'):
    assert name in ran
  left = got['left_out']
  assert len(left) == 4
  for line, names in zip(left, [('knn_mean', 'learned', 'estimator_spaces=rgb,freq,dct,sl,ssl'),
                                ('attributor_estimators=all',),
                                ('Nataraj19', 'Wang20', 'baselines=all'),
                                ('cross_classifiers=probe,attributor',)]):
    assert all(n in line for n in names), (line, names)
  full = evaluate.settings(dict(estimator_spaces='all', attributor_estimators='all',
                                baselines='all', cross_baselines=None,
                                cross_classifiers=None), 'demo')
  assert demo.demo_coverage(full, True)['left_out'] == []
