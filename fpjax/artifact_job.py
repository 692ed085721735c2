"""compute_artifacts: the streaming, resumable, multi-host job behind the binary of that name.

    real bank (embedded dataset | image folder | TFDS | .npy)  ->  Manifold (bank on devices)
    generated images (zoo workdir | image folder), decoded lazily by the grain pipeline
      -> this process's block of each global batch -> φ(x) -> ONE k-NN search
         (Manifold.project_embedded, k = the most neighbours any estimator needs)
         -> the k nearest bank rows (Manifold.neighbour_rows) -> each manifold estimator's
         artifact φ(x) − p(x) (fpjax/estimators.py)
      -> this process's rows of the artifact store (zarr, its own chunks; one artifact array
         per estimator)
      -> this process's FingerprintStats per estimator, merged over processes at the end

Estimators: `estimators` takes keys ('knn_mean-k10'), names (a name stands for its whole
`estimators.grid`: the candidates an evaluation chooses from) or Estimator objects. The
search runs once per batch for all of them, and not at all when only 'input' and 'learned' are
asked (k = 0: the store then has no distance/index fields). 'learned' trains its autoencoder on
the bank's embeddings once per work directory (WORKDIR/autoencoder/; every process trains the
same model deterministically and they save it together; a resumed run loads it, a fresh one
(no checkpoint yet) trains it again).

The job is three steps around the batch loop: `_restore` (open or resume the work directory),
`_checkpoint` (make what is computed durable) and `_write_outputs` (fingerprints, index.json and
the COMPLETE marker, written last; format in fpjax/store/artifact_store.py).

Resuming: each batch's rows are written to the store as soon as they are projected. Every
`checkpoint_every` batches (and on SIGTERM, on --on_bad_input=fail, and when a batch fails on a
single process) the writes are flushed and an orbax checkpoint records the number of batches
done (so which rows are committed), the pipeline position and every process's partial
statistics. A rerun with the same work directory restores the latest checkpoint and goes on from
there, rewriting the rows of later batches with the same bytes; the result equals an
uninterrupted run. The bad-input list keeps the files of committed rows and drops the rest,
which the rerun finds again.

Bad files: a file that cannot be decoded is recorded in WORKDIR/bad_inputs.jsonl with one line
on stderr; with on_bad_input='skip' its row gets label -1 (excluded from statistics and from
`ArtifactStore`) and the run goes on; with 'fail' the run checkpoints the batches before it and
raises a BadInputError naming it.

Multi-host: the pipeline gives process p the contiguous block p of each global batch; it
projects it on a Manifold whose mesh is its local devices (the bank is replicated per host and
sharded over that host's devices) and writes those rows itself, so no artifact crosses hosts.
Only small things are exchanged: two stop flags per batch, the histogram range on the first
batch, and the per-process statistics at checkpoints and at the end, so every process ends
with the same FingerprintStats.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import threading
import time
from typing import Callable

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from fpjax.errors import UserInputError
from fpjax.data.bad_inputs import BadInputs
from fpjax import fileio
from fpjax import store as store_lib
from fpjax import data
from fpjax import estimators as estimators_lib
from fpjax import parallel
from fpjax import progress as progress_lib
from fpjax import spaces as spaces_lib
from fpjax.manifold import Manifold
from fpjax.stats import FingerprintStats

_STATS_FIELDS = ("count", "mean", "m2", "basis", "basis_mean", "basis_m2", "spectrum",
                 "distance_edges", "distance_hist")


class Preempted(RuntimeError):
  """Raised after a SIGTERM: the state is checkpointed; rerun to resume."""


# ------------------------------------------------------------------------------ inputs


def load_bank_images(real: str, bad_inputs: BadInputs | None = None) -> np.ndarray:
  """Real images for the bank: an embedded dataset name, 'tfds:<name>[:<split>]', a .npy/.npz
  of images [N, H, W, C], or an image folder (all its classes pooled; bad files go to
  `bad_inputs` as stage 'real')."""
  if real in data.REAL_NAMES:
    return np.asarray(data.load_real(real).train_images)
  if real.startswith("tfds:"):
    name, _, split = real[len("tfds:"):].partition(":")
    return data.load_tfds(name, split or "train")[0]
  if real.endswith((".npy", ".npz")):
    return fileio.load_images(real)
  if os.path.isdir(real):
    return data.load_image_folder(real, bad_inputs=bad_inputs, stage="real").images
  raise UserInputError(f"--real {real!r}: not one of {list(data.REAL_NAMES)}, 'tfds:<name>', a "
                       ".npy/.npz of images or an image folder.")


def open_generated(gm: str, image_shape, bad_inputs: BadInputs | None = None
                   ) -> data.ImageFolderSource:
  """--gm: a zoo work directory (has zoo.json and images/) or an image-folder root."""
  if not os.path.isdir(gm):
    raise UserInputError(f"--gm {gm!r}: not a directory (a zoo workdir or an image-folder root).")
  zoo_json = os.path.join(gm, "zoo.json")
  if os.path.isfile(zoo_json):
    meta = fileio.load_json(zoo_json)
    try:
      names = [fileio.check_name(m["name"], f"{zoo_json}: model name") for m in meta["models"]]
    except (KeyError, TypeError) as e:
      raise UserInputError(f"{zoo_json}: no 'models' list of {{'name': ...}} entries: {e}") from e
    root = os.path.join(gm, "images")
    fileio.check_inside(root, gm)
    return data.ImageFolderSource(root, image_shape, class_names=sorted(names),
                                  bad_inputs=bad_inputs)
  return data.ImageFolderSource(gm, image_shape, bad_inputs=bad_inputs)


def resolve_space(space: str, encoder: str | None):
  """The space argument Manifold takes: a name, or the loaded Encoder for 'sl'/'ssl'."""
  if space not in spaces_lib.SPACE_NAMES:
    raise UserInputError(f"space must be one of {spaces_lib.SPACE_NAMES}; got {space!r}")
  if space not in spaces_lib.ENCODER_SPACES:
    if encoder:
      raise UserInputError(
          f"--encoder is for the spaces {spaces_lib.ENCODER_SPACES}, not {space!r}.")
    return space
  if not encoder:
    raise UserInputError(f"space {space!r} needs --encoder=<a saved fpjax Encoder>.")
  if not os.path.exists(encoder):
    raise UserInputError(f"--encoder {encoder!r}: no such file or folder.")
  from fpjax import models  # pylint: disable=g-import-not-at-top
  return models.load_encoder(encoder)


# ------------------------------------------------------------------------------ collectives


def _gather(x) -> np.ndarray:
  """[P, ...]: every process's x, in process order."""
  x = np.asarray(x)
  if jax.process_count() == 1:
    return x[None]
  return np.asarray(multihost_utils.process_allgather(x))


