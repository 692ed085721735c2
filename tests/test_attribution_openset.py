"""Open-set AUROC and few-shot enrolment on hand-computed 1-D examples and synthetic clusters."""
import numpy as np
import pytest

from fpjax.attribution import openset

# 1-D features; in 1-D nearest-prototype ranks are invariant to the z-scoring, so the
# expected values below are computed by hand on raw values (see the comments).
X = np.array([-1, 1, 0.5, 9, 11, 10.5, 20, 20, 0.2])[:, None]
Y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
TRAIN = np.array([1, 1, 0, 1, 1, 0, 1, 1, 0], bool)


def test_auroc_hand_computed():
  # out 0: protos 10, 20; known test scores {0.5 (10.5), 9.8 (0.2)}; model 0 scores {11, 9, 9.5}
  #        -> pairs pos>neg: 3 + 1 = 4 of 6.
  # out 1: protos 0, 20; negatives {0.5, 0.2}; positives {9, 9, 9.5} -> 6/6.
  # out 2: protos 0, 10; negatives {0.5, 0.5}; positives {10, 10, 0.2} -> 4/6.
  res = openset.leave_one_model_out_auroc(X, Y, train_mask=TRAIN)
  assert res['per_model'] == pytest.approx({0: 4 / 6, 1: 1.0, 2: 4 / 6})
  assert res['auroc'] == pytest.approx((4 / 6 + 1 + 4 / 6) / 3)


def test_few_shot_hand_computed():
  # Prototypes are always 0, 10, 20; test points 0.5 -> 0 (right), 10.5 -> 1 (right),
  # 0.2 -> 0 (wrong, it is model 2's): accuracy 2/3 whichever model is new; the new
  # model's own test point is right for models 0 and 1, wrong for model 2.
  res = openset.few_shot_accuracy(X, Y, shots=2, train_mask=TRAIN)
  assert res['accuracy'] == pytest.approx(2 / 3)
  assert res['new_model_accuracy'] == pytest.approx(2 / 3)
  assert res['per_model'][2] == pytest.approx((2 / 3, 0.0))


def test_synthetic_clusters():
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(6, 8)) * 10
  y = np.repeat(np.arange(6), 60)
  x = centers[y] + rng.normal(size=(360, 8))
  assert openset.leave_one_model_out_auroc(x, y)['auroc'] == pytest.approx(1.0)
  res = openset.few_shot_accuracy(x, y, shots=5)
  assert res['accuracy'] == 1.0 and res['new_model_accuracy'] == 1.0
  # A left-out model identical in distribution to a known one cannot be flagged: AUROC ~ 0.5.
  y2 = y.copy()
  y2[y == 5] = 5
  x2 = x.copy()
  x2[y == 5] = centers[0] + rng.normal(size=(60, 8))
  per = openset.leave_one_model_out_auroc(x2, y2)['per_model']
  assert 0.3 < per[5] < 0.7


def test_prototype_classifier_enrol_without_retraining():
  x = np.array([[0.0, 0], [0, 2], [10, 0], [10, 2]])
  clf = openset.PrototypeClassifier.fit(x, np.array([0, 0, 1, 1]))
  mean, std = clf.mean.copy(), clf.std.copy()
  clf2 = clf.enrol(np.array([[5.0, 20.0]]), 7)
  np.testing.assert_array_equal(clf2.mean, mean)  # standardization unchanged
  np.testing.assert_array_equal(clf2.std, std)
  assert list(clf2.predict(np.array([[0.0, 1], [10, 1], [5, 19]]))) == [0, 1, 7]
  labels, protos = openset.prototypes(x, np.array([0, 0, 1, 1]), standardize=False)
  np.testing.assert_allclose(protos, [[0, 1], [10, 1]])
