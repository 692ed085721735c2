"""fpjax.artifact_job.compute_artifacts in-process: against float64 numpy, resume, SIGTERM."""
import json
import os
import shutil
import signal

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
import tensorstore

from fpjax import artifact_job
from fpjax import data
from fpjax import estimators
from fpjax import fileio
from fpjax import manifold as manifold_lib
from fpjax import models
from fpjax import progress
from fpjax import spaces
from fpjax import store as store_lib
from fpjax.errors import ConfigMismatchError, Preempted, StoreError, UserInputError
from fpjax.models import autoencoder
from test_estimators import REFS


def make_gm(root, n=12, seed=0):
  """Three toy 'generative models' of 8x8 digits: noisy, shifted and washed-out test digits."""
  real = data.load_real("digits")
  rng = np.random.default_rng(seed)
  x = real.test_images[:n].astype(np.float32)
  outs = [x + rng.normal(0, 20, x.shape), np.roll(x, 1, axis=1), x * 0.7 + 30]
  imgs = np.clip(np.concatenate(outs), 0, 255).astype(np.uint8)
  data.save_image_folder(str(root), imgs, np.repeat(np.arange(3), n),
                         ["noisy", "shifted", "washed"])
  return imgs


def read_rows(workdir):
  """Every good row of a finished store, read through the ArtifactStore."""
  store = store_lib.ArtifactStore.open(str(workdir))
  return {"artifact": np.asarray(store.artifact), "distance": store.distance,
          "index": store.index, "label": store.labels}


def read_fingerprint(workdir):
  store = store_lib.ArtifactStore.open(str(workdir))
  return fileio.load_array(store.stats_path), store.summary


class Injected(Exception):
  """The failure the tests inject through the job's on_batch hook."""


def fail_at(batch):
  def hook(done):
    if done == batch:
      raise Injected(batch)
  return hook


def run(gm, out, **kw):
  kw = dict(dict(batch_size=8, checkpoint_every=2, log_every_s=0.0), **kw)
  return artifact_job.compute_artifacts("digits", str(gm), str(out), **kw)


@pytest.fixture(scope="module")
def gm(tmp_path_factory):
  root = tmp_path_factory.mktemp("gm")
  imgs = make_gm(root)
  return root, imgs


@pytest.fixture(scope="module")
def clean(gm, tmp_path_factory):
  out = tmp_path_factory.mktemp("clean")
  run(gm[0], out)
  return out


def test_matches_float64_bruteforce(gm, clean):
  _, imgs = gm
  bank = data.load_real("digits").train_images.reshape(-1, 64).astype(np.float64) / 255
  got = read_rows(clean)
  order = np.arange(len(imgs))  # store row i is image i of the listing: every image once
  assert len(got["label"]) == len(imgs)
  q = imgs.reshape(len(imgs), -1).astype(np.float64) / 255
  d2 = ((q[:, None, :] - bank[None]) ** 2).sum(-1)
  ref_idx = np.argmin(d2, axis=1)
  np.testing.assert_array_equal(got["index"][order, 0], ref_idx)
  np.testing.assert_allclose(got["distance"][order, 0], np.sqrt(d2.min(1)), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got["artifact"][order].reshape(len(q), -1), q - bank[ref_idx],
                             atol=1e-6)
  np.testing.assert_array_equal(got["label"][order], np.repeat(np.arange(3), 12))

  stats, summary = read_fingerprint(clean)
  art = (q - bank[ref_idx]).reshape(-1, 8, 8, 1)
  for m in range(3):
    sel = got["label"][order] == m
    np.testing.assert_allclose(stats["mean"][m], art[sel].mean(0), atol=1e-6)
    np.testing.assert_allclose(stats["var"][m], art[sel].var(0), atol=1e-6)
    assert stats["count"][m] == 12
    assert summary["models"][m]["count"] == 12
    np.testing.assert_allclose(summary["models"][m]["mean_distance"],
                               np.sqrt(d2.min(1))[sel].mean(), rtol=1e-5)
  assert [m["name"] for m in summary["models"]] == ["noisy", "shifted", "washed"]
  store = store_lib.ArtifactStore.open(str(clean))
  assert store.files[0] == os.path.join("noisy", "000000.png") and len(store.files) == 36
  assert store.num_rows == 36 and store.k == 1 and store.space == "rgb"
  assert store.class_names == ["noisy", "shifted", "washed"] and summary["bad_inputs"] == 0
  # The arrays are plain zarr: one chunk file per block of batch_size rows (one process).
  zarray = json.load(open(clean / "artifacts" / "artifact" / "nn" / ".zarray"))
  assert zarray["chunks"] == [8, 8, 8, 1]
  assert sorted(os.listdir(clean / "artifacts" / "label")) == [".zarray", "0", "1", "2", "3", "4"]
  assert not os.path.exists(os.path.join(clean, "checkpoints"))  # removed once COMPLETE
  records = progress.read_metrics(os.path.join(clean, "metrics.jsonl"))
  assert records[-1]["images"] == 36 and records[-1]["images_per_s"] > 0


