"""Frank20: orthonormal 2-D DCT-II per channel, log(|DCT| + 1e-12) -> z-score -> L2 logistic
regression.

The DCT is fpjax's 'dct' embedding space (fpjax.spaces.dct); the LinearProbe z-scores each
coefficient with the training mean/std and fits the L2-regularised logistic regression.
"""

from fpjax import spaces
from fpjax.baselines._common import LinearBaseline


def frank20_features(x):
  return spaces.dct(x).reshape(x.shape[0], -1)


class Frank20(LinearBaseline):
  QUICK = dict(l2=1e-3)

  def _features(self, x):
    return frank20_features(x)
