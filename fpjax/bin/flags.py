"""absl flags every fpjax binary shares, and `run`, the entry point that keeps errors to one line.

    from fpjax.bin import flags as fpjax_flags  # defines the flags at import
    def main(argv):
      fpjax_flags.initialize()                   # before any other JAX call
      ...
    if __name__ == '__main__':
      fpjax_flags.run(main)                      # instead of absl.app.run(main)

Exit status of a binary started with `run`:
  0  finished (possibly with bad files skipped: see WORKDIR/bad_inputs.jsonl and the summary)
  2  refused: a bad flag value, an unknown real set, an unusable folder, no readable file, or a
     bad file under --on_bad_input=fail; one line on stderr, no traceback
  1  an unexpected error (a bug): absl prints the traceback
  143  stopped by SIGTERM after a checkpoint (compute_artifacts): rerun to resume

With none of the three multi-host flags, JAX auto-detects a cluster (Cloud TPU pods, SLURM,
Open MPI, ...) and a plain single-host run stays single-process. On CPU the collectives of
several processes go through gloo.
"""
import os
import sys

from absl import app
from absl import flags
import jax

from fpjax import parallel
from fpjax.errors import UserInputError

COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None,
    "host:port of process 0's coordinator, e.g. 10.0.0.1:1234 (multi-host; all three flags "
    "or none).")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's id in [0, num_processes).")
ON_BAD_INPUT = flags.DEFINE_enum(
    "on_bad_input", "skip", ["skip", "fail"],
    "A user file that cannot be read (truncated, empty, not an image, a decompression bomb, a "
    "symlink leaving the folder): 'skip' lists it in WORKDIR/bad_inputs.jsonl with one line on "
    "stderr and goes on; 'fail' lists it, saves what is computed and stops (exit 2).")


class ArtifactFlags:
  """The artifact job's settings, defined once for every binary that may compute artifact
  stores (`artifact_flags()`); `kwargs()` -> keyword arguments of `fpjax.compute_artifacts`."""

  def __init__(self):
    self.precision = flags.DEFINE_enum(
        "precision", "exact", ["exact", "fast"],
        "Artifacts: 'exact' certifies every nearest neighbour; 'fast' does not.")
    self.batch_size = flags.DEFINE_integer(
        "batch_size", 256, "Artifacts: global batch (all processes); a process's share is one "
        "chunk of the artifact store.")
    self.device_bank_bytes = flags.DEFINE_integer(
        "device_bank_bytes", None, "Artifacts: largest bank slice per device; a larger bank "
        "stays in host RAM and streams to the devices in tiles.")
    self.num_threads = flags.DEFINE_integer(
        "num_threads", 4, "Artifacts: image-decoding threads per process.")

  def kwargs(self) -> dict:
    return dict(precision=self.precision.value, batch_size=self.batch_size.value,
                device_bank_bytes=self.device_bank_bytes.value,
                num_threads=self.num_threads.value, on_bad_input=ON_BAD_INPUT.value)


_ARTIFACT_FLAGS = []


def artifact_flags() -> ArtifactFlags:
  """Defines the artifact flags (--precision, --batch_size, --device_bank_bytes,
  --num_threads) on the first call and returns them; later calls return the same group."""
  if not _ARTIFACT_FLAGS:
    _ARTIFACT_FLAGS.append(ArtifactFlags())
  return _ARTIFACT_FLAGS[0]


def splits_flag(default: int = 3):
  """--splits: train/validation splits (>= 1; checked by the evaluation, exit 2 below 1)."""
  return flags.DEFINE_integer("splits", default, "Train/validation splits, each with its own "
                              "split and classifier seed (mean ± std over them; >= 1).")


def estimators_flag(default):
  """--estimators: manifold estimator names or 'all' (the input control is always added)."""
  return flags.DEFINE_list(
      "estimators", list(default), "Manifold estimators: 'all' or names among nn, knn_mean, "
      "local_pca, kernel, learned (each with its hyperparameters chosen on an inner "
      "validation split); the input control (the classifier on φ(x) itself) is always added.")


def estimator_spaces_flag(default):
  """--estimator_spaces: the spaces --estimators run in (the others: nn and the control)."""
  return flags.DEFINE_list(
      "estimator_spaces", None if default is None else list(default),
      "Spaces where --estimators run; the other spaces run nn and the input control (default: "
      + ("every space" if default is None else ",".join(default)) + ").")


def attributor_estimators_flag(default):
  """--attributor_estimators: the estimators the attributor runs on; `.value` of the returned
  holder goes through `attributor_estimators_arg`."""
  return flags.DEFINE_list(
      "attributor_estimators", list(default),
      "Estimators the attributor runs on: 'all' (every one of --estimators and the input "
      "control) or names among them, 'input' and 'best' (per split, the estimator the probe "
      "chose on the inner validation).")


def attributor_estimators_arg(values):
  """--attributor_estimators: ['all'] -> None (every estimator), else the names."""
  return None if list(values) == ["all"] else list(values)


def initialize() -> None:
  """Starts jax.distributed from the flags (or auto-detection); call first in main()."""
  if NUM_PROCESSES.value is not None and NUM_PROCESSES.value > 1:
    # CPU processes need a collectives backend to exchange data; GPU/TPU ignore this option.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  parallel.initialize(COORDINATOR_ADDRESS.value, NUM_PROCESSES.value, PROCESS_ID.value)


def _program() -> str:
  name = os.path.basename(sys.argv[0] or "fpjax")
  return name[:-3] if name.endswith(".py") else name


def _refuse(message: str) -> None:
  print(f"{_program()}: error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:  # unknown flag, bad value, missing required flag
    _refuse(f"{e} (see --help)")


def catch_user_errors(main):
  """Wraps main(argv): a UserInputError becomes one stderr line and exit status 2."""
  def wrapped(argv):
    try:
      return main(argv)
    except UserInputError as e:
      _refuse(str(e))
  wrapped.__name__, wrapped.__doc__ = main.__name__, main.__doc__
  return wrapped


def run(main) -> None:
  """absl.app.run(main) with fpjax's exit statuses (module docstring)."""
  app.run(catch_user_errors(main), flags_parser=_parse_flags)
