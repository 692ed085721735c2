"""The batch loop: this process's blocks, each projected (batch.py), agreed on by every process
(two stop flags: SIGTERM, a bad file under on_bad_input='fail'), then committed to the store
and the run state, and checkpointed every `checkpoint_every` batches and before stopping.

`on_batch(batches_done)` is called after each committed batch: the hook tests use to stop a
run at a chosen batch (raise, or send the process a signal) without depending on timing.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Callable

from absl import logging
import jax
import numpy as np

from fpjax import progress as progress_lib
from fpjax.artifact_job.batch import Block, project_block
from fpjax.parallel import gather_processes
from fpjax.artifact_job.state import Job, RunState, checkpoint
from fpjax.errors import Preempted, UserInputError


@contextlib.contextmanager
def _sigterm_flag():
  """An Event set by SIGTERM while inside (from the main thread; elsewhere never set)."""
  term = threading.Event()
  previous = None
  if threading.current_thread() is threading.main_thread():
    previous = signal.signal(signal.SIGTERM, lambda *_: term.set())
  try:
    yield term
  finally:
    if previous is not None:
      signal.signal(signal.SIGTERM, previous)


def _stop_flags(job: Job, local: dict, block: Block, term: threading.Event) -> np.ndarray:
  """Lists this block's bad files; returns [SIGTERM seen, stop for a bad file] agreed by every
  process (a collective, once per batch)."""
  for t in np.flatnonzero(block.bad):
    row = int(local["row"][t])
    job.bad.record(job.pipe.path_of(row), str(local["error"][t]), "decode", row=row)
  return gather_processes(np.array([term.is_set(), block.bad.any() and not job.bad.skip])).any(0)


def _stop_on_bad_input(job: Job, run: RunState) -> None:
  """--on_bad_input=fail: keeps the batches before this one, then raises."""
  checkpoint(job, run)
  if job.bad.found:
    raise job.bad.error()
  raise UserInputError(f"stopped: another process found a bad input (--on_bad_input=fail); "
                       f"see {job.bad.path}.")


def _commit(job: Job, run: RunState, block: Block) -> None:
  if block.rows["label"].size:
    job.writer.write(block.first_row, block.rows)
  run.stats, run.distance_sum = block.stats, block.distance_sum
  run.bad_rows += int(block.bad.sum())
  run.batches_done += 1


def _report(job: Job, run: RunState, block: Block, prog, metrics, seconds: float) -> None:
  total = len(job.source)
  prog.update(min(total, run.batches_done * job.pipe.batch_size) - prog.done,
              note=f"{job.other_bad + run.bad_rows} bad inputs" if job.bad.found else "")
  good = block.rows["label"] >= 0
  metrics.write(run.batches_done, images=prog.done, images_per_s=prog.rate,
                batch_seconds=seconds,
                batch_mean_distance=float(block.distance[good].mean()) if good.any() else 0.0)


def run_batches(job: Job, run: RunState, basis, distance_max, checkpoint_every: int,
                log_every_s: float, on_batch: Callable[[int], None] | None) -> None:
  """Projects and commits every remaining batch; raises Preempted after a SIGTERM."""
  metrics = progress_lib.MetricWriter(job.workdir)
  total = len(job.source)
  prog = progress_lib.Progress(total, desc="compute_artifacts", log_every_s=log_every_s,
                               initial=min(total, run.batches_done * job.pipe.batch_size))
  with _sigterm_flag() as term:
    try:
      for local in job.pipe.local_batches():
        t_batch = time.perf_counter()
        block = project_block(job, run, local, basis, distance_max)
        preempted, bad_input = _stop_flags(job, local, block, term)
        if bad_input:  # this batch is not committed
          _stop_on_bad_input(job, run)
        # Commit the batch only once all of it is computed: a failure leaves the state consistent.
        _commit(job, run, block)
        _report(job, run, block, prog, metrics, time.perf_counter() - t_batch)
        if on_batch is not None:
          on_batch(run.batches_done)
        if preempted or run.batches_done % checkpoint_every == 0:
          checkpoint(job, run)
        if preempted:
          raise Preempted(f"SIGTERM: checkpointed {job.workdir} at batch {run.batches_done}/"
                          f"{len(job.pipe)}; rerun with the same --workdir to resume.",
                          job.workdir, run.batches_done)
    except (Preempted, UserInputError):
      raise
    except BaseException:
      # Keep everything computed so far. With several processes an orbax save needs all of
      # them, and the others are not here: keep the periodic checkpoints only.
      if jax.process_count() == 1 and run.batches_done > max(run.checkpointed, 0):
        logging.error("compute_artifacts: stopping at batch %d; checkpointing what is done.",
                      run.batches_done)
        checkpoint(job, run)
      raise
    finally:
      prog.close()  # the bar's last line ends before whatever the caller prints next
      metrics.close()
