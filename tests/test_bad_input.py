"""Bad input: refused with an error naming the file, or skipped and listed as documented.

Array/zoo cases: tests/data/bad_inputs/ (make_bad_inputs.py). Image-file cases reuse
tests/data/bad_images/ (made by helper-data's tests/data/make_bad_images.py). The binary is run
as a user runs it (a subprocess) and judged by its exit status, stderr and files.
"""
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from fpjax import artifact_job
from fpjax import data
from fpjax import fileio
from fpjax import store as store_lib
from fpjax.data.bad_inputs import BAD_INPUTS, read_bad_inputs
from fpjax.errors import BadInputError, StoreError, UserInputError
from test_fingerprinting import make_gm
from test_fingerprinting import read_rows

HERE = os.path.dirname(os.path.abspath(__file__))
BAD = os.path.join(HERE, "data", "bad_inputs")
BAD_IMAGES = os.path.join(HERE, "data", "bad_images")


def _decode_reason(path):
  """The reason fpjax.data gives for an image file it cannot decode (what the job lists)."""
  root = os.path.dirname(os.path.dirname(path))
  source = data.ImageFolderSource(root, (8, 8, 1),
                                  bad_inputs=data.BadInputs(root, write=False, echo=False))
  return source[source.files.index(path)]["error"]


_PICKLE = ("holds Python objects (dtype object); loading it would unpickle arbitrary code, "
           "refused (allow_pickle stays off). Save plain numeric arrays.")


# The one place that pins the exact line of each kind of refused array file (None: the reason
# ends with the library's own words, which are not ours to pin).
@pytest.mark.parametrize("name, entry, reason", [
    ("nan.npy", "", "1 image(s) hold NaN or Inf, first at row 2."),
    ("out_of_range.npy", "", "float images must lie in [0, 1]; row 0 spans [0.00822, 2.99]."),
    ("pickled.npy", "", _PICKLE),
    ("pickled.npz", "[obj]", _PICKLE),
    ("wrong_magic.npy", "", None),
    ("truncated.npy", "", "header claims shape (4, 8, 8, 1) of float32 = 1024 bytes but the "
                          "file holds 448; truncated or corrupt."),
    ("bomb.npy", "", "header claims shape (1000000, 256, 256, 3) of float32 = 786432000000 "
                     "bytes, over the limit of 1048576 bytes; refused (pass max_bytes to raise "
                     "it)."),
    ("bomb.npz", "", "archive expands to over 1048576 bytes (entry images.npy); decompression "
                     "bomb refused."),
    ("strings.npy", "", "dtype <U1 is not a numeric array dtype."),
    ("wrong_rank.npy", "", "expected images [N, H, W, C] with C in {1, 3} and N > 0; got shape "
                           "(4, 8, 8)."),
    ("missing.npy", "", "no such file."),
])
def test_bad_arrays_refused_naming_the_file(name, entry, reason):
  path = os.path.join(BAD, name)
  with pytest.raises(BadInputError) as e:
    fileio.load_images(path, max_bytes=1 << 20)
  assert (e.value.path, e.value.stage) == (path + entry, "load")
  if reason is not None:
    assert str(e.value) == f"{path}{entry}: {reason}"


def test_good_array_and_pickle_never_loaded(monkeypatch):
  assert fileio.load_images(os.path.join(BAD, "good_float.npy")).shape == (4, 8, 8, 1)
  monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
  monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
  with pytest.raises(BadInputError):
    fileio.load_array(os.path.join(BAD, "pickled.npy"))


def test_symlink_out_of_root_refused(tmp_path):
  root = tmp_path / "data"
  os.makedirs(root)
  os.symlink(os.path.join(BAD, "good_float.npy"), root / "link.npy")
  with pytest.raises(UserInputError) as e:
    fileio.load_array(str(root / "link.npy"), root=str(root))
  assert str(e.value).startswith(str(root / "link.npy"))
  assert fileio.load_array(str(root / "link.npy")).shape == (4, 8, 8, 1)  # no root: read
  gm = tmp_path / "gm"
  make_gm(gm, n=2)
  os.symlink(os.path.join(BAD_IMAGES, "conversions", "grey", "grey.png"), gm / "noisy" / "x.png")
  with pytest.raises(BadInputError) as e:
    artifact_job.open_generated(str(gm), (8, 8, 1))
  assert (e.value.path, e.value.stage) == (str(gm / "noisy" / "x.png"), "list")


