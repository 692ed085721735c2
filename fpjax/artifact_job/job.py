"""compute_artifacts: open (or resume) the work directory, build the bank, run the batches,
write the outputs. The steps live beside it: inputs.py, state.py (checkpoints), batch.py (one
block), loop.py (the batches), outputs.py (fingerprints and the COMPLETE marker)."""
from __future__ import annotations

import os
import shutil
import time
from typing import Callable

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from fpjax import data
from fpjax import estimators as estimators_lib
from fpjax import fileio
from fpjax import parallel
from fpjax import spaces as spaces_lib
from fpjax import store as store_lib
from fpjax.parallel import barrier
from fpjax.artifact_job.inputs import load_bank_images, open_generated, resolve_space
from fpjax.artifact_job.loop import run_batches
from fpjax.artifact_job.outputs import write_outputs
from fpjax.artifact_job.state import Job, checkpoint_manager, checkpoint_meta, restore
from fpjax.data.bad_inputs import BadInputs
from fpjax.errors import ConfigMismatchError, UserInputError
from fpjax.knn import index as knn_index
from fpjax.manifold import Manifold
from fpjax.models import autoencoder as autoencoder_lib


def _estimators_and_k(estimators, k) -> tuple[list, int]:
  """The Estimator objects, and k checked against the most neighbours they need."""
  ests = estimators_lib.resolve(estimators)
  need = max(e.neighbours for e in ests)
  if k is None:
    k = need
  if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < need:
    raise UserInputError(f"k={k!r}: the estimators {[e.key for e in ests]} need the {need} "
                         "nearest bank rows; pass a larger k or leave it unset.")
  return ests, int(k)


def _read_inputs(real: str, gm: str, workdir: str, on_bad_input: str, complete: bool):
  """(the run's bad-input list, bank images, generated-image source, files skipped so far).

  Every process reads the bank and lists the folder; process 0 alone reports and records the
  files they skip (none again for a finished run)."""
  bad = BadInputs(workdir, on_bad_input, prefix="compute_artifacts")
  quiet = BadInputs(workdir, on_bad_input, write=False, echo=False)
  listing = bad if parallel.is_chief() and not complete else quiet
  bank_images = load_bank_images(real, listing)
  source = open_generated(gm, bank_images.shape[1:], listing)
  return bad, bank_images, source, len(listing.found)


def _job_config(real, gm, space, encoder, k, ests, precision, source, image_shape) -> dict:
  """What makes two runs the same run: a resumed or finished run must have been made with it."""
  config = {"real": real, "gm": os.path.abspath(gm), "space": space, "k": k,
            "estimators": [e.key for e in ests],
            "precision": precision, "num_images": len(source), "class_names": source.class_names,
            "image_shape": list(image_shape)}
  if encoder:
    config["encoder"] = os.path.abspath(encoder)
  return config


def _finished(workdir: str, config: dict) -> dict:
  """A complete work directory of this configuration: its summary (nothing is recomputed)."""
  done = fileio.load_json(os.path.join(workdir, "artifacts", "index.json"))["config"]
  if done != config:
    raise ConfigMismatchError(f"{workdir} holds a finished run with another configuration "
                              f"({done}); use another --workdir.", workdir)
  logging.info("compute_artifacts: %s is already complete; nothing to do.", workdir)
  return dict(fileio.load_json(os.path.join(workdir, "fingerprint", "summary.json")),
              workdir=workdir)


def _resumable(workdir: str, manager: ocp.CheckpointManager, config: dict,
               bad: BadInputs) -> dict | None:
  """The latest checkpoint's meta (None: a fresh run), refused if of another configuration.
  Process 0 trims the bad-input list to what the resumed run will not find again."""
  meta = checkpoint_meta(manager)
  if meta is not None and meta["config"] != config:
    raise ConfigMismatchError(f"{workdir}: checkpoint was made with another configuration "
                              f"({meta['config']}); use another --workdir.", workdir)
  if parallel.is_chief():
    # The list keeps the bad files of committed rows and what this run found so far (the
    # listings); the rest the batches to come find again.
    committed = meta["batches_done"] * meta["pipeline"]["batch_size"] if meta else 0
    bad.keep_only(lambda e: e in bad.found or (e.get("stage") == "decode"
                                                and e.get("row", committed) < committed))
  return meta


