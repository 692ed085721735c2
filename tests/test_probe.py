"""LinearProbe against scikit-learn's LogisticRegression on the same standardized features."""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from fpjax.attribution import Attributor, LinearProbe
from fpjax.errors import UserInputError


def _blobs(seed=0, n=2000, k=5, d=20):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(k, d)) * 0.6
  y = rng.integers(0, k, n)
  x = centers[y] + rng.normal(size=(n, d)) + 3.0
  x[:, 0] *= 100.0  # badly scaled feature: standardization must handle it
  return x.astype(np.float32), y


def test_probe_matches_sklearn_logistic_regression():
  x, y = _blobs()
  xtr, ytr, xte, yte = x[:1200], y[:1200], x[1200:], y[1200:]
  l2 = 1e-3
  probe = LinearProbe(l2=l2).fit(xtr, ytr, seed=0)
  scaler = StandardScaler().fit(xtr.astype(np.float64))
  # mean CE + l2/2 ||W||^2  <=>  C = 1 / (l2 * n_train)
  ref = LogisticRegression(C=1.0 / (l2 * len(xtr)), max_iter=5000)
  ref.fit(scaler.transform(xtr), ytr)
  acc = probe.score(xte, yte)
  ref_acc = ref.score(scaler.transform(xte), yte)
  assert abs(acc - ref_acc) <= 0.01, (acc, ref_acc)
  # Class probabilities agree on most samples, not just the argmax.
  agree = np.mean(probe.predict(xte) == ref.predict(scaler.transform(xte)))
  assert agree > 0.95


def test_probe_labels_save_load_and_errors(tmp_path):
  x, y = _blobs(n=300, k=3, d=4)
  names = np.array(['gan', 'vae', 'flow'])[y]
  probe = LinearProbe(epochs=30).fit(x.reshape(300, 2, 2), names, seed=1)  # flattened inside
  pred = probe.predict(x.reshape(300, 2, 2))
  assert set(pred) <= {'gan', 'vae', 'flow'}
  probe.save(str(tmp_path / 'probe'))
  loaded = LinearProbe.load(str(tmp_path / 'probe'))
  np.testing.assert_array_equal(loaded.predict_proba(x), probe.predict_proba(x))
  np.testing.assert_array_equal(loaded.predict(x), pred)
  bad = x.copy()
  bad[7, 1] = np.nan
  try:
    LinearProbe().fit(bad, y)
  except ValueError as e:
    assert 'row 7' in str(e)
  else:
    raise AssertionError('NaN input accepted')


def test_early_stopping_on_given_validation_rows_never_trains_on_them():
  x, y = _blobs(n=400, k=3, d=6)
  val = np.arange(0, 400, 5)
  relabelled = y.copy()
  relabelled[val] = (y[val] + 1) % 3   # wrong labels on the validation rows only
  fits = [LinearProbe(epochs=8, val_fraction=0.0, patience=None).fit(x, labels, seed=0,
                                                                      val_rows=val)
          for labels in (y, relabelled)]
  a, b = (f.history_ for f in fits)
  # The same training (the validation rows' labels never reach a gradient), different
  # validation scores, each the kept model's accuracy on exactly those rows.
  assert a['train_loss'] == b['train_loss'] and a['val_loss'] != b['val_loss']
  for f, labels in zip(fits, (y, relabelled)):
    h = f.history_
    assert f.score(x[val], labels[val]) == h['val_accuracy'][h['best_epoch']]
  for rows in ([400], np.arange(400)):  # outside the rows; no training rows left
    with pytest.raises(ValueError):
      LinearProbe(epochs=1).fit(x, y, val_rows=rows)


@pytest.mark.parametrize('options', [dict(epochs=0), dict(epochs=-1), dict(epochs=2.5),
                                     dict(batch_size=0), dict(batch_size=True), dict(lr=0.0),
                                     dict(val_fraction=1.0), dict(patience=0)])
def test_options_that_would_do_something_else_are_refused(options):
  with pytest.raises(UserInputError):
    LinearProbe(**options)
  with pytest.raises(UserInputError):
    Attributor(**options)
  with pytest.raises(UserInputError):
    LinearProbe(l2=-1.0)


def test_the_pinned_option_error_line():
  with pytest.raises(UserInputError) as e:
    LinearProbe(epochs=0)
  assert str(e.value) == 'LinearProbe: epochs must be an integer >= 1; got 0'


@pytest.mark.parametrize('labels', [
    np.array([0.0, 1.0, 2.0] * 20),           # float labels (were truncated)
    np.array([0, 1, 0.5] * 20),
    np.array([True, False, True] * 20),
    np.array([0, 1, 2] * 19 + [0, -1, 1]),    # the store's bad-row label
    np.array([0, 1, 2] * 19),                 # 57 labels for 60 rows
    np.zeros(60, int),                        # one class
])
def test_bad_labels_are_refused_by_probe_and_attributor(labels):
  x = np.random.default_rng(0).normal(size=(60, 2, 2, 1)).astype(np.float32)
  with pytest.raises(UserInputError):
    LinearProbe(epochs=1).fit(x, labels)
  with pytest.raises(UserInputError):
    Attributor(epochs=1).fit(x, labels)


def test_score_needs_one_label_per_row():
  x, y = _blobs(n=90, k=3, d=4)
  probe = LinearProbe(epochs=2).fit(x, y)
  assert 0.0 <= probe.score(x, y) <= 1.0
  with pytest.raises(UserInputError):
    probe.score(x, y[:50])
