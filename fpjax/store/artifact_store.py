"""The artifact store: what compute_artifacts writes into its work directory, and its reader.

Layout of a compute_artifacts work directory (format "fpjax.artifacts/3"):

  WORKDIR/artifacts/<field>/     one zarr (v2) array per field, row i = image `files[i]` of
                                 index.json, chunked along rows only (`chunk_rows` rows a chunk):
      artifact/<key>  float32 [N, *embedding_shape]  φ(x) − p(x) of the manifold estimator
                                 <key> (fpjax/estimators.py: 'nn', 'knn_mean-k10', ...,
                                 'input' = φ(x)), one array per estimator, in index.json's
                                 `estimators` order
      distance  float32 [N, k]   Euclidean distance to the k nearest bank rows  } only when
      index     int32   [N, k]   bank rows of the k nearest, nearest first      } a search ran
      label     int32   [N]      generative-model label (class_names[label]);
                                 -1: a bad file, skipped (listed in bad_inputs.jsonl;
                                 its artifacts are 0, distance NaN, index -1)
  WORKDIR/artifacts/index.json   format, config, space, k (0: no search), estimators (keys),
                                 embedding_shape, class_names, gm_root, files (relative to
                                 gm_root), num_rows (= len(files)), num_bad_rows, chunk_rows,
                                 process_count, fields (zarr dtype of each)
  WORKDIR/fingerprint/<key>/stats.npz  FingerprintStats.finalize() of every model for estimator
                                 <key> (good rows only; its distance histogram is of |φ(x) − p(x)|)
  WORKDIR/fingerprint/summary.json  bad_inputs (files skipped), seconds, artifact_shape, and per
                                 estimator ('estimators': {key: {models, fdr}}) each model's
                                 count, mean distance |φ(x) − p(x)|, |mean artifact|, RMS artifact
                                 norm, and the FDR; top-level 'models' and 'fdr' repeat the first
                                 estimator's
  WORKDIR/autoencoder/           the 'learned' estimator's model (fpjax.models.autoencoder),
                                 trained once on the bank; a resumed run loads it
  WORKDIR/bad_inputs.jsonl       one JSON object a line per skipped file: path, reason, stage
                                 ('list': refused when listing a folder (not an image file, a
                                 symlink leaving the root), never a row; 'decode': unreadable or of
                                 the wrong size, its row has label -1; 'real': an unreadable file
                                 of a real-bank folder), row (for 'decode')
  WORKDIR/metrics.jsonl          progress metrics, one JSON object a line (process 0)
  WORKDIR/checkpoints/           orbax checkpoints of an unfinished run
  WORKDIR/COMPLETE               written last: without it the directory is a partial run

Who writes what: the input pipeline gives each process whole blocks of `chunk_rows` consecutive
rows (global batch b, process p: rows [b·B + p·chunk_rows, b·B + (p+1)·chunk_rows) with
B = process_count · chunk_rows), and a chunk is exactly one such block, so every process writes
its own chunks through tensorstore and no two processes ever write the same chunk file; no
artifact crosses hosts. Any zarr reader (zarr-python, tensorstore, xarray) reads the arrays;
`ArtifactStore` reads them lazily and hides the rows of bad files (label -1): its row i is the
i-th *good* file in `files` order. A label of -2 (the arrays' fill value) would be a row no
process wrote; the reader refuses such a store.

JSON and .npz files are written atomically (fpjax.fileio), so a reader never sees half a file
under a final name. Chunks written after the last checkpoint of an interrupted run are written
again, with the same bytes, by the resumed run; COMPLETE is written only once every process has
flushed its chunks. `ArtifactStore.open` refuses (StoreError) a directory without COMPLETE, of
another format, or whose arrays disagree with index.json.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import numpy as np
import tensorstore as ts

from fpjax.data.bad_inputs import read_bad_inputs
from fpjax.errors import StoreError, UserInputError
from fpjax.fileio import check_name, load_json, save_json
from fpjax.store.rows import FileList, RowSubset, store_rows

FORMAT = "fpjax.artifacts/3"
COMPLETE = "COMPLETE"
BAD_LABEL = -1      # label of a skipped (bad) file's row
UNWRITTEN = -2      # label fill value: a row no process wrote


def is_complete(workdir: str) -> bool:
  return os.path.isfile(os.path.join(workdir, COMPLETE))


def artifact_field(key: str) -> str:
  """The store field (folder under artifacts/) of estimator `key`'s artifacts."""
  return f"artifact/{check_name(key, 'estimator key')}"