def barrier(name: str) -> None:
  """Every JAX process waits here until all have arrived (a no-op in a single process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


# ------------------------------------------------------------------------------ run state


@dataclasses.dataclass
class _RunState:
  """This process's part of the job: batches done, its statistics (one FingerprintStats per
  estimator), the sums of |φ(x) − p(x)| [estimators, models], bad rows it skipped."""
  batches_done: int = 0
  checkpointed: int = -1
  stats: list[FingerprintStats] | None = None  # this process's rows only
  distance_sum: np.ndarray | None = None
  bad_rows: int = 0


def _local_arrays(run: _RunState) -> dict[str, np.ndarray]:
  out = {f"e{i}_{f}": np.asarray(getattr(st, f))
         for i, st in enumerate(run.stats) for f in _STATS_FIELDS}
  out["distance_sum"] = np.asarray(run.distance_sum, np.float64)
  out["bad_rows"] = np.asarray(run.bad_rows, np.int64)
  return out


def _gathered_arrays(run: _RunState) -> dict[str, np.ndarray]:
  """Every process's state stacked [P, ...] (a collective: all processes call it)."""
  # orbax refuses zero-size arrays (no covariance basis, vector artifacts' spectrum): those are
  # left out and come back from the template on restore.
  return {f: _gather(v) for f, v in _local_arrays(run).items() if v.size}