def same_outputs(a, b):
  """Two finished work directories hold the same rows and statistics, for every estimator."""
  ra, rb = read_rows(a), read_rows(b)
  for f in ra:
    np.testing.assert_array_equal(ra[f], rb[f], err_msg=f)
  sa, sb = (store_lib.ArtifactStore.open(str(w)) for w in (a, b))
  assert sa.estimators == sb.estimators
  for key in sa.estimators:
    np.testing.assert_array_equal(np.asarray(sa.artifacts(key)), np.asarray(sb.artifacts(key)),
                                  err_msg=key)
    fa, fb = (fileio.load_array(s.stats_path_of(key)) for s in (sa, sb))
    for f in fa:
      if jax.default_backend() == "cpu" or f in ("count", "distance_hist", "distance_edges"):
        np.testing.assert_array_equal(fa[f], fb[f], err_msg=f"{key} {f}")
      else:  # GPU scatter-adds sum in a varying order: equal up to float32 rounding only
        np.testing.assert_allclose(fa[f], fb[f], rtol=1e-5, atol=1e-6, err_msg=f"{key} {f}")


def test_failure_midway_then_resume_equals_clean_run(gm, clean, tmp_path):
  with pytest.raises(Injected):
    run(gm[0], tmp_path, on_batch=fail_at(3))
  assert not store_lib.is_complete(str(tmp_path))
  with pytest.raises(StoreError) as e:
    store_lib.ArtifactStore.open(str(tmp_path))  # a partial run is never read as complete
  assert e.value.path == os.path.join(tmp_path, store_lib.COMPLETE)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "3"]  # failure checkpointed batch 3
  # A chunk written after the last checkpoint (e.g. killed while writing it) is rewritten.
  (tmp_path / "artifacts" / "artifact" / "nn" / "3.0.0.0").write_bytes(b"half a file")
  seen = []
  run(gm[0], tmp_path, on_batch=seen.append)
  assert seen[0] == 4  # resumed after batch 3, not from the start
  same_outputs(clean, tmp_path)


def test_sigterm_checkpoints_and_resumes(gm, clean, tmp_path):
  def term(done):
    if done == 1:
      os.kill(os.getpid(), signal.SIGTERM)
  with pytest.raises(Preempted) as e:
    run(gm[0], tmp_path, on_batch=term, checkpoint_every=100)
  assert (e.value.workdir, e.value.batches_done) == (str(tmp_path), 2)
  assert artifact_job.Preempted is Preempted  # the name importable where it was
  # The processes agree on stopping once per batch, before committing it: the signal that came
  # after batch 1 stops the job after batch 2 (no periodic checkpoint before batch 100).
  assert os.listdir(tmp_path / "checkpoints") == ["2"]
  run(gm[0], tmp_path)
  same_outputs(clean, tmp_path)


def test_finished_run_is_noop_and_config_change_refused(gm, clean):
  before = os.path.getmtime(clean / "COMPLETE")
  again = run(gm[0], clean)
  assert os.path.getmtime(clean / "COMPLETE") == before
  assert [m["count"] for m in again["models"]] == [12, 12, 12]
  with pytest.raises(ConfigMismatchError) as e:
    run(gm[0], clean, space="freq")
  assert e.value.workdir == str(clean)


def test_other_spaces_k_and_host_streamed_bank(gm, tmp_path):
  out = run(gm[0], tmp_path / "dct", space="dct", k=3, device_bank_bytes=64 * 4 * 100,
            batch_size=16, checkpoint_every=100)
  got = read_rows(out["workdir"])
  assert got["index"].shape == (36, 3) and got["artifact"].shape == (36, 8, 8, 1)
  assert np.all(np.diff(got["distance"], axis=1) >= 0)
  index = json.load(open(os.path.join(out["workdir"], "artifacts", "index.json")))
  assert index["space"] == "dct" and index["chunk_rows"] == 16


