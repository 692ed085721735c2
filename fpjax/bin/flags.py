"""absl flags every fpjax binary shares, and `run`, the entry point that keeps errors to one line.

    from fpjax.bin import flags as fpjax_flags   # defines the flags at import
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
from fpjax.artifact_io import UserInputError

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