def _field_specs(embedding_shape, k: int, estimators) -> dict[str, tuple[tuple, str, Any]]:
  """(shape of one row, zarr dtype, fill value) of each field; distance and index only when a
  search ran (k >= 1)."""
  specs = {artifact_field(e): (tuple(embedding_shape), "<f4", 0.0) for e in estimators}
  if k:
    specs.update(distance=((k,), "<f4", 0.0), index=((k,), "<i4", 0))
  specs["label"] = ((), "<i4", UNWRITTEN)
  return specs


def _zarr_spec(workdir: str, field: str) -> dict:
  return {"driver": "zarr", "kvstore": {"driver": "file",
                                         "path": os.path.join(workdir, "artifacts", field)}}


class ArtifactWriter:
  """Writes rows of the store's zarr arrays; each process writes only its own chunks.

  `create` (one process, before the others `open`) makes empty arrays of `num_rows` rows: one
  artifact array per estimator key, distance/index of k columns (none when k = 0) and label;
  `write(start, fields)` starts writing rows [start, start + n) of every field without waiting;
  `flush()` waits until everything written so far is on disk (call it before a checkpoint says
  so).
  """

  def __init__(self, arrays: dict):
    self._arrays = arrays
    self._pending = []

  @classmethod
  def create(cls, workdir: str, num_rows: int, chunk_rows: int, embedding_shape, k: int,
             estimators=("nn",)):
    arrays = {}
    for field, (row_shape, dtype, fill) in _field_specs(embedding_shape, k, estimators).items():
      spec = dict(_zarr_spec(workdir, field), metadata={
          "shape": [num_rows, *row_shape], "chunks": [chunk_rows, *row_shape], "dtype": dtype,
          "fill_value": fill})
      arrays[field] = ts.open(spec, create=True, delete_existing=True).result()
    return cls(arrays)

  @classmethod
  def open(cls, workdir: str, k: int, estimators=("nn",)):
    return cls({f: ts.open(_zarr_spec(workdir, f), open=True, write=True).result()
                for f in _field_specs((), k, estimators)})

  def write(self, start: int, fields: dict[str, np.ndarray]) -> None:
    """fields: an array for every field of the store ('artifact/<key>', ..., 'label')."""
    n = len(fields["label"])
    for f, array in self._arrays.items():
      self._pending.append(array[start:start + n].write(np.asarray(fields[f])))

  def flush(self) -> None:
    for fut in self._pending:
      fut.result()
    self._pending = []


@dataclasses.dataclass
class ArtifactStore:
  """A finished compute_artifacts work directory, read lazily (format in the module docstring).

  Rows are the good files, in `files` order; labels, distance and index are read whole (small;
  [N, 0] when no search ran), `artifacts(key)` is a lazy `RowSubset` of estimator `key`'s artifacts
  that reads only the rows asked for (`artifact`: the first estimator's); `files` is a compact
  `FileList`.
  """
  workdir: str
  config: dict
  space: str
  k: int
  estimators: list  # estimator keys, in the order the run was given them
  embedding_shape: tuple
  class_names: list
  gm_root: str
  files: FileList
  labels: np.ndarray
  distance: np.ndarray
  index: np.ndarray
  artifact_rows: dict  # key -> RowSubset
  num_bad_rows: int

  def artifacts(self, key: str) -> RowSubset:
    """The artifacts of estimator `key` (rows as `labels`)."""
    if key not in self.artifact_rows:
      raise UserInputError(f"{self.workdir}: no artifacts of estimator {key!r}; this store holds "
                           f"{self.estimators}.")
    return self.artifact_rows[key]

  @property
  def artifact(self) -> RowSubset:
    """The first estimator's artifacts."""
    return self.artifacts(self.estimators[0])

  @property
  def num_rows(self) -> int:
    return len(self.labels)

  @functools.cached_property
  def summary(self) -> dict:
    return load_json(os.path.join(self.workdir, "fingerprint", "summary.json"))

  def stats_path_of(self, key: str) -> str:
    """fingerprint/<key>/stats.npz: estimator `key`'s FingerprintStats.finalize()."""
    if key not in self.artifact_rows:
      raise UserInputError(f"{self.workdir}: no statistics of estimator {key!r}; this store "
                           f"holds {self.estimators}.")
    return stats_path(self.workdir, key)

  @property
  def stats_path(self) -> str:
    """The first estimator's statistics."""
    return self.stats_path_of(self.estimators[0])

  def bad_inputs(self) -> list[dict]:
    return read_bad_inputs(self.workdir)

  @classmethod
  def open(cls, workdir: str) -> "ArtifactStore":
    """Reads index.json and the labels; StoreError if the directory is not a finished,
    consistent store of this format."""
    workdir = os.path.abspath(workdir)
    meta = _read_index(workdir)
    k, estimators = int(meta["k"]), list(meta["estimators"])
    arrays = _open_arrays(workdir, meta)
    label = arrays["label"].read().result()
    good = _good_rows(workdir, meta, label)
    if k:
      distance = np.asarray(store_rows(arrays["distance"], good))
      index = np.asarray(store_rows(arrays["index"], good))
    else:
      distance, index = np.zeros((len(good), 0), np.float32), np.zeros((len(good), 0), np.int32)
    return cls(
        workdir=workdir, config=meta["config"], space=meta["space"], k=k, estimators=estimators,
        embedding_shape=tuple(meta["embedding_shape"]), class_names=list(meta["class_names"]),
        gm_root=meta["gm_root"], files=FileList(meta["files"][i] for i in good),
        labels=label[good].astype(np.int32), distance=distance, index=index,
        artifact_rows={e: store_rows(arrays[artifact_field(e)], good) for e in estimators},
        num_bad_rows=int(meta["num_bad_rows"]))


