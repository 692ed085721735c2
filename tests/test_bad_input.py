"""Bad input: refused with a ValueError naming the file, or skipped and listed as documented.

Array/zoo cases: tests/data/bad_inputs/ (make_bad_inputs.py). Image-file cases reuse
tests/data/bad_images/ (made by helper-data's tests/data/make_bad_images.py). The binary is run
as a user runs it (a subprocess) and judged by its exit status, stderr and files.
"""
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from fpjax.errors import BadInputError
from fpjax.data.bad_inputs import BAD_INPUTS, read_bad_inputs
from fpjax import fileio
from fpjax import store as store_lib
from fpjax import artifact_job
from test_fingerprinting import make_gm
from test_fingerprinting import read_rows

HERE = os.path.dirname(os.path.abspath(__file__))
BAD = os.path.join(HERE, "data", "bad_inputs")
BAD_IMAGES = os.path.join(HERE, "data", "bad_images")


@pytest.mark.parametrize("name, problem", [
    ("nan.npy", "hold NaN or Inf, first at row 2"),
    ("out_of_range.npy", "must lie in \\[0, 1\\]"),
    ("pickled.npy", "Python objects.*allow_pickle stays off"),
    ("pickled.npz", "Python objects"),
    ("wrong_magic.npy", "wrong magic"),
    ("truncated.npy", "truncated or corrupt"),
    ("bomb.npy", "over the limit"),
    ("bomb.npz", "decompression bomb"),
    ("strings.npy", "not a numeric"),
    ("wrong_rank.npy", "expected images \\[N, H, W, C\\]"),
    ("missing.npy", "no such file"),
])
def test_bad_arrays_refused_naming_the_file(name, problem):
  path = os.path.join(BAD, name)
  with pytest.raises(ValueError, match=problem) as e:
    fileio.load_images(path, max_bytes=1 << 20)
  assert path in str(e.value)


def test_good_array_and_pickle_never_loaded(monkeypatch):
  assert fileio.load_images(os.path.join(BAD, "good_float.npy")).shape == (4, 8, 8, 1)
  import pickle
  monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
  monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
  with pytest.raises(ValueError):
    fileio.load_array(os.path.join(BAD, "pickled.npy"))


def test_symlink_out_of_root_refused(tmp_path):
  root = tmp_path / "data"
  os.makedirs(root)
  os.symlink(os.path.join(BAD, "good_float.npy"), root / "link.npy")
  with pytest.raises(ValueError, match="outside the data root") as e:
    fileio.load_array(str(root / "link.npy"), root=str(root))
  assert "link.npy" in str(e.value)
  gm = tmp_path / "gm"
  make_gm(gm, n=2)
  os.symlink(os.path.join(BAD_IMAGES, "conversions", "grey", "grey.png"), gm / "noisy" / "x.png")
  with pytest.raises(ValueError, match="outside the root") as e:
    artifact_job.open_generated(str(gm), (8, 8, 1))
  assert "x.png" in str(e.value)


@pytest.mark.parametrize("case", ["zoo_dotdot_name", "zoo_separator_name"])
def test_zoo_model_name_with_path_refused(case):
  with pytest.raises(ValueError, match="not a safe file name") as e:
    artifact_job.open_generated(os.path.join(BAD, case), (8, 8, 1))
  assert "zoo.json" in str(e.value)


def test_dotdot_model_folder_refused():
  with pytest.raises(ValueError, match="'a..b'"):
    artifact_job.open_generated(os.path.join(BAD_IMAGES, "dotdot_name"), (8, 8, 1))


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
  with pytest.raises(BadInputError, match="decompression") as e:
    artifact_job.compute_artifacts(bank, gm, str(tmp_path / "fail"), batch_size=8,
                                     on_bad_input="fail")
  assert "x_bomb.png" in str(e.value) and e.value.path.endswith("x_bomb.png")
  out = artifact_job.compute_artifacts(bank, gm, str(tmp_path / "skip"), batch_size=8)
  store = store_lib.ArtifactStore.open(out["workdir"])
  assert store.files == ["good/0.png", "good/1.png"] and out["bad_inputs"] == 1
  assert [e["path"] for e in store.bad_inputs()] == [os.path.join(gm, "good", "x_bomb.png")]


def test_nan_bank_refused(tmp_path):
  with pytest.raises(ValueError, match="nan.npy"):
    artifact_job.compute_artifacts(os.path.join(BAD, "nan.npy"), os.path.join(BAD_IMAGES, "bomb"),
                                     str(tmp_path))