def test_zoo_workdir_as_gm(gm, tmp_path):
  zoo = tmp_path / "zoo"
  shutil.copytree(gm[0], zoo / "images")
  with open(zoo / "zoo.json", "w") as f:
    json.dump({"real": "digits",
               "models": [{"name": n} for n in ["washed", "noisy", "shifted"]]}, f)
  out = run(zoo, tmp_path / "out", checkpoint_every=100)
  assert [m["name"] for m in out["models"]] == ["noisy", "shifted", "washed"]


def test_tfds_real_bank(tmp_path):
  gm = tmp_path / "gm"
  real = data.load_real("mnist5k")
  data.save_image_folder(str(gm), real.test_images[:6], np.array([0, 0, 0, 1, 1, 1]), ["a", "b"])
  with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
    bank = artifact_job.load_bank_images("tfds:mnist:train")
    out = artifact_job.compute_artifacts("tfds:mnist", str(gm), str(tmp_path / "out"),
                                           batch_size=8, basis_dim=0)
  assert bank.shape == (16, 28, 28, 1)
  got = read_rows(out["workdir"])
  assert got["index"].max() < 16 and len(got["label"]) == 6


def test_encoder_space_against_float64(gm, tmp_path):
  real = data.load_real("digits")
  enc = models.train_encoder("ssl", real.train_images[:256], steps=2, batch_size=32)
  enc.save(str(tmp_path / "enc"))
  out = run(gm[0], tmp_path / "out", space="ssl", encoder=str(tmp_path / "enc"), basis_dim=4)
  store = store_lib.ArtifactStore.open(out["workdir"])
  assert store.config["encoder"] == str(tmp_path / "enc") and store.space == "ssl"
  loaded = models.load_encoder(str(tmp_path / "enc"))
  bank = np.asarray(loaded(real.train_images), np.float64)
  q = np.asarray(loaded(gm[1]), np.float64)
  d2 = ((q[:, None, :] - bank[None]) ** 2).sum(-1)
  nearest = np.sqrt(d2.min(1))
  np.testing.assert_allclose(store.distance[:, 0], nearest, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(store.artifact), q - bank[store.index[:, 0]], atol=1e-4)
  assert store.embedding_shape == (bank.shape[1],)
  with pytest.raises(UserInputError):  # an encoder space without an encoder
    run(gm[0], tmp_path / "x", space="sl")
  with pytest.raises(UserInputError) as e:
    run(gm[0], tmp_path / "x", space="sl", encoder=str(tmp_path / "missing"))
  assert str(tmp_path / "missing") in str(e.value)
  with pytest.raises(UserInputError):  # an encoder for a space that takes none
    run(gm[0], tmp_path / "x", space="rgb", encoder=str(tmp_path / "enc"))
  assert not os.path.exists(tmp_path / "x")  # refused before anything is written