def _stats_of(template: FingerprintStats, arrays: dict, p: int, i: int) -> FingerprintStats:
  """Estimator i's statistics of process p."""
  return dataclasses.replace(template, **{f: jax.numpy.asarray(arrays[f"e{i}_{f}"][p])
                                          for f in _STATS_FIELDS if f"e{i}_{f}" in arrays})


@dataclasses.dataclass
class _Job:
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
    return FingerprintStats.init(
        self.num_models, self.manifold.embedding_shape,
        basis=np.zeros((self.manifold.dim, basis_dim), np.float32),
        distance_edges=np.arange(num_edges, dtype=np.float32))


def _checkpoint_meta(manager) -> dict | None:
  latest = manager.latest_step()
  if latest is None:
    return None
  return manager.restore(latest, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def _restore(job: _Job, meta: dict | None) -> _RunState:
  """The run state from the latest checkpoint (this process's share), or a fresh one."""
  run = _RunState()
  if meta is None:
    return run
  try:
    job.pipe.set_state(dict(meta["pipeline"], next_batch=meta["batches_done"]))
  except ValueError as e:
    raise UserInputError(f"{job.workdir}: cannot resume this checkpoint: {e}") from e
  template = job.template(meta["basis_dim"], meta["num_edges"])
  num = len(job.estimators)
  zeros = _RunState(stats=[template] * num, distance_sum=np.zeros((num, job.num_models)))
  shapes = {f: np.zeros((jax.process_count(),) + v.shape, v.dtype)
            for f, v in _local_arrays(zeros).items() if v.size}
  arrays = job.manager.restore(meta["batches_done"], args=ocp.args.Composite(
      state=ocp.args.StandardRestore(shapes)))["state"]
  p = jax.process_index()
  run.stats = [_stats_of(template, arrays, p, i) for i in range(num)]
  run.distance_sum = np.asarray(arrays["distance_sum"][p], np.float64)
  run.bad_rows = int(arrays["bad_rows"][p])
  run.batches_done = run.checkpointed = int(meta["batches_done"])
  logging.info("compute_artifacts: resuming %s at batch %d/%d", job.workdir, run.batches_done,
               len(job.pipe))
  return run


def _checkpoint(job: _Job, run: _RunState) -> None:
  """Makes every batch done so far durable: rows flushed on every process, then the state."""
  job.writer.flush()
  if run.stats is None or run.checkpointed == run.batches_done:
    return
  arrays = _gathered_arrays(run)  # also a barrier: every process has flushed its rows
  meta = {"config": job.config, "batches_done": run.batches_done,
          "pipeline": dict(job.pipe.get_state(), next_batch=run.batches_done),
          "basis_dim": int(run.stats[0].basis.shape[1]),
          "num_edges": int(run.stats[0].distance_edges.shape[0])}
  job.manager.save(run.batches_done, args=ocp.args.Composite(
      state=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)), force=True)
  job.manager.wait_until_finished()
  run.checkpointed = run.batches_done
  logging.info("compute_artifacts: checkpoint at batch %d/%d", run.batches_done, len(job.pipe))


def _summary(stats: FingerprintStats, final: dict, distance_sum, class_names) -> dict:
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
  fdr = float(final["fdr"])
  return {"models": models, "fdr": None if np.isnan(fdr) else fdr,
          "artifact_shape": list(stats.artifact_shape)}