def test_bad_file_mid_run_fail_keeps_work_and_resumes_after_fix(tmp_path):
  gm = tmp_path / "gm"
  make_gm(gm, n=12)  # rows 0-35; 'shifted' = rows 12-23
  bad = gm / "shifted" / "000010.png"  # row 22, in batch 5 (4 images a batch)
  good = bad.read_bytes()
  shutil.copy(os.path.join(BAD_IMAGES, "truncated", "good", "x_truncated.png"), bad)
  out = tmp_path / "out"
  kw = dict(batch_size=4, checkpoint_every=100, log_every_s=0.0, on_bad_input="fail")
  with pytest.raises(ValueError, match="truncated") as e:
    artifact_job.compute_artifacts("digits", str(gm), str(out), **kw)
  assert str(bad) in str(e.value)
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
  with pytest.raises(ValueError, match="row 4 was never written"):
    store_lib.ArtifactStore.open(str(out))
  index = json.load(open(out / "artifacts" / "index.json"))
  fileio.save_json(str(out / "artifacts" / "index.json"), dict(index, format="other/1"))
  with pytest.raises(ValueError, match="format 'other/1'"):
    store_lib.ArtifactStore.open(str(out))
  with pytest.raises(ValueError, match="no COMPLETE marker"):
    store_lib.ArtifactStore.open(str(tmp_path))


# ------------------------------------------------------------------------------ the binary

BAD_FILES = [("truncated", "x_truncated.png", "noisy", "truncated or corrupt"),
             ("bomb", "x_bomb.png", "noisy", "decompression bomb"),
             ("zero_byte", "x_empty.png", "shifted", "zero-byte"),
             ("unreadable", "x_garbage.png", "washed", "unreadable image")]


def make_bad_gm(root):
  """make_gm's 36 good images plus four bad files and a symlink leaving the root; returns the
  bad paths (absolute)."""
  make_gm(root, n=12)
  paths = []
  for case, name, model, _ in BAD_FILES:
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
  """stderr without absl's log lines (they start with a level letter and a date)."""
  return [l for l in stderr.splitlines() if l and not (l[0] in "IWEF" and l[1:5].isdigit())]


def test_binary_skips_and_lists_bad_files(tmp_path):
  gm = tmp_path / "gm"
  bad = make_bad_gm(str(gm))
  res = _binary(gm, tmp_path / "out")
  assert res.returncode == 0, res.stderr[-3000:]
  assert "Traceback" not in res.stderr
  lines = _user_lines(res.stderr)
  assert len(lines) == len(bad), lines  # one line per bad file, nothing else
  for path in bad:
    assert sum(path in l for l in lines) == 1, (path, lines)
  assert all(l.startswith("compute_artifacts: skipped bad input") for l in lines)
  listed = read_bad_inputs(str(tmp_path / "out"))
  assert sorted(e["path"] for e in listed) == sorted(bad)
  stages = {os.path.basename(e["path"]): e["stage"] for e in listed}
  assert stages["y_link.png"] == "list" and stages["x_bomb.png"] == "decode"
  for case, name, _, reason in BAD_FILES:
    assert reason in next(e["reason"] for e in listed if e["path"].endswith(name))
  store = store_lib.ArtifactStore.open(str(tmp_path / "out"))
  good = sorted(os.path.relpath(os.path.join(d, f), gm) for d, _, fs in os.walk(gm) for f in fs
                if os.path.join(d, f) not in bad)
  assert store.files == good and store.num_rows == 36 and len(store.artifact) == 36
  assert (store.labels >= 0).all() and np.isfinite(store.distance).all()
  assert store.summary["bad_inputs"] == 5 and [m["count"] for m in store.summary["models"]] == [12] * 3
  assert "5 bad inputs skipped" in res.stderr.strip().splitlines()[-1]
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
  last = _user_lines(res.stderr)[-1]
  assert last.startswith("compute_artifacts: error: ") and "--on_bad_input=fail" in last
  assert "x_truncated.png: truncated or corrupt image" in last  # rows 12, 13: batch 1
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
  for extra, message in [((), "no readable image"),
                         (("--real=nope",), "--real 'nope': not one of"),
                         (("--estimators=nn,bogus",), "unknown estimator 'bogus'"),
                         (("--estimators=knn_mean-k5", "--k=2"), "need the 5 nearest bank rows"),
                         (("--estimators=knn_mean-k05",), "write it 'knn_mean-k5'"),
                         (("--k=zz",), "flag --k=zz")]:
    res = _binary(gm, tmp_path / "out", *extra)
    assert res.returncode == 2, (extra, res.stderr[-3000:])
    assert "Traceback" not in res.stderr
    assert message in _user_lines(res.stderr)[-1], (extra, res.stderr[-2000:])