def test_store_reads_only_the_rows_asked_for(tmp_path):
  # A store with bad rows (label -1) in it, written as compute_artifacts writes it.
  n, chunk = 13, 4
  rng = np.random.default_rng(0)
  art = rng.normal(size=(n, 2, 3)).astype(np.float32)
  label = np.array([0, 1, 2, -1, 0, 1, 2, 0, -1, 1, 2, 0, 1], np.int32)
  writer = store_lib.ArtifactWriter.create(str(tmp_path), n, chunk, (2, 3), 1, ["nn"])
  for s in range(0, n, chunk):
    e = min(n, s + chunk)
    writer.write(s, {"artifact/nn": art[s:e],
                     "distance": np.arange(s, e, dtype=np.float32)[:, None],
                     "index": np.arange(s, e, dtype=np.int32)[:, None], "label": label[s:e]})
  writer.flush()
  store_lib.write_index(str(tmp_path), config={}, space="rgb", k=1, estimators=["nn"],
                          embedding_shape=(2, 3),
                          class_names=["a", "b", "c"], gm_root="/gm",
                          files=[f"f{i}.png" for i in range(n)], num_bad_rows=2,
                          chunk_rows=chunk, process_count=1)
  fileio.save_json(str(tmp_path / "COMPLETE"), {})
  store = store_lib.ArtifactStore.open(str(tmp_path))
  good = np.flatnonzero(label >= 0)
  assert store.num_rows == 11 and store.files == [f"f{i}.png" for i in good]
  np.testing.assert_array_equal(store.labels, label[good])
  np.testing.assert_array_equal(store.index[:, 0], good)
  a = store.artifact
  assert len(a) == 11 and a.shape == (11, 2, 3) and a.dtype == np.float32 and a.ndim == 3
  np.testing.assert_array_equal(np.asarray(a), art[good])
  np.testing.assert_array_equal(a[2:7], art[good[2:7]])
  np.testing.assert_array_equal(a[np.array([0, 5, 10])], art[good[[0, 5, 10]]])
  np.testing.assert_array_equal(a[-1], art[good[-1]])
  np.testing.assert_array_equal(a[np.array([3, 1])], art[good[[3, 1]]])  # any order
  with pytest.raises(IndexError):
    a[np.array([0, 11])]  # past the last good row
  # Chunks outside the rows asked for are never read: garbage there does not matter.
  (tmp_path / "artifacts" / "artifact" / "nn" / "0.0.0").write_bytes(b"garbage")
  np.testing.assert_array_equal(a[3:6], art[good[3:6]])  # good rows 3-5 = store rows 4-6: chunk 1
  with pytest.raises(Exception):
    a[0:2]


def test_scattered_rows_read_in_bounded_pieces(tmp_path, monkeypatch):
  """A sorted sample of rows spread over the whole array is read piece by piece (each piece
  spans at most READ_SPAN_BYTES of rows) and equals numpy fancy indexing; bad rows hidden."""
  ref = np.random.default_rng(0).normal(size=(5000, 3, 2)).astype(np.float32)
  arr = tensorstore.open({
      "driver": "zarr", "kvstore": {"driver": "file", "path": str(tmp_path / "a")},
      "metadata": {"shape": [5000, 3, 2], "chunks": [7, 3, 2], "dtype": "<f4"}},
      create=True).result()
  arr.write(ref).result()
  good = np.sort(np.random.default_rng(1).choice(5000, 4000, replace=False))
  rows = store_lib.store_rows(arr, good)
  monkeypatch.setattr(store_lib.rows, "READ_SPAN_BYTES", 50 * 3 * 2 * 4)  # 50 rows a piece
  spans = []
  real_read = rows.base._array.__getitem__

  class Spy:
    def __getitem__(self, key):
      k = np.asarray(key)
      if k.ndim == 1 and k.size > 1:
        spans.append(int(k[-1] - k[0]))
      return real_read(key)
  rows.base._array = Spy()
  for seed in range(10):
    r = np.random.default_rng(seed)
    idx = np.sort(r.choice(4000, int(r.integers(2, 4000)), replace=False))
    np.testing.assert_array_equal(rows[idx], ref[good][idx])
  assert spans and max(spans) < 50 and len(spans) > 10
  np.testing.assert_array_equal(rows[10:3000], ref[good][10:3000])
  unsorted = np.random.default_rng(11).permutation(4000)[:500]  # any order, read sorted
  np.testing.assert_array_equal(rows[unsorted], ref[good][unsorted])


# ------------------------------------------------------------------------------ estimators

ESTIMATORS = "nn,knn_mean-k5,local_pca-k10-m2,kernel-k10-s0.5,input"


