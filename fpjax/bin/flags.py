"""absl flags every fpjax binary shares: multi-host start-up.

    from fpjax.bin import flags as fpjax_flags   # defines the flags at import
    def main(argv):
      fpjax_flags.initialize()                   # before any other JAX call

With none of the three flags, JAX auto-detects a cluster (Cloud TPU pods, SLURM, Open MPI, ...)
and a plain single-host run stays single-process. On CPU the collectives of several processes
go through gloo.
"""
from absl import flags
import jax

from fpjax import parallel

COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None,
    "host:port of process 0's coordinator, e.g. 10.0.0.1:1234 (multi-host; all three flags "
    "or none).")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's id in [0, num_processes).")


def initialize() -> None:
  """Starts jax.distributed from the flags (or auto-detection); call first in main()."""
  if NUM_PROCESSES.value is not None and NUM_PROCESSES.value > 1:
    # CPU processes need a collectives backend to exchange data; GPU/TPU ignore this option.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  parallel.initialize(COORDINATOR_ADDRESS.value, NUM_PROCESSES.value, PROCESS_ID.value)