def _learned_autoencoder(workdir: str, bank, ests, *, fresh: bool):
  """The 'learned' estimator's autoencoder (None when not asked), WORKDIR/autoencoder.

  Every process trains it on the bank's embeddings on one of its devices, with the same seed:
  training is deterministic, so all hold the same model (bitwise on the CPU; to float rounding
  on GPUs) whatever the number of processes. One device: a data-parallel step's gradient
  all-reduce goes through the CPU collectives (gloo) in a multi-process run, where the
  processes' separate local reductions hung; the model is small. Saving is a collective orbax
  write (process 0 alone would wait for the others forever): they save it together to a
  temporary folder that process 0 renames into place. A resumed run loads it instead of
  training; a fresh run (no checkpoint) trains again: a folder left there may come from another
  configuration.
  """
  if not any(e.name == "learned" for e in ests):
    return None
  path = os.path.join(workdir, "autoencoder")
  if not fresh and os.path.isdir(path):
    return autoencoder_lib.load_manifold_autoencoder(path)
  t0 = time.perf_counter()
  mesh = parallel.make_mesh(devices=jax.local_devices()[:1])
  model = autoencoder_lib.train_manifold_autoencoder(np.asarray(bank), seed=0, mesh=mesh)
  tmp = os.path.join(workdir, ".tmp-autoencoder")
  if parallel.is_chief():
    shutil.rmtree(tmp, ignore_errors=True)
  barrier("compute_artifacts autoencoder trained")
  model.save(tmp)
  barrier("compute_artifacts autoencoder written")
  if parallel.is_chief():
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
  barrier("compute_artifacts autoencoder saved")
  logging.info("compute_artifacts: trained the 'learned' autoencoder in %.1f s (%s)",
               time.perf_counter() - t0, path)
  return model


def _manifold(bank, space_arg, image_shape, precision: str, k: int,
              device_bank_bytes: int | None) -> Manifold:
  """The bank on this process's devices: replicated per host, so no artifact crosses hosts.
  With no search (k = 0) the Manifold still holds the bank: the covariance basis and the
  embedding shape come from it. A k the search cannot answer is refused here, before the store
  is created."""
  manifold = Manifold(bank, space=space_arg, mesh=parallel.make_mesh(devices=jax.local_devices()),
                      precision=precision, image_shape=image_shape,
                      device_bank_bytes=device_bank_bytes)
  if k:
    knn_index.check_k(k, manifold.size)
  return manifold


def _store_writer(workdir: str, config: dict, manifold: Manifold, pipe: data.Pipeline, *,
                  fresh: bool) -> store_lib.ArtifactWriter:
  """The store's writer; a fresh run's process 0 first creates the empty arrays (one chunk a
  process's block of a global batch)."""
  if fresh and parallel.is_chief():
    store_lib.ArtifactWriter.create(workdir, config["num_images"], pipe.local_batch_size,
                                    manifold.embedding_shape, config["k"], config["estimators"])
  barrier("compute_artifacts store created")  # and the bad-input list trimmed
  return store_lib.ArtifactWriter.open(workdir, config["k"], config["estimators"])


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
    prefetch, num_threads: the input pipeline's prefetch depth and decoding threads.
    log_every_s: seconds between progress lines.
    on_batch: called with the number of batches done after each committed batch (hooks; tests
      stop a run at a chosen batch with it).

  Returns:
    summary.json's content (with 'bad_inputs', the number of files skipped) plus 'workdir'.
    Raises `fpjax.errors.Preempted` after a SIGTERM (checkpointed), `ConfigMismatchError` when
    the work directory holds a run of another configuration, `UserInputError` for other input
    it refuses.
  """
  if checkpoint_every < 1:
    raise UserInputError(f"checkpoint_every must be >= 1; got {checkpoint_every}")
  ests, k = _estimators_and_k(estimators, k)
  workdir = os.path.abspath(workdir)
  space_arg = resolve_space(space, encoder)
  complete = store_lib.is_complete(workdir)
  bad, bank_images, source, other_bad = _read_inputs(real, gm, workdir, on_bad_input,
                                                     complete)
  config = _job_config(real, gm, space, encoder, k, ests, precision, source,
                       bank_images.shape[1:])
  if complete:
    return _finished(workdir, config)
  manager = checkpoint_manager(workdir)
  meta = _resumable(workdir, manager, config, bad)
  t0 = time.perf_counter()
  logging.info("compute_artifacts: process %d of %d, %d of %d devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  bank = spaces_lib.embed(bank_images, space_arg, batch_size=4096)
  manifold = _manifold(bank, space_arg, bank_images.shape[1:], precision, k, device_bank_bytes)
  logging.info("compute_artifacts: bank of %d real images in '%s' built in %.1f s", manifold.size,
               space, time.perf_counter() - t0)
  autoencoder = _learned_autoencoder(workdir, bank, ests, fresh=meta is None)
  del bank
  pipe = data.make_pipeline(source, batch_size=-(-batch_size // jax.device_count())
                            * jax.device_count(), drop_remainder=False, prefetch=prefetch,
                            num_threads=num_threads)
  job = Job(workdir, config, source, manifold, ests, k, autoencoder, pipe,
            _store_writer(workdir, config, manifold, pipe, fresh=meta is None), manager, bad,
            other_bad)
  run = restore(job, meta)
  basis = None
  if run.stats is None and basis_dim:
    basis = manifold.principal_basis(min(basis_dim, manifold.dim, manifold.size))
  run_batches(job, run, basis, distance_max, checkpoint_every, log_every_s, on_batch)
  summary = write_outputs(job, run, t0)
  logging.info("compute_artifacts: wrote %s (%d images, %d models, %d estimators, %d bad inputs "
               "skipped, FDR %s) in %.1f s", workdir,
               len(source) - (summary["bad_inputs"] - job.other_bad), job.num_models, len(ests),
               summary["bad_inputs"], summary["fdr"], summary["seconds"])
  return dict(summary, workdir=workdir)