def test_estimators_one_search_against_float64(gm, tmp_path):
  _, imgs = gm
  out = run(gm[0], tmp_path, estimators=ESTIMATORS, checkpoint_every=100)
  store = store_lib.ArtifactStore.open(out["workdir"])
  keys = ESTIMATORS.split(",")
  assert store.estimators == keys and store.k == 10  # one search: the most neighbours asked
  assert store.config["estimators"] == keys and store.distance.shape == (36, 10)
  bank = data.load_real("digits").train_images.reshape(-1, 64).astype(np.float64) / 255
  q = imgs.reshape(len(imgs), -1).astype(np.float64) / 255
  d2 = ((q[:, None, :] - bank[None]) ** 2).sum(-1)
  idx = np.argsort(d2, axis=1, kind="stable")[:, :10]
  np.testing.assert_array_equal(store.index, idx)
  rows, nd2 = bank[idx], np.take_along_axis(d2, idx, 1)
  np.testing.assert_allclose(store.distance, np.sqrt(nd2), rtol=1e-5, atol=1e-6)
  summary = store.summary
  assert sorted(summary["estimators"]) == sorted(keys)
  assert summary["models"] == summary["estimators"]["nn"]["models"]
  for key in keys:
    est = estimators.Estimator.from_key(key)
    art = q - REFS[est.name](q, rows, nd2, est)
    got = np.asarray(store.artifacts(key)).reshape(36, -1)
    np.testing.assert_allclose(got, art, atol=2e-5, err_msg=key)
    stats = fileio.load_array(store.stats_path_of(key))
    assert store.stats_path_of(key) == os.path.join(out["workdir"], "fingerprint", key, "stats.npz")
    norms = np.linalg.norm(art, axis=1)
    for m in range(3):
      sel = store.labels == m
      np.testing.assert_allclose(stats["mean"][m].ravel(), art[sel].mean(0), atol=2e-5)
      np.testing.assert_allclose(summary["estimators"][key]["models"][m]["mean_distance"],
                                 norms[sel].mean(), rtol=1e-4, err_msg=key)
    assert stats["distance_hist"].sum() == 36
  np.testing.assert_array_equal(np.asarray(store.artifact), np.asarray(store.artifacts("nn")))
  assert store.stats_path == store.stats_path_of("nn")
  with pytest.raises(UserInputError) as e:
    store.artifacts("learned")
  assert "'learned'" in str(e.value)  # names the estimator this store lacks
  # The configuration includes the estimators: another set is refused.
  with pytest.raises(ConfigMismatchError):
    run(gm[0], tmp_path, estimators="nn")


def test_estimator_arguments_refused(gm, tmp_path):
  with pytest.raises(UserInputError):  # knn_mean-k10 needs 10 neighbours
    run(gm[0], tmp_path, estimators="knn_mean-k10", k=3)
  run(gm[0], tmp_path / "k10", estimators="knn_mean-k10", k=10, basis_dim=0)  # enough
  with pytest.raises(UserInputError) as e:
    run(gm[0], tmp_path, estimators=["nn", "pca"])
  assert "'pca'" in str(e.value)
  with pytest.raises(UserInputError):
    run(gm[0], tmp_path, checkpoint_every=0)
  assert not os.path.exists(tmp_path / "artifacts")  # refused before anything is written


def test_learned_and_input_need_no_search_and_resume(gm, tmp_path, monkeypatch):
  _, imgs = gm
  searched = []
  real_search = manifold_lib.Manifold.project_embedded
  monkeypatch.setattr(manifold_lib.Manifold, "project_embedded",
                      lambda self, *a, **kw: searched.append(1) or real_search(self, *a, **kw))

  kw = dict(estimators=["learned", "input"], basis_dim=4)
  with pytest.raises(Injected):
    run(gm[0], tmp_path / "out", on_batch=fail_at(3), **kw)
  saved = tmp_path / "out" / "autoencoder"
  before = os.path.getmtime(saved)
  run(gm[0], tmp_path / "out", **kw)  # resumes: reuses the saved autoencoder
  assert os.path.getmtime(saved) == before and not searched
  store = store_lib.ArtifactStore.open(str(tmp_path / "out"))
  assert store.k == 0 and store.distance.shape == (36, 0) and store.index.shape == (36, 0)
  assert sorted(os.listdir(tmp_path / "out" / "artifacts")) == ["artifact", "index.json", "label"]
  q = np.asarray(spaces.embed(imgs, "rgb"))  # φ(x)
  np.testing.assert_array_equal(np.asarray(store.artifacts("input")), q)
  ae = autoencoder.load_manifold_autoencoder(str(saved))
  np.testing.assert_allclose(np.asarray(store.artifacts("learned")),
                             q - np.asarray(ae.reconstruct(q)), atol=1e-5)
  # An uninterrupted run trains the same model (deterministic) and writes the same store.
  run(gm[0], tmp_path / "clean", **kw)
  same_outputs(tmp_path / "clean", tmp_path / "out")
  for key in ("learned", "input"):
    np.testing.assert_array_equal(
        np.asarray(store.artifacts(key)),
        np.asarray(store_lib.ArtifactStore.open(str(tmp_path / "clean")).artifacts(key)))
