"""The job's last step: the processes' statistics merged (in process order, so every process
ends with the same FingerprintStats), then fingerprint/, summary.json, index.json and, last, the
COMPLETE marker (format in fpjax/store/artifact_store.py)."""
from __future__ import annotations

import os
import shutil
import time

import jax
import numpy as np

from fpjax import fileio
from fpjax import parallel
from fpjax import store as store_lib
from fpjax.parallel import barrier, gather_processes
from fpjax.artifact_job.state import Job, RunState, checkpoint, local_arrays, stats_of
from fpjax.errors import UserInputError
from fpjax.stats import FingerprintStats


def _models_summary(final: dict, distance_sum, class_names) -> list[dict]:
  """Per model: count, mean |φ(x) − p(x)|, |mean artifact| and RMS artifact norm."""
  count = final["count"]
  rms = np.sqrt(np.maximum(0.0, (final["var"] + final["mean"].astype(np.float64) ** 2)
                           .reshape(len(count), -1).sum(1)))
  models = []
  for i, name in enumerate(class_names):
    n = int(count[i])
    models.append({
        "name": name, "label": i, "count": n,
        "mean_distance": float(distance_sum[i] / n) if n else None,
        "mean_artifact_norm": float(np.linalg.norm(final["mean"][i])) if n else None,
        "rms_artifact_norm": float(rms[i]) if n else None})
  return models


def _merged_stats(run: RunState, arrays: dict, i: int) -> FingerprintStats:
  """Estimator i's statistics over every process (merged in process order)."""
  stats = stats_of(run.stats[i], arrays, 0, i)
  for p in range(1, jax.process_count()):
    stats = stats.merge(stats_of(run.stats[i], arrays, p, i))
  return stats


def _write_files(job: Job, finals: dict, summary: dict, bad_rows: int) -> None:
  """fingerprint/<key>/stats.npz, summary.json, index.json, then COMPLETE (process 0)."""
  for key, final in finals.items():
    fileio.save_npz(store_lib.stats_path(job.workdir, key), **final)
  fileio.save_json(os.path.join(job.workdir, "fingerprint", "summary.json"), summary)
  store_lib.write_index(
      job.workdir, config=job.config, space=job.config["space"], k=job.k, estimators=job.keys,
      embedding_shape=job.manifold.embedding_shape, class_names=job.source.class_names,
      gm_root=job.source.root,
      files=[os.path.relpath(f, job.source.root) for f in job.source.files],
      num_bad_rows=bad_rows, chunk_rows=job.pipe.local_batch_size,
      process_count=jax.process_count())
  fileio.save_json(os.path.join(job.workdir, store_lib.COMPLETE),
                   {"rows": len(job.source), "bad_rows": bad_rows, "time": time.time()})


def write_outputs(job: Job, run: RunState, t0: float) -> dict:
  """Merges the processes' statistics; writes fingerprints, index.json, then COMPLETE.
  Returns summary.json's content."""
  checkpoint(job, run)  # the tail's rows flushed; a crash below resumes with nothing to redo
  arrays = {f: gather_processes(v) for f, v in local_arrays(run).items()}
  bad_rows = int(arrays["bad_rows"].sum())
  if bad_rows == len(job.source):
    raise UserInputError(f"{job.source.root}: no readable image ({bad_rows} bad files, listed in "
                         f"{job.bad.path}).")
  distance_sum = arrays["distance_sum"].sum(0)
  finals, per_estimator = {}, {}
  for i, key in enumerate(job.keys):
    stats = _merged_stats(run, arrays, i)
    finals[key] = stats.finalize()
    fdr = float(finals[key]["fdr"])
    per_estimator[key] = {
        "models": _models_summary(finals[key], distance_sum[i], job.source.class_names),
        "fdr": None if np.isnan(fdr) else fdr, "artifact_shape": list(stats.artifact_shape)}
  first = per_estimator[job.keys[0]]
  summary = {"models": first["models"], "fdr": first["fdr"],
             "artifact_shape": first["artifact_shape"], "k": job.k,
             "estimators": {key: {"models": s["models"], "fdr": s["fdr"]}
                            for key, s in per_estimator.items()},
             "bad_inputs": job.other_bad + bad_rows, "seconds": time.perf_counter() - t0}
  if parallel.is_chief():
    _write_files(job, finals, summary, bad_rows)
  barrier("compute_artifacts complete")
  if parallel.is_chief():
    shutil.rmtree(os.path.join(job.workdir, "checkpoints"), ignore_errors=True)
  return summary