@pytest.mark.parametrize("case", ["zoo_dotdot_name", "zoo_separator_name"])
def test_zoo_model_name_with_path_refused(case):
  with pytest.raises(UserInputError) as e:
    artifact_job.open_generated(os.path.join(BAD, case), (8, 8, 1))
  assert str(e.value).startswith(os.path.join(BAD, case, "zoo.json"))


def test_dotdot_model_folder_refused():
  with pytest.raises(UserInputError) as e:
    artifact_job.open_generated(os.path.join(BAD_IMAGES, "dotdot_name"), (8, 8, 1))
  assert str(e.value).startswith(os.path.join(BAD_IMAGES, "dotdot_name", "a..b"))


def test_npy_bank_with_cmyk_jpeg_and_16bit_png_converted(tmp_path):
  # Documented handling: CMYK/palette/RGBA -> RGB, 16-bit grey / 257, then the bank's channels (1).
  out = artifact_job.compute_artifacts(
      os.path.join(BAD, "good_float.npy"), os.path.join(BAD_IMAGES, "conversions"), str(tmp_path),
      batch_size=16, log_every_s=0.0)
  assert [m["count"] for m in out["models"]] == [5, 4]  # colour: 5 files, grey: 4 (cmyk, grey16 ..)
  assert out["bad_inputs"] == 0
  rows = read_rows(tmp_path)
  assert np.all(np.isfinite(rows["artifact"]))


def test_decompression_bomb_png_skipped_or_refused(tmp_path):
  bank, gm = os.path.join(BAD, "good_float.npy"), os.path.join(BAD_IMAGES, "bomb")
  with pytest.raises(BadInputError) as e:
    artifact_job.compute_artifacts(bank, gm, str(tmp_path / "fail"), batch_size=8,
                                   on_bad_input="fail")
  assert (e.value.path, e.value.stage) == (os.path.join(gm, "good", "x_bomb.png"), "decode")
  assert e.value.reason.startswith(_decode_reason(e.value.path))
  out = artifact_job.compute_artifacts(bank, gm, str(tmp_path / "skip"), batch_size=8)
  store = store_lib.ArtifactStore.open(out["workdir"])
  assert store.files == ["good/0.png", "good/1.png"] and out["bad_inputs"] == 1
  assert [e["path"] for e in store.bad_inputs()] == [os.path.join(gm, "good", "x_bomb.png")]


def test_nan_bank_refused(tmp_path):
  with pytest.raises(BadInputError) as e:
    artifact_job.compute_artifacts(os.path.join(BAD, "nan.npy"), os.path.join(BAD_IMAGES, "bomb"),
                                   str(tmp_path))
  assert e.value.path == os.path.join(BAD, "nan.npy")


def test_bad_file_mid_run_fail_keeps_work_and_resumes_after_fix(tmp_path):
  gm = tmp_path / "gm"
  make_gm(gm, n=12)  # rows 0-35; 'shifted' = rows 12-23
  bad = gm / "shifted" / "000010.png"  # row 22, in batch 5 (4 images a batch)
  good = bad.read_bytes()
  shutil.copy(os.path.join(BAD_IMAGES, "truncated", "good", "x_truncated.png"), bad)
  out = tmp_path / "out"
  kw = dict(batch_size=4, checkpoint_every=100, log_every_s=0.0, on_bad_input="fail")
  with pytest.raises(BadInputError) as e:
    artifact_job.compute_artifacts("digits", str(gm), str(out), **kw)
  assert (e.value.path, e.value.stage) == (str(bad), "decode")
  assert os.listdir(out / "checkpoints") == ["5"]  # the 5 batches before the bad file survive
  assert [x["row"] for x in read_bad_inputs(str(out))] == [22]
  bad.write_bytes(good)  # fix the file and rerun: resumes where it stopped
  seen = []
  res = artifact_job.compute_artifacts("digits", str(gm), str(out), on_batch=seen.append, **kw)
  assert seen[0] == 6 and res["bad_inputs"] == 0
  assert store_lib.ArtifactStore.open(str(out)).num_rows == 36
  assert read_bad_inputs(str(out)) == []  # the fixed file is no longer listed