def _write_outputs(job: _Job, run: _RunState, t0: float) -> dict:
  """Merges the processes' statistics; writes fingerprints, index.json, then COMPLETE."""
  _checkpoint(job, run)  # the tail's rows flushed; a crash below resumes with nothing to redo
  arrays = {f: _gather(v) for f, v in _local_arrays(run).items()}
  bad_rows = int(arrays["bad_rows"].sum())
  if bad_rows == len(job.source):
    raise UserInputError(f"{job.source.root}: no readable image ({bad_rows} bad files, listed in "
                         f"{job.bad.path}).")
  distance_sum = arrays["distance_sum"].sum(0)
  finals, per_estimator = {}, {}
  for i, key in enumerate(job.keys):
    for p in range(jax.process_count()):  # in process order: the same result on every process
      part = _stats_of(run.stats[i], arrays, p, i)
      stats = part if p == 0 else stats.merge(part)
    finals[key] = stats.finalize()
    per_estimator[key] = _summary(stats, finals[key], distance_sum[i], job.source.class_names)
  first = per_estimator[job.keys[0]]
  summary = {"models": first["models"], "fdr": first["fdr"],
             "artifact_shape": first["artifact_shape"], "k": job.k,
             "estimators": {key: {"models": s["models"], "fdr": s["fdr"]}
                            for key, s in per_estimator.items()},
             "bad_inputs": job.other_bad + bad_rows, "seconds": time.perf_counter() - t0}
  if jax.process_index() == 0:
    for key, final in finals.items():
      fileio.save_npz(store_lib.stats_path(job.workdir, key), **final)
    fileio.save_json(os.path.join(job.workdir, "fingerprint", "summary.json"), summary)
    store_lib.write_index(
        job.workdir, config=job.config, space=job.config["space"], k=job.k,
        estimators=job.keys,
        embedding_shape=job.manifold.embedding_shape, class_names=job.source.class_names,
        gm_root=job.source.root, files=[os.path.relpath(f, job.source.root)
                                        for f in job.source.files],
        num_bad_rows=bad_rows, chunk_rows=job.pipe.local_batch_size,
        process_count=jax.process_count())
    fileio.save_json(os.path.join(job.workdir, store_lib.COMPLETE),
                          {"rows": len(job.source), "bad_rows": bad_rows, "time": time.time()})
  barrier("compute_artifacts complete")
  if jax.process_index() == 0:
    shutil.rmtree(os.path.join(job.workdir, "checkpoints"), ignore_errors=True)
  return summary


# ------------------------------------------------------------------------------ the job


