"""The artifact job (`compute_artifacts`): the streaming, resumable, multi-host job behind the
binary of that name.

    real bank (embedded dataset | image folder | TFDS | .npy)  ->  Manifold (bank on devices)
    generated images (zoo workdir | image folder), decoded lazily by the grain pipeline
      -> this process's block of each global batch -> φ(x) -> ONE k-NN search
         (k = the most neighbours any estimator needs) -> the k nearest bank rows
         -> each manifold estimator's artifact φ(x) − p(x) (fpjax/estimators.py)
      -> this process's rows of the artifact store (zarr, its own chunks; one artifact array
         per estimator)
      -> this process's FingerprintStats per estimator, merged over processes at the end

Modules, in the order the job runs them:
  inputs.py       the real bank, the generated images, the embedding space
  job.py          compute_artifacts: opens or resumes the work directory, builds the bank
  state.py        Job (what the steps share), RunState, checkpoint / restore
  batch.py        one block: embed -> search -> estimators -> rows and statistics
  loop.py         the batch loop: stop flags, commit, progress, checkpoints, SIGTERM
  outputs.py      merged statistics, fingerprint/, summary.json, index.json, COMPLETE
(what processes exchange goes through fpjax.parallel: gather_processes, barrier)

Estimators: `estimators` takes keys ('knn_mean-k10'), names (a name stands for its whole
`estimators.grid`: the candidates an evaluation chooses from) or Estimator objects. The search
runs once per batch for all of them, and not at all when only 'input' and 'learned' are asked
(k = 0: the store then has no distance/index fields). 'learned' trains its autoencoder on the
bank's embeddings once per work directory (WORKDIR/autoencoder/).

Resuming: each batch's rows are written to the store as soon as they are projected. Every
`checkpoint_every` batches (and on SIGTERM, on --on_bad_input=fail, and when a batch fails on a
single process) the writes are flushed and an orbax checkpoint records the number of batches
done, the pipeline position and every process's partial statistics. A rerun with the same work
directory restores the latest checkpoint and goes on from there, rewriting the rows of later
batches with the same bytes; the result equals an uninterrupted run. The bad-input list keeps
the files of committed rows and drops the rest, which the rerun finds again.

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
from fpjax.artifact_job.inputs import load_bank_images, open_generated, resolve_space
from fpjax.artifact_job.job import compute_artifacts
from fpjax.errors import Preempted

__all__ = ["compute_artifacts", "load_bank_images", "open_generated", "resolve_space",
           "Preempted"]