def test_tampered_store_refused(tmp_path):
  gm = tmp_path / "gm"
  make_gm(gm, n=4)
  out = tmp_path / "out"
  artifact_job.compute_artifacts("digits", str(gm), str(out), batch_size=4, basis_dim=0)
  os.remove(out / "artifacts" / "label" / "1")  # rows 4-7: never written, as far as zarr knows
  # The one place that pins the exact line of each kind of unreadable store.
  label = str(out / "artifacts" / "label")
  with pytest.raises(StoreError) as e:
    store_lib.ArtifactStore.open(str(out))
  assert e.value.path == label
  assert str(e.value) == f"{label}: row 4 was never written; the store is incomplete."
  index_json = str(out / "artifacts" / "index.json")
  index = json.load(open(index_json))
  fileio.save_json(index_json, dict(index, format="other/1"))
  with pytest.raises(StoreError) as e:
    store_lib.ArtifactStore.open(str(out))
  assert e.value.path == index_json
  assert str(e.value) == (f"{index_json}: format 'other/1', expected "
                          f"'{store_lib.FORMAT}'; recompute the artifacts.")
  with pytest.raises(StoreError) as e:
    store_lib.ArtifactStore.open(str(tmp_path))
  assert e.value.path == str(tmp_path / "COMPLETE")
  assert str(e.value) == (f"{tmp_path}: no COMPLETE marker: not a finished compute_artifacts "
                          "run (rerun compute_artifacts with this --workdir to finish it).")


# ------------------------------------------------------------------------------ the binary

BAD_FILES = [("truncated", "x_truncated.png", "noisy"),
             ("bomb", "x_bomb.png", "noisy"),
             ("zero_byte", "x_empty.png", "shifted"),
             ("unreadable", "x_garbage.png", "washed")]


def make_bad_gm(root):
  """make_gm's 36 good images plus four bad files and a symlink leaving the root; returns the
  bad paths (absolute)."""
  make_gm(root, n=12)
  paths = []
  for case, name, model in BAD_FILES:
    paths.append(os.path.join(root, model, name))
    shutil.copy(os.path.join(BAD_IMAGES, case, "good", name), paths[-1])
  link = os.path.join(root, "washed", "y_link.png")
  os.symlink(os.path.join(BAD_IMAGES, "conversions", "grey", "grey.png"), link)
  return paths + [link]


def _binary(gm, out, *extra):
  cmd = [sys.executable, "-m", "fpjax.bin.compute_artifacts", "--real=digits", f"--gm={gm}",
         f"--workdir={out}", "--batch_size=8", "--checkpoint_every=2", *extra]
  return subprocess.run(cmd, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
                        text=True, timeout=300)


def _user_lines(stderr):
  """stderr without absl's log lines (they start with a level letter and a date) and the
  progress bar's (its updates and the blanks it clears a line with)."""
  return [l for l in stderr.splitlines() if l.strip()
          and not (l[0] in "IWEF" and l[1:5].isdigit())
          and not re.match(r"compute_artifacts: +\d+%\|", l)]


def test_binary_skips_and_lists_bad_files(tmp_path):
  gm = tmp_path / "gm"
  bad = make_bad_gm(str(gm))
  res = _binary(gm, tmp_path / "out")
  assert res.returncode == 0, res.stderr[-3000:]
  assert "Traceback" not in res.stderr
  listed = read_bad_inputs(str(tmp_path / "out"))
  assert sorted(e["path"] for e in listed) == sorted(bad)
  # One line per bad file, nothing else (the one pinned line of a skipped file).
  assert sorted(_user_lines(res.stderr)) == sorted(
      f"compute_artifacts: skipped bad input ({e['stage']}): {e['path']}: {e['reason']}"
      for e in listed)
  stages = {os.path.basename(e["path"]): e["stage"] for e in listed}
  assert stages == {"x_truncated.png": "decode", "x_bomb.png": "decode",
                    "x_empty.png": "decode", "x_garbage.png": "decode", "y_link.png": "list"}
  for e in (e for e in listed if e["stage"] == "decode"):
    assert e["reason"] == _decode_reason(e["path"]), e
  store = store_lib.ArtifactStore.open(str(tmp_path / "out"))
  good = sorted(os.path.relpath(os.path.join(d, f), gm) for d, _, fs in os.walk(gm) for f in fs
                if os.path.join(d, f) not in bad)
  assert store.files == good and store.num_rows == 36 and len(store.artifact) == 36
  assert (store.labels >= 0).all() and np.isfinite(store.distance).all()
  assert store.summary["bad_inputs"] == 5 and [m["count"] for m in store.summary["models"]] == [12] * 3
  assert "(36 images, 3 models, 1 estimators, 5 bad inputs skipped," in res.stderr
  # The good rows equal a run on a folder without the bad files.
  for path in bad:
    os.remove(path)
  clean = _binary(gm, tmp_path / "clean")
  assert clean.returncode == 0, clean.stderr[-3000:]
  a, b = read_rows(tmp_path / "out"), read_rows(tmp_path / "clean")
  for f in a:
    np.testing.assert_array_equal(a[f], b[f], err_msg=f)


