"""One block of generated images -> its rows of the store and the statistics with it:

    φ(x) -> ONE k-NN search for every estimator (k = the most neighbours any needs)
         -> the k nearest bank rows -> each estimator's artifact φ(x) − p(x)
         -> FingerprintStats.update per estimator; rows of bad files blanked (label -1)

`project_block` computes and commits nothing: the batch loop (loop.py) writes the `Block` only
once every process has agreed to go on, so a failure never leaves half a batch committed.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from fpjax import estimators as estimators_lib
from fpjax import spaces as spaces_lib
from fpjax import store as store_lib
from fpjax.parallel import gather_processes
from fpjax.artifact_job.state import Job, RunState
from fpjax.stats import FingerprintStats

HISTOGRAM_BINS = 64


@dataclasses.dataclass
class Block:
  """A projected block: the statistics with it, and its rows of the store."""
  stats: list[FingerprintStats]  # per estimator, this block included
  distance_sum: np.ndarray       # [estimators, models] sums of |φ(x) − p(x)|, this block included
  bad: np.ndarray                # [local batch] bool: files that failed to decode
  first_row: int                 # store row of rows[...][0]
  rows: dict[str, np.ndarray]    # store field -> this block's real rows
  distance: np.ndarray           # |φ(x) − p(x)| of the first estimator, per row


def _good_rows(local: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(valid, bad, good) masks of a block: padding is not valid; bad files failed to decode."""
  valid = np.asarray(local["valid"])
  errors = local.get("error")
  bad = valid & (errors != "") if errors is not None else np.zeros_like(valid)
  return valid, bad, valid & ~bad


def _search(job: Job, emb, good: np.ndarray) -> tuple[dict, object, object]:
  """The one search of the block: (distance/index rows, neighbour rows, squared distances)."""
  # The search alone: the estimators take every neighbour row from one gather.
  d2, index = job.manifold.search(emb, job.k, batch_size=job.pipe.local_batch_size)
  index = np.array(index, np.int32)  # the one device -> host copy (the gather takes it)
  neighbours = job.manifold.neighbour_rows(index, batch_size=job.pipe.local_batch_size)
  distance = np.sqrt(np.array(d2, np.float32))  # the store keeps Euclidean distances
  distance[~good], index[~good] = np.nan, -1
  return {"distance": distance, "index": index}, neighbours, d2


def _host_artifacts(job: Job, arts: dict) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """Each estimator's artifacts as float32 host arrays and their norms |φ(x) − p(x)| (nn: the
  distance to the nearest row)."""
  artifacts, norms = [], []
  for key in job.keys:
    artifact = np.array(arts[key], np.float32)
    flat = artifact.reshape(len(artifact), -1)
    norms.append(np.sqrt(np.einsum("ij,ij->i", flat, flat, dtype=np.float64)).astype(np.float32))
    artifacts.append(artifact)
  return artifacts, norms


def _first_stats(job: Job, norms, good, basis, distance_max) -> tuple[list, np.ndarray]:
  """Empty statistics whose histogram ranges come from the first block, the same on every
  process (a collective)."""
  tops = np.array([float(n[good].max()) if good.any() else 0.0 for n in norms])
  top = gather_processes(tops).max(0)
  stats = [FingerprintStats.init(job.num_models, job.manifold.embedding_shape, basis=basis,
                                 distance_edges=np.linspace(
                                     0.0, distance_max or max(1.0, float(np.ceil(2 * t))),
                                     HISTOGRAM_BINS + 1))
           for t in top]
  return stats, np.zeros((len(job.keys), job.num_models), np.float64)


def project_block(job: Job, run: RunState, local: dict, basis, distance_max) -> Block:
  """Projects this process's block of one global batch (`local`, from the pipeline)."""
  valid, bad, good = _good_rows(local)
  labels = np.where(good, local["label"], store_lib.BAD_LABEL).astype(np.int32)
  emb = spaces_lib.embed(local["image"], job.manifold.space, batch_size=4096)
  rows, neighbours, d2 = _search(job, emb, good) if job.k else ({}, None, None)
  arts = estimators_lib.artifacts(job.estimators, emb, neighbours, d2, job.autoencoder)
  artifacts, norms = _host_artifacts(job, arts)
  stats, dsum = run.stats, run.distance_sum
  if stats is None:
    stats, dsum = _first_stats(job, norms, good, basis, distance_max)
  # The device arrays: a host copy would go back to the device (bad rows are blanked below,
  # after the update, which ignores label -1 anyway).
  stats = [st.update(arts[key], n, labels) for st, key, n in zip(stats, job.keys, norms)]
  dsum = dsum + np.stack([np.bincount(labels[good], n[good].astype(np.float64),
                                      minlength=job.num_models) for n in norms])
  for key, artifact in zip(job.keys, artifacts):
    artifact[~good] = 0.0
    rows[store_lib.artifact_field(key)] = artifact
  rows["label"] = labels
  n = int(valid.sum())  # real rows are a prefix of the block: rows[0] .. rows[0] + n - 1
  first = int(local["row"][0]) if n else 0
  if n and not np.array_equal(local["row"][:n], first + np.arange(n)):
    raise AssertionError("pipeline block is not a contiguous run of rows")
  return Block(stats, dsum, bad, first, {f: a[:n] for f, a in rows.items()}, norms[0][:n])