def compute_artifacts(real: str, gm: str, workdir: str, *, space: str = "rgb",
                      encoder: str | None = None, estimators=("nn",), k: int | None = None,
                      precision: str = "exact", batch_size: int = 256, checkpoint_every: int = 20,
                      device_bank_bytes: int | None = None, basis_dim: int = 16,
                      distance_max: float | None = None, on_bad_input: str = "skip",
                      prefetch: int = 2, num_threads: int = 4, log_every_s: float = 10.0,
                      on_batch: Callable[[int], None] | None = None) -> dict:
  """Projects every generated image onto the real manifold; writes artifacts and fingerprints.

  Args:
    real: the real bank (see `load_bank_images`).
    gm: generated images, a zoo workdir or an image-folder root (`open_generated`).
    workdir: output folder (format in fpjax/store/artifact_store.py); rerun with it to resume.
    space: embedding space 'rgb' | 'freq' | 'dct' | 'sl' | 'ssl'.
    encoder: for 'sl'/'ssl', the path of a saved fpjax Encoder (`fpjax.models.load_encoder`).
    estimators: manifold estimators whose artifacts the store holds, in this order: keys
      ('nn', 'knn_mean-k10', 'local_pca-k20-m4', 'kernel-k20-s1', 'learned', 'input'), names
      (a name stands for its whole `estimators.grid`), 'all', or Estimator objects
      (`fpjax.estimators.resolve`).
    k: nearest bank rows searched and stored per image; default (None) the most any estimator
      needs (0 when only 'input' / 'learned': no search); a smaller k is refused.
    precision, device_bank_bytes: passed to `Manifold`.
    batch_size: global batch (all processes), rounded up to a multiple of the device count; a
      process's share is one chunk of the store.
    checkpoint_every: batches between checkpoints.
    basis_dim: principal directions of the bank kept for the fingerprint covariance (0: none).
    distance_max: upper edge of the 64-bin histogram of |φ(x) − p(x)| (default, per estimator:
      twice its largest value in the first batch, rounded up).
    on_bad_input: 'skip' (list bad files in WORKDIR/bad_inputs.jsonl and go on) or 'fail'
      (list it, checkpoint, raise a BadInputError naming it).
    on_batch: called with the number of batches done after each batch (hooks, tests).

  Returns:
    summary.json's content (with 'bad_inputs', the number of files skipped) plus 'workdir'.
    Raises `Preempted` after a SIGTERM (checkpointed), `UserInputError` for input it refuses.
  """
  if checkpoint_every < 1:
    raise UserInputError(f"checkpoint_every must be >= 1; got {checkpoint_every}")
  ests = estimators_lib.resolve(estimators)
  need = max(e.neighbours for e in ests)
  if k is None:
    k = need
  if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < need:
    raise UserInputError(f"k={k!r}: the estimators {[e.key for e in ests]} need the {need} "
                         "nearest bank rows; pass a larger k or leave it unset.")
  k = int(k)
  workdir = os.path.abspath(workdir)
  chief = jax.process_index() == 0
  space_arg = resolve_space(space, encoder)
  bad = BadInputs(workdir, on_bad_input, prefix="compute_artifacts")
  complete = store_lib.is_complete(workdir)
  # Every process reads the bank and lists the folder; process 0 alone reports and records the
  # files they skip (none again for a finished run).
  quiet = BadInputs(workdir, on_bad_input, write=False, echo=False)
  listing = bad if chief and not complete else quiet
  bank_images = load_bank_images(real, listing)
  source = open_generated(gm, bank_images.shape[1:], listing)
  other_bad = len(listing.found)
  config = {"real": real, "gm": os.path.abspath(gm), "space": space, "k": k,
            "estimators": [e.key for e in ests],
            "precision": precision, "num_images": len(source), "class_names": source.class_names,
            "image_shape": list(bank_images.shape[1:])}
  if encoder:
    config["encoder"] = os.path.abspath(encoder)
  if complete:
    done = fileio.load_json(os.path.join(workdir, "artifacts", "index.json"))["config"]
    if done != config:
      raise UserInputError(f"{workdir} holds a finished run with another configuration "
                           f"({done}); use another --workdir.")
    logging.info("compute_artifacts: %s is already complete; nothing to do.", workdir)
    return dict(fileio.load_json(os.path.join(workdir, "fingerprint", "summary.json")),
                workdir=workdir)
  manager = ocp.CheckpointManager(
      os.path.join(workdir, "checkpoints"),
      options=ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False))
  meta = _checkpoint_meta(manager)
  if meta is not None and meta["config"] != config:
    raise UserInputError(f"{workdir}: checkpoint was made with another configuration "
                         f"({meta['config']}); use another --workdir.")
  if chief:
    # The list keeps the bad files of committed rows and what this run found so far (the
    # listings); the rest the batches to come find again.
    committed = meta["batches_done"] * meta["pipeline"]["batch_size"] if meta else 0
    bad.keep_only(lambda e: e in bad.found or (e.get("stage") == "decode"
                                                and e.get("row", committed) < committed))

  t0 = time.perf_counter()
  logging.info("compute_artifacts: process %d of %d, %d of %d devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  bank = spaces_lib.embed(bank_images, space_arg, batch_size=4096)
  # With no search (k = 0) the Manifold still holds the bank: the covariance basis and the
  # embedding shape come from it.
  local_mesh = parallel.make_mesh(devices=jax.local_devices())
  manifold = Manifold(bank, space=space_arg, mesh=local_mesh, precision=precision, k=max(k, 1),
                      image_shape=bank_images.shape[1:], device_bank_bytes=device_bank_bytes)
  logging.info("compute_artifacts: bank of %d real images in '%s' built in %.1f s", manifold.size,
               space, time.perf_counter() - t0)
  autoencoder = _learned_autoencoder(workdir, bank, ests, fresh=meta is None)
  del bank
  n_dev = jax.device_count()
  batch = -(-batch_size // n_dev) * n_dev
  pipe = data.make_pipeline(source, batch_size=batch, drop_remainder=False, prefetch=prefetch,
                            num_threads=num_threads)
  if meta is None and chief:
    store_lib.ArtifactWriter.create(workdir, len(source), pipe.local_batch_size,
                                      manifold.embedding_shape, k, config["estimators"])
  barrier("compute_artifacts store created")  # and the bad-input list trimmed
  job = _Job(workdir, config, source, manifold, ests, k, autoencoder, pipe,
             store_lib.ArtifactWriter.open(workdir, k, config["estimators"]), manager, bad,
             other_bad)
  run = _restore(job, meta)
  basis = None
  if run.stats is None and basis_dim:
    basis = manifold.principal_basis(min(basis_dim, manifold.dim, manifold.size))
  _run_batches(job, run, basis, distance_max, checkpoint_every, log_every_s, on_batch)
  summary = _write_outputs(job, run, t0)
  logging.info("compute_artifacts: wrote %s (%d images, %d models, %d estimators, %d bad inputs "
               "skipped, FDR %s) in %.1f s", workdir,
               len(source) - (summary["bad_inputs"] - other_bad), job.num_models, len(ests),
               summary["bad_inputs"], summary["fdr"], summary["seconds"])
  return dict(summary, workdir=workdir)


def _learned_autoencoder(workdir: str, bank, ests, *, fresh: bool):
  """The 'learned' estimator's autoencoder (None when not asked), WORKDIR/autoencoder.

  Every process trains it on the bank's embeddings on one of its devices, with the same seed:
  training is deterministic, so all hold the same model (bitwise on the CPU; to float rounding
  on GPUs) whatever the number of processes. One device: a data-parallel step's gradient
  all-reduce goes through the CPU collectives (gloo) in a multi-process run, where the
  processes' separate local reductions hung; the model is small. Saving is a collective orbax
  write (process 0 alone would wait for the others forever). They save it together to a temporary folder that process 0 renames into
  place; a resumed run loads it instead of training. A fresh run (no checkpoint) trains again:
  a folder left there may come from another configuration.
  """
  if not any(e.name == "learned" for e in ests):
    return None
  from fpjax.models import autoencoder as autoencoder_lib  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "autoencoder")
  if not fresh and os.path.isdir(path):
    return autoencoder_lib.load_manifold_autoencoder(path)
  t0 = time.perf_counter()
  mesh = parallel.make_mesh(devices=jax.local_devices()[:1])
  model = autoencoder_lib.train_manifold_autoencoder(np.asarray(bank), seed=0, mesh=mesh)
  tmp = os.path.join(workdir, ".tmp-autoencoder")
  if jax.process_index() == 0:
    shutil.rmtree(tmp, ignore_errors=True)
  barrier("compute_artifacts autoencoder trained")
  model.save(tmp)
  barrier("compute_artifacts autoencoder written")
  if jax.process_index() == 0:
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
  barrier("compute_artifacts autoencoder saved")
  logging.info("compute_artifacts: trained the 'learned' autoencoder in %.1f s (%s)",
               time.perf_counter() - t0, path)
  return model


def _project(job: _Job, run: _RunState, local: dict, basis, distance_max):
  """Projects one block; returns the new statistics and the rows to write (bad rows blanked)."""
  valid = np.asarray(local["valid"])
  errors = local.get("error")
  bad = valid & (errors != "") if errors is not None else np.zeros_like(valid)
  good = valid & ~bad
  labels = np.where(good, local["label"], store_lib.BAD_LABEL).astype(np.int32)
  emb = spaces_lib.embed(local["image"], job.manifold.space, batch_size=4096)
  rows = {}
  neighbours = d2 = None
  if job.k:  # one search for every estimator
    # The search alone: the estimators take every neighbour row from one gather.
    index, distance = job.manifold.search(emb, batch_size=job.pipe.local_batch_size)
    index = np.array(index, np.int32)  # the one device -> host copy (the gather takes it)
    neighbours = job.manifold.neighbour_rows(index, batch_size=job.pipe.local_batch_size)
    d2 = jax.numpy.square(distance)
    distance = np.array(distance, np.float32)
    distance[~good], index[~good] = np.nan, -1
    rows.update(distance=distance, index=index)
  arts = estimators_lib.artifacts(job.estimators, emb, neighbours, d2, job.autoencoder)
  stats, dsum = run.stats, run.distance_sum
  artifacts, norms = [], []
  for key in job.keys:
    artifact = np.array(arts[key], np.float32)
    flat = artifact.reshape(len(artifact), -1)
    # |φ(x) − p(x)|: the distance to this estimator's manifold point (nn: to the nearest row).
    norms.append(np.sqrt(np.einsum("ij,ij->i", flat, flat, dtype=np.float64)).astype(np.float32))
    artifacts.append(artifact)
  if stats is None:  # first batch: the histogram ranges, the same on every process
    tops = np.array([float(n[good].max()) if good.any() else 0.0 for n in norms])
    top = _gather(tops).max(0)
    stats = [FingerprintStats.init(job.num_models, job.manifold.embedding_shape, basis=basis,
                                   distance_edges=np.linspace(
                                       0.0, distance_max or max(1.0, float(np.ceil(2 * t))), 65))
             for t in top]
    dsum = np.zeros((len(job.keys), job.num_models), np.float64)
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
  rows = {f: a[:n] for f, a in rows.items()}
  first = int(local["row"][0]) if n else 0
  if n and not np.array_equal(local["row"][:n], first + np.arange(n)):
    raise AssertionError("pipeline block is not a contiguous run of rows")
  return stats, dsum, bad, first, rows, norms[0][:n]


def _run_batches(job: _Job, run: _RunState, basis, distance_max, checkpoint_every, log_every_s,
                 on_batch) -> None:
  pipe = job.pipe
  metrics = progress_lib.MetricWriter(job.workdir)
  total = len(job.source)
  prog = progress_lib.Progress(total, desc="compute_artifacts", log_every_s=log_every_s,
                               initial=min(total, run.batches_done * pipe.batch_size))
  term = threading.Event()
  previous = None
  if threading.current_thread() is threading.main_thread():
    previous = signal.signal(signal.SIGTERM, lambda *_: term.set())
  try:
    for local in pipe.local_batches():
      t_batch = time.perf_counter()
      stats, dsum, bad, first, rows, dist = _project(job, run, local, basis, distance_max)
      for t in np.flatnonzero(bad):
        row = int(local["row"][t])
        job.bad.record(pipe.path_of(row), str(local["error"][t]), "decode", row=row)
      stop = _gather(np.array([term.is_set(), bad.any() and not job.bad.skip])).any(0)
      if stop[1]:  # --on_bad_input=fail: this batch is not committed
        _checkpoint(job, run)
        if job.bad.found:
          raise job.bad.error()
        raise UserInputError(f"stopped: another process found a bad input (--on_bad_input=fail); "
                             f"see {job.bad.path}.")
      # Commit the batch only once all of it is computed: a failure leaves the state consistent.
      if rows["label"].size:
        job.writer.write(first, rows)
      run.stats, run.distance_sum = stats, dsum
      run.bad_rows += int(bad.sum())
      run.batches_done += 1
      prog.update(min(total, run.batches_done * pipe.batch_size) - prog.done,
                  note=f"{job.other_bad + run.bad_rows} bad inputs" if job.bad.found else "")
      good = rows["label"] >= 0
      metrics.write(run.batches_done, images=prog.done, images_per_s=prog.rate,
                    batch_seconds=time.perf_counter() - t_batch,
                    batch_mean_distance=float(dist[good].mean()) if good.any() else 0.0)
      if on_batch is not None:
        on_batch(run.batches_done)
      if stop[0] or run.batches_done % checkpoint_every == 0:
        _checkpoint(job, run)
      if stop[0]:
        raise Preempted(f"SIGTERM: checkpointed {job.workdir} at batch {run.batches_done}/"
                        f"{len(pipe)}; rerun with the same --workdir to resume.")
  except (Preempted, UserInputError):
    raise
  except BaseException:
    # Keep everything computed so far. With several processes an orbax save needs all of them,
    # and the others are not here: keep the periodic checkpoints only.
    if jax.process_count() == 1 and run.batches_done > max(run.checkpointed, 0):
      logging.error("compute_artifacts: stopping at batch %d; checkpointing what is done.",
                    run.batches_done)
      _checkpoint(job, run)
    raise
  finally:
    if previous is not None:
      signal.signal(signal.SIGTERM, previous)
    metrics.close()
