"""compute_artifacts: the streaming, resumable, multi-host job behind the binary of that name.

    real bank (embedded dataset | image folder | TFDS | .npy)  ->  Manifold (bank on devices)
    generated images (zoo workdir | image folder), decoded lazily by the grain pipeline
      -> per-process shard of each global batch -> Manifold.project -> artifacts
      -> FingerprintStats (every process, identical) + artifact shards (process 0 writes)

Resuming: every `checkpoint_every` batches (and on SIGTERM, and when a batch fails) the rows
projected since the last checkpoint go to a new shard file, then an orbax checkpoint records
the pipeline position, the partial FingerprintStats and the list of shard files. A rerun with
the same work directory restores the latest checkpoint, deletes shard files the checkpoint does
not list (written after it) and continues; the result equals an uninterrupted run. The
`COMPLETE` marker is written last (see fpjax/artifact_io.py for the file format).

Multi-host: the pipeline builds global batches with `jax.make_array_from_process_local_data`
over all devices; each process takes back its own rows, projects them on a Manifold whose mesh is
its local devices (the bank is replicated per host and sharded over that host's devices), and the
results are all-gathered in global row order, so every process holds the same statistics and
process 0 writes. (Manifold cannot yet take arrays spanning processes: see the core request in
the notes.)
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

from fpjax import artifact_io
from fpjax import data
from fpjax import parallel
from fpjax import progress as progress_lib
from fpjax.manifold import Manifold
from fpjax.stats import FingerprintStats

SPACES = ("rgb", "freq", "dct")
_STATS_FIELDS = ("count", "mean", "m2", "basis", "basis_mean", "basis_m2", "spectrum",
                 "distance_edges", "distance_hist")


class Preempted(RuntimeError):
  """Raised after a SIGTERM: the state is checkpointed; rerun to resume."""


# ------------------------------------------------------------------------------ inputs


def load_bank_images(real: str) -> np.ndarray:
  """Real images for the bank: an embedded dataset name, 'tfds:<name>[:<split>]', a .npy/.npz
  of images [N, H, W, C], or an image folder (all its classes pooled)."""
  if real in data.REAL_NAMES:
    return np.asarray(data.load_real(real).train_images)
  if real.startswith("tfds:"):
    name, _, split = real[len("tfds:"):].partition(":")
    return data.load_tfds(name, split or "train")[0]
  if real.endswith((".npy", ".npz")):
    return artifact_io.load_images(real)
  if os.path.isdir(real):
    return data.load_image_folder(real).images
  raise ValueError(f"--real {real!r}: not one of {list(data.REAL_NAMES)}, 'tfds:<name>', a .npy/"
                   ".npz of images or an image folder.")


def open_generated(gm: str, image_shape) -> data.ImageFolderSource:
  """--gm: a zoo work directory (has zoo.json and images/) or an image-folder root."""
  if not os.path.isdir(gm):
    raise ValueError(f"--gm {gm!r}: not a directory (a zoo workdir or an image-folder root).")
  zoo_json = os.path.join(gm, "zoo.json")
  if os.path.isfile(zoo_json):
    meta = artifact_io.load_json(zoo_json)
    try:
      names = [artifact_io.check_name(m["name"], f"{zoo_json}: model name") for m in meta["models"]]
    except (KeyError, TypeError) as e:
      raise ValueError(f"{zoo_json}: no 'models' list of {{'name': ...}} entries: {e}") from e
    root = os.path.join(gm, "images")
    artifact_io.check_inside(root, gm)
    return data.ImageFolderSource(root, image_shape, class_names=sorted(names))
  return data.ImageFolderSource(gm, image_shape)


# ------------------------------------------------------------------------------ helpers


def _host_local(batch: dict[str, jax.Array], mesh) -> dict[str, np.ndarray]:
  """This process's rows of a global batch (the rows it fed to the pipeline)."""
  if jax.process_count() == 1:
    return {k: np.asarray(v) for k, v in batch.items()}
  local = multihost_utils.global_array_to_host_local_array(
      batch, mesh, jax.sharding.PartitionSpec(parallel.DATA))
  return {k: np.asarray(v) for k, v in local.items()}