def _read_index(workdir: str) -> dict:
  """index.json of a finished store of this format."""
  if not is_complete(workdir):
    raise StoreError(f"{workdir}: no {COMPLETE} marker: not a finished compute_artifacts run "
                     "(rerun compute_artifacts with this --workdir to finish it).",
                     os.path.join(workdir, COMPLETE))
  path = os.path.join(workdir, "artifacts", "index.json")
  meta = load_json(path)
  if meta.get("format") != FORMAT:
    raise StoreError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}; recompute "
                     "the artifacts.", path)
  return meta


def _open_arrays(workdir: str, meta: dict) -> dict:
  """Every field's zarr array, each of index.json's number of rows."""
  arrays = {}
  for f in _field_specs((), int(meta["k"]), meta["estimators"]):
    path = os.path.join(workdir, "artifacts", f)
    try:
      arrays[f] = ts.open(_zarr_spec(workdir, f), open=True, read=True).result()
    except ValueError as e:
      raise StoreError(f"{path}: unreadable zarr array: {e}", path) from e
    if arrays[f].shape[0] != meta["num_rows"]:
      raise StoreError(f"{path}: {arrays[f].shape[0]} rows, index.json says "
                       f"{meta['num_rows']}.", path)
  return arrays


def _good_rows(workdir: str, meta: dict, label: np.ndarray) -> np.ndarray:
  """The rows of good files, after checking every row was written with a label in range."""
  path = os.path.join(workdir, "artifacts", "label")
  unwritten = np.flatnonzero(label == UNWRITTEN)
  if len(unwritten):
    raise StoreError(f"{path}: row {int(unwritten[0])} was never written; the store is "
                     "incomplete.", path)
  good = np.flatnonzero(label != BAD_LABEL)
  if len(label) - len(good) != meta["num_bad_rows"]:
    raise StoreError(f"{path}: {len(label) - len(good)} bad rows, index.json says "
                     f"{meta['num_bad_rows']}.", path)
  if (label[good] >= len(meta["class_names"])).any() or (label[good] < 0).any():
    raise StoreError(f"{path}: labels outside the {len(meta['class_names'])} models.", path)
  return good


def stats_path(workdir: str, key: str) -> str:
  """WORKDIR/fingerprint/<key>/stats.npz."""
  return os.path.join(workdir, "fingerprint", check_name(key, "estimator key"), "stats.npz")


def write_index(workdir: str, *, config: dict, space: str, k: int, estimators, embedding_shape,
                class_names, gm_root: str, files, num_bad_rows: int, chunk_rows: int,
                process_count: int) -> str:
  """artifacts/index.json (one process writes it, once every row is on disk)."""
  return save_json(os.path.join(workdir, "artifacts", "index.json"), {
      "format": FORMAT, "config": config, "space": space, "k": int(k),
      "estimators": list(estimators),
      "embedding_shape": list(embedding_shape), "num_rows": len(files),
      "num_bad_rows": int(num_bad_rows), "class_names": list(class_names), "gm_root": gm_root,
      "files": list(files), "chunk_rows": int(chunk_rows), "process_count": int(process_count),
      "fields": {f: s[1] for f, s in _field_specs(embedding_shape, k, estimators).items()}})
