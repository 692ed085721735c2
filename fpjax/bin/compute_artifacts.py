r"""Projects generated images onto the real manifold; writes artifacts and fingerprints.

  python -m fpjax.bin.compute_artifacts --real=mnist5k --gm=ZOO_WORKDIR --space=rgb --workdir=OUT \
      --estimators=nn,knn_mean-k10,input

Rerun with the same --workdir to resume; see fpjax/artifact_job.py and fpjax/store/artifact_store.py.
Bad files are skipped and listed in WORKDIR/bad_inputs.jsonl (--on_bad_input=fail stops instead);
exit status: 0 done, 2 refused input (one line on stderr), 1 a bug, 143 SIGTERM (checkpointed).
"""
import sys

from absl import flags
from absl import logging

from fpjax import spaces
from fpjax.bin import flags as fpjax_flags

_REAL = flags.DEFINE_string(
    "real", "mnist5k", "Real bank: mnist5k | mnist5k_0to4 | mnist5k_5to9 | digits | "
    "tfds:<name>[:<split>] | a .npy/.npz of images [N,H,W,C] | an image folder.")
_GM = flags.DEFINE_string("gm", None, "Generated images: a zoo workdir or an image-folder root "
                          "(one folder per model).", required=True)
_SPACE = flags.DEFINE_enum("space", "rgb", list(spaces.SPACE_NAMES),
                           "Embedding space ('sl'/'ssl' need --encoder).")
_ENCODER = flags.DEFINE_string("encoder", None, "For --space=sl|ssl: a saved fpjax Encoder "
                               "(fpjax.models.Encoder.save).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder; rerun with it to resume.",
                               required=True)
_ESTIMATORS = flags.DEFINE_list(
    "estimators", ["nn"], "Manifold estimators, one artifact array each (fpjax/estimators.py): "
    "keys (nn, knn_mean-k10, local_pca-k20-m4, kernel-k20-s1, learned, input), names (a name "
    "stands for all its grid's candidates) or 'all' (every estimator's grid).")
_K = flags.DEFINE_integer("k", None, "Nearest bank rows searched and kept per image (default: "
                          "the most the estimators need; 0 when only input/learned).")
_ARTIFACTS = fpjax_flags.artifact_flags()  # --precision, --batch_size, --device_bank_bytes, ...
_CHECKPOINT_EVERY = flags.DEFINE_integer("checkpoint_every", 20,
                                         "Batches between checkpoints.")
_BASIS_DIM = flags.DEFINE_integer("basis_dim", 16, "Principal directions for the covariance.")
_DISTANCE_MAX = flags.DEFINE_float("distance_max", None,
                                   "Top edge of the distance histogram (default: from batch 1).")

# Looked up at call time so hooks (tests) can wrap it.
from fpjax import artifact_job  # pylint: disable=g-import-not-at-top,wrong-import-position


class _QuietOrbax:
  """Drops orbax's per-save INFO lines so progress stays readable (warnings still show)."""

  def filter(self, record):
    return record.levelno > 20 or "/orbax/" not in record.pathname


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(_QuietOrbax())
  fpjax_flags.initialize()
  try:
    artifact_job.compute_artifacts(
        _REAL.value, _GM.value, _WORKDIR.value, space=_SPACE.value, encoder=_ENCODER.value,
        estimators=_ESTIMATORS.value, k=_K.value,
        checkpoint_every=_CHECKPOINT_EVERY.value, basis_dim=_BASIS_DIM.value,
        distance_max=_DISTANCE_MAX.value, **_ARTIFACTS.kwargs())
  except artifact_job.Preempted as e:
    logging.warning("%s", e)
    sys.exit(143)  # 128 + SIGTERM: the scheduler sees an interrupted job


if __name__ == "__main__":
  fpjax_flags.run(main)