def _all_rows(x: np.ndarray) -> np.ndarray:
  """Every process's local rows, in the pipeline's global order (element j from process j % P)."""
  if jax.process_count() == 1:
    return x
  g = np.asarray(multihost_utils.process_allgather(x))  # [P, local, ...]
  return np.swapaxes(g, 0, 1).reshape((-1,) + x.shape[1:])


def _any_process(flag: bool) -> bool:
  if jax.process_count() == 1:
    return flag
  return bool(np.asarray(multihost_utils.process_allgather(np.array([flag]))).any())


def _stats_arrays(stats: FingerprintStats, distance_sum: np.ndarray) -> dict[str, np.ndarray]:
  # orbax refuses zero-size arrays (no covariance basis, vector artifacts' spectrum): those are
  # left out and come back from the template on restore.
  out = {f: np.asarray(getattr(stats, f)) for f in _STATS_FIELDS if getattr(stats, f).size}
  out["distance_sum"] = np.asarray(distance_sum, np.float64)
  return out


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


# ------------------------------------------------------------------------------ the job


@dataclasses.dataclass
class _RunState:
  batches_done: int = 0
  shards: list = dataclasses.field(default_factory=list)
  stats: FingerprintStats | None = None
  distance_sum: np.ndarray | None = None
  pending: list = dataclasses.field(default_factory=list)
  checkpointed: int = -1


