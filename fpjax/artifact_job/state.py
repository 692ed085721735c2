"""What the job's steps share (`Job`), this process's progress (`RunState`), and the orbax
checkpoint that makes the progress durable: `restore` when the job starts, `checkpoint` every
few batches, on SIGTERM and before stopping on a bad file.

A checkpoint records the number of batches done (so which rows of the store are committed), the
pipeline position and every process's partial statistics, stacked [P, ...] in process order, so
a resumed process takes its own share back.
"""
from __future__ import annotations

import dataclasses
import os

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from fpjax import data
from fpjax import store as store_lib
from fpjax.parallel import gather_processes
from fpjax.data.bad_inputs import BadInputs
from fpjax.errors import StoreError, UserInputError
from fpjax.manifold import Manifold
from fpjax.stats import FingerprintStats

STATS_FIELDS = ("count", "mean", "m2", "basis", "basis_mean", "basis_m2", "spectrum",
                "distance_edges", "distance_hist")


@dataclasses.dataclass
class Job:
  """What the steps share: the inputs, the store writer, the checkpoint manager."""
  workdir: str
  config: dict
  source: data.ImageFolderSource
  manifold: Manifold
  estimators: list  # estimators_lib.Estimator, in the store's order
  k: int            # neighbours searched per image (0: no search)
  autoencoder: object | None  # the 'learned' estimator's ManifoldAutoencoder
  pipe: data.Pipeline
  writer: store_lib.ArtifactWriter
  manager: ocp.CheckpointManager
  bad: BadInputs
  other_bad: int  # files skipped before the batch loop (bank folder, listing)

  @property
  def num_models(self) -> int:
    return len(self.source.class_names)

  @property
  def keys(self) -> list[str]:
    return [e.key for e in self.estimators]

  def template(self, basis_dim: int, num_edges: int) -> FingerprintStats:
    """Empty statistics of the checkpointed shapes (what orbax restores into)."""
    return FingerprintStats.init(
        self.num_models, self.manifold.embedding_shape,
        basis=np.zeros((self.manifold.dim, basis_dim), np.float32),
        distance_edges=np.arange(num_edges, dtype=np.float32))


@dataclasses.dataclass
class RunState:
  """This process's part of the job: batches done, its statistics (one FingerprintStats per
  estimator, of its rows only), the sums of |φ(x) − p(x)| [estimators, models], bad rows it
  skipped."""
  batches_done: int = 0
  checkpointed: int = -1
  stats: list[FingerprintStats] | None = None
  distance_sum: np.ndarray | None = None
  bad_rows: int = 0


def local_arrays(run: RunState) -> dict[str, np.ndarray]:
  """This process's state as flat named arrays ('e<i>_<field>' for estimator i's statistics)."""
  out = {f"e{i}_{f}": np.asarray(getattr(st, f))
         for i, st in enumerate(run.stats) for f in STATS_FIELDS}
  out["distance_sum"] = np.asarray(run.distance_sum, np.float64)
  out["bad_rows"] = np.asarray(run.bad_rows, np.int64)
  return out


def stats_of(template: FingerprintStats, arrays: dict, p: int, i: int) -> FingerprintStats:
  """Estimator i's statistics of process p, from arrays stacked [P, ...]."""
  return dataclasses.replace(template, **{f: jax.numpy.asarray(arrays[f"e{i}_{f}"][p])
                                          for f in STATS_FIELDS if f"e{i}_{f}" in arrays})


def checkpoint_manager(workdir: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.join(workdir, "checkpoints"),
      options=ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False))


def checkpoint_meta(manager: ocp.CheckpointManager) -> dict | None:
  """The latest checkpoint's JSON part (config, batches_done, pipeline, shapes), or None."""
  latest = manager.latest_step()
  if latest is None:
    return None
  return _read(manager, latest, ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def _read(manager: ocp.CheckpointManager, step: int, args):
  """manager.restore; a checkpoint that cannot be read (a torn or corrupt file) is refused with
  one line saying how to start the store over (its rows are recomputed from the first batch)."""
  try:
    return manager.restore(step, args=args)
  except (OSError, ValueError, KeyError, TypeError) as e:
    folder = os.fspath(manager.directory)
    raise StoreError(f"{folder}: checkpoint {step} cannot be read ({type(e).__name__}); delete "
                     f"{folder} to compute this store from the start", folder) from e


def restore(job: Job, meta: dict | None) -> RunState:
  """The run state from the latest checkpoint (this process's share), or a fresh one."""
  run = RunState()
  if meta is None:
    return run
  try:
    job.pipe.set_state(dict(meta["pipeline"], next_batch=meta["batches_done"]))
  except ValueError as e:
    raise UserInputError(f"{job.workdir}: cannot resume this checkpoint: {e}") from e
  template = job.template(meta["basis_dim"], meta["num_edges"])
  num = len(job.estimators)
  zeros = RunState(stats=[template] * num, distance_sum=np.zeros((num, job.num_models)))
  shapes = {f: np.zeros((jax.process_count(),) + v.shape, v.dtype)
            for f, v in local_arrays(zeros).items() if v.size}
  arrays = _read(job.manager, meta["batches_done"], ocp.args.Composite(
      state=ocp.args.StandardRestore(shapes)))["state"]
  p = jax.process_index()
  run.stats = [stats_of(template, arrays, p, i) for i in range(num)]
  run.distance_sum = np.asarray(arrays["distance_sum"][p], np.float64)
  run.bad_rows = int(arrays["bad_rows"][p])
  run.batches_done = run.checkpointed = int(meta["batches_done"])
  logging.info("compute_artifacts: resuming %s at batch %d/%d", job.workdir, run.batches_done,
               len(job.pipe))
  return run


def checkpoint(job: Job, run: RunState) -> None:
  """Makes every batch done so far durable: rows flushed on every process, then the state."""
  job.writer.flush()
  if run.stats is None or run.checkpointed == run.batches_done:
    return
  # orbax refuses zero-size arrays (no covariance basis, vector artifacts' spectrum): those are
  # left out and come back from the template on restore. The gather is also a barrier: every
  # process has flushed its rows.
  arrays = {f: gather_processes(v) for f, v in local_arrays(run).items() if v.size}
  meta = {"config": job.config, "batches_done": run.batches_done,
          "pipeline": dict(job.pipe.get_state(), next_batch=run.batches_done),
          "basis_dim": int(run.stats[0].basis.shape[1]),
          "num_edges": int(run.stats[0].distance_edges.shape[0])}
  job.manager.save(run.batches_done, args=ocp.args.Composite(
      state=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)), force=True)
  job.manager.wait_until_finished()
  run.checkpointed = run.batches_done
  logging.info("compute_artifacts: checkpoint at batch %d/%d", run.batches_done, len(job.pipe))