def test_binary_fail_policy_stops_with_one_line(tmp_path):
  gm = tmp_path / "gm"
  bad = make_bad_gm(str(gm))
  os.remove(bad[-1])  # the symlink would stop it before any batch; test a decode failure
  res = _binary(gm, tmp_path / "out", "--on_bad_input=fail")
  assert res.returncode == 2, res.stderr[-3000:]
  assert "Traceback" not in res.stderr
  # Rows 12 (x_bomb) and 13 (x_truncated) are in batch 1: both listed, the last one named.
  listed = read_bad_inputs(str(tmp_path / "out"))
  assert [(os.path.basename(e["path"]), e["row"]) for e in listed] == [
      ("x_bomb.png", 12), ("x_truncated.png", 13)]
  assert _user_lines(res.stderr)[-1] == (  # the one pinned line of this error kind
      f"compute_artifacts: error: {listed[1]['path']}: {listed[1]['reason']} "
      "(--on_bad_input=fail; use --on_bad_input=skip to skip and list bad files)")
  assert os.listdir(tmp_path / "out" / "checkpoints") == ["1"]  # batch 0 is kept
  assert not store_lib.is_complete(str(tmp_path / "out"))


def test_resumed_run_keeps_the_list(tmp_path):
  gm = tmp_path / "gm"
  bad = make_bad_gm(str(gm))

  def term(done):
    if done == 2:  # rows 0-15 done: x_bomb (12), x_truncated (13) found; x_empty (26) not yet
      os.kill(os.getpid(), signal.SIGTERM)
  with pytest.raises(artifact_job.Preempted):
    artifact_job.compute_artifacts("digits", str(gm), str(tmp_path / "out"), batch_size=8,
                                     checkpoint_every=100, on_batch=term, log_every_s=0.0)
  first = read_bad_inputs(str(tmp_path / "out"))
  assert sorted(os.path.basename(e["path"]) for e in first) == ["x_bomb.png", "x_truncated.png",
                                                                 "y_link.png"]
  out = artifact_job.compute_artifacts("digits", str(gm), str(tmp_path / "out"), batch_size=8,
                                         checkpoint_every=100, log_every_s=0.0)
  assert out["bad_inputs"] == 5
  with open(tmp_path / "out" / BAD_INPUTS) as f:
    lines = [json.loads(l) for l in f]
  assert sorted(e["path"] for e in lines) == sorted(bad)  # each file once, none lost
  assert store_lib.ArtifactStore.open(str(tmp_path / "out")).num_rows == 36


def test_binary_refusals_exit_2(tmp_path):
  gm = tmp_path / "gm"
  os.makedirs(gm / "only")
  shutil.copy(os.path.join(BAD_IMAGES, "unreadable", "good", "x_garbage.png"), gm / "only")
  # Each refusal is one line naming what the user gave (its wording is not pinned here).
  for extra, given in [((), str(gm)),  # no readable image
                       (("--real=nope",), "'nope'"),
                       (("--estimators=nn,bogus",), "'bogus'"),
                       (("--estimators=knn_mean-k5", "--k=2"), "k=2"),
                       (("--estimators=knn_mean-k05",), "'knn_mean-k05'"),
                       (("--k=zz",), "zz")]:
    res = _binary(gm, tmp_path / "out", *extra)
    assert res.returncode == 2, (extra, res.stderr[-3000:])
    assert "Traceback" not in res.stderr
    last = _user_lines(res.stderr)[-1]
    assert last.startswith("compute_artifacts: error: ") and given in last, (extra, last)
    assert not store_lib.is_complete(str(tmp_path / "out"))