def compute_artifacts(real: str, gm: str, workdir: str, *, space: str = "rgb", k: int = 1,
                      precision: str = "exact", batch_size: int = 256, checkpoint_every: int = 20,
                      device_bank_bytes: int | None = None, basis_dim: int = 16,
                      distance_max: float | None = None, prefetch: int = 2, num_threads: int = 4,
                      log_every_s: float = 10.0,
                      on_batch: Callable[[int], None] | None = None) -> dict:
  """Projects every generated image onto the real manifold; writes artifacts and fingerprints.

  Args:
    real: the real bank (see `load_bank_images`).
    gm: generated images, a zoo workdir or an image-folder root (`open_generated`).
    workdir: output folder (format in fpjax/artifact_io.py); rerun with it to resume.
    space: embedding space 'rgb' | 'freq' | 'dct'.
    k, precision, device_bank_bytes: passed to `Manifold`.
    batch_size: global batch (all processes), rounded up to a multiple of the device count.
    checkpoint_every: batches between checkpoints (each checkpoint closes one shard file).
    basis_dim: principal directions of the bank kept for the fingerprint covariance (0: none).
    distance_max: upper edge of the 64-bin distance histogram (default: twice the largest
      distance in the first batch, rounded up).
    on_batch: called with the number of batches done after each batch (hooks, tests).

  Returns:
    summary.json's content plus 'workdir'. Raises `Preempted` after a SIGTERM (checkpointed).
  """
  if space not in SPACES:
    raise ValueError(f"space must be one of {SPACES}; got {space!r}")
  if checkpoint_every < 1:
    raise ValueError(f"checkpoint_every must be >= 1; got {checkpoint_every}")
  workdir = os.path.abspath(workdir)
  chief = jax.process_index() == 0
  art_dir = os.path.join(workdir, "artifacts")

  bank_images = load_bank_images(real)
  source = open_generated(gm, bank_images.shape[1:])
  config = {"real": real, "gm": os.path.abspath(gm), "space": space, "k": k,
            "precision": precision, "num_images": len(source), "class_names": source.class_names,
            "image_shape": list(bank_images.shape[1:])}
  if artifact_io.is_complete(workdir):
    index = artifact_io.read_index(workdir)
    if index["config"] != config:
      raise ValueError(f"{workdir} holds a finished run with another configuration "
                       f"({index['config']}); use another --workdir.")
    logging.info("compute_artifacts: %s is already complete; nothing to do.", workdir)
    return dict(artifact_io.load_json(os.path.join(workdir, "fingerprint", "summary.json")),
                workdir=workdir)

  t0 = time.perf_counter()
  logging.info("compute_artifacts: process %d of %d, %d of %d devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  local_mesh = parallel.make_mesh(devices=jax.local_devices())
  manifold = Manifold.from_images(bank_images, space, mesh=local_mesh, precision=precision, k=k,
                                  device_bank_bytes=device_bank_bytes)
  logging.info("compute_artifacts: bank of %d real images in '%s' (%s) built in %.1f s", manifold.size,
               space, "streamed from host" if manifold.bank is None else "on device",
               time.perf_counter() - t0)
  emb_shape = manifold.embedding_shape
  num_models = len(source.class_names)
  n_dev = jax.device_count()
  batch = -(-batch_size // n_dev) * n_dev
  global_mesh = jax.make_mesh((n_dev,), (parallel.DATA,))
  pipe = _make_pipeline(source, batch, global_mesh, prefetch, num_threads)
  local_batch = batch // jax.process_count()

  manager = ocp.CheckpointManager(
      os.path.join(workdir, "checkpoints"),
      options=ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False))
  run = _RunState()
  latest = manager.latest_step()
  if latest is not None:
    meta = manager.restore(latest, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    if meta["config"] != config:
      raise ValueError(f"{workdir}: checkpoint was made with another configuration "
                       f"({meta['config']}); use another --workdir.")
    template = FingerprintStats.init(num_models, emb_shape,
                                     basis=np.zeros((manifold.dim, meta["basis_dim"]), np.float32),
                                     distance_edges=np.arange(meta["num_edges"], dtype=np.float32))
    arrays = manager.restore(latest, args=ocp.args.Composite(state=ocp.args.StandardRestore(
        _stats_arrays(template, np.zeros(num_models)))))["state"]
    run.stats = dataclasses.replace(template, **{f: jax.numpy.asarray(arrays[f])
                                                 for f in _STATS_FIELDS if f in arrays})
    run.distance_sum = np.asarray(arrays["distance_sum"], np.float64)
    run.batches_done = run.checkpointed = int(meta["batches_done"])
    run.shards = list(meta["shards"])
    pipe.set_state(dict(meta["pipeline"], next_batch=run.batches_done))
    logging.info("compute_artifacts: resuming %s at batch %d/%d (%d shard files kept)", workdir,
                 run.batches_done, len(pipe), len(run.shards))
  if chief:  # anything not listed by the checkpoint was written after it: redo it
    keep = {s["file"] for s in run.shards}
    for name in os.listdir(art_dir) if os.path.isdir(art_dir) else []:
      if name not in keep and (name.startswith("shard-") or name.startswith(".tmp-")):
        os.remove(os.path.join(art_dir, name))
  basis = None
  if run.stats is None and basis_dim:
    basis = manifold.principal_basis(min(basis_dim, manifold.dim, manifold.size))

  metrics = progress_lib.MetricWriter(workdir)
  rows_done = sum(s["rows"] for s in run.shards)
  prog = progress_lib.Progress(len(source), desc="compute_artifacts", initial=rows_done,
                               log_every_s=log_every_s)

  def checkpoint():
    if run.pending:
      rows = {f: np.concatenate([p[f] for p in run.pending]) for f in artifact_io.SHARD_FIELDS}
      name = f"shard-{len(run.shards):05d}.npz"
      if chief:
        artifact_io.save_npz(os.path.join(art_dir, name), **rows)
      run.shards.append({"file": name, "rows": int(len(rows["row"])),
                         "first_row": int(rows["row"][0])})
      run.pending = []
    if run.stats is None or run.checkpointed == run.batches_done:
      return
    meta = {"config": config, "batches_done": run.batches_done, "shards": run.shards,
            "pipeline": dict(pipe.get_state(), next_batch=run.batches_done),
            "basis_dim": int(run.stats.basis.shape[1]),
            "num_edges": int(run.stats.distance_edges.shape[0])}
    manager.save(run.batches_done, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_stats_arrays(run.stats, run.distance_sum)),
        meta=ocp.args.JsonSave(meta)), force=True)
    manager.wait_until_finished()
    run.checkpointed = run.batches_done
    logging.info("compute_artifacts: checkpoint at batch %d (%d shard files)", run.batches_done,
                 len(run.shards))

  term = threading.Event()
  previous = None
  if threading.current_thread() is threading.main_thread():
    previous = signal.signal(signal.SIGTERM, lambda *_: term.set())
  try:
    for global_batch in pipe:
      t_batch = time.perf_counter()
      local = _host_local(global_batch, global_mesh)
      labels = np.where(local["valid"], local["label"], -1).astype(np.int32)
      proj = manifold.project(local["image"], batch_size=local_batch)
      out = {"artifact": np.asarray(proj.artifact, np.float32),
             "distance": np.asarray(proj.distance, np.float32),
             "index": np.asarray(proj.index, np.int32), "label": labels,
             "row": local["row"].astype(np.int64)}
      out = {f: _all_rows(v) for f, v in out.items()}
      stats, dsum = run.stats, run.distance_sum
      if stats is None:  # first batch: the histogram range (same on every process)
        hi = distance_max or max(1.0, float(np.ceil(2 * out["distance"][:, 0].max())))
        stats = FingerprintStats.init(num_models, emb_shape, basis=basis,
                                      distance_edges=np.linspace(0.0, hi, 65))
        dsum = np.zeros(num_models, np.float64)
      stats = stats.update(out["artifact"], out["distance"], out["label"])
      keep = out["label"] >= 0
      dsum = dsum + np.bincount(out["label"][keep], out["distance"][keep, 0].astype(np.float64),
                                minlength=num_models)
      # Commit the batch only once all of it is computed: a failure leaves the state consistent.
      run.stats, run.distance_sum = stats, dsum
      run.pending.append({f: v[keep] for f, v in out.items()})
      run.batches_done += 1
      prog.update(int(keep.sum()))
      metrics.write(run.batches_done, images=prog.done, images_per_s=prog.rate,
                    batch_seconds=time.perf_counter() - t_batch,
                    batch_mean_distance=float(out["distance"][keep, 0].mean()) if keep.any() else 0.0)
      if on_batch is not None:
        on_batch(run.batches_done)
      stop = _any_process(term.is_set())
      if stop or run.batches_done % checkpoint_every == 0:
        checkpoint()
      if stop:
        raise Preempted(f"SIGTERM: checkpointed {workdir} at batch {run.batches_done}/{len(pipe)}; "
                        "rerun with the same --workdir to resume.")
  except Preempted:
    raise
  except BaseException:
    # Keep everything computed so far (e.g. a bad file in the middle of the run). With several
    # processes an orbax save needs all of them, and the others are not here: keep the periodic
    # checkpoints only.
    if jax.process_count() == 1 and run.batches_done > max(run.checkpointed, 0):
      logging.error("compute_artifacts: stopping at batch %d; checkpointing what is done.",
                    run.batches_done)
      checkpoint()
    raise
  finally:
    if previous is not None:
      signal.signal(signal.SIGTERM, previous)
    metrics.close()

  # ---- finish: shard of the tail, fingerprints, index, then the COMPLETE marker
  if run.pending:
    checkpoint()
  final = run.stats.finalize()
  summary = _summary(run.stats, final, run.distance_sum, source.class_names)
  summary["seconds"] = time.perf_counter() - t0
  if chief:
    fp_dir = os.path.join(workdir, "fingerprint")
    artifact_io.save_npz(os.path.join(fp_dir, "stats.npz"), **final)
    artifact_io.save_json(os.path.join(fp_dir, "summary.json"), summary)
    files = [os.path.relpath(f, source.root) for f in source.files]
    artifact_io.save_json(os.path.join(art_dir, "index.json"), {
        "format": artifact_io.FORMAT, "config": config, "space": space, "k": k,
        "embedding_shape": list(emb_shape), "num_rows": len(source),
        "class_names": source.class_names, "gm_root": source.root, "files": files,
        "shards": run.shards, "fields": list(artifact_io.SHARD_FIELDS)})
    artifact_io.save_json(os.path.join(workdir, artifact_io.COMPLETE),
                          {"rows": len(source), "shards": len(run.shards), "time": time.time()})
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("compute_artifacts complete")
  if chief:
    shutil.rmtree(os.path.join(workdir, "checkpoints"), ignore_errors=True)
  logging.info("compute_artifacts: wrote %s (%d images, %d models, FDR %s) in %.1f s", workdir,
               len(source), num_models, summary["fdr"], summary["seconds"])
  return dict(summary, workdir=workdir)


def _make_pipeline(source, batch, mesh, prefetch, num_threads):
  return data.make_pipeline(source, batch_size=batch, mesh=mesh, drop_remainder=False,
                            prefetch=prefetch, num_threads=num_threads)
