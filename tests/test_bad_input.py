"""Bad input: every case is refused with a ValueError naming the file, or handled as documented.

Array/zoo cases: tests/data/bad_inputs/ (make_bad_inputs.py). Image-file cases reuse
tests/data/bad_images/ (made by helper-data's tests/data/make_bad_images.py).
"""
import os
import shutil

import numpy as np
import pytest

from fpjax import artifact_io
from fpjax import fingerprinting
from test_fingerprinting import make_gm

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
    artifact_io.load_images(path, max_bytes=1 << 20)
  assert path in str(e.value)


def test_good_array_and_pickle_never_loaded(monkeypatch):
  assert artifact_io.load_images(os.path.join(BAD, "good_float.npy")).shape == (4, 8, 8, 1)
  import pickle
  monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
  monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
  with pytest.raises(ValueError):
    artifact_io.load_array(os.path.join(BAD, "pickled.npy"))


def test_symlink_out_of_root_refused(tmp_path):
  root = tmp_path / "data"
  os.makedirs(root)
  os.symlink(os.path.join(BAD, "good_float.npy"), root / "link.npy")
  with pytest.raises(ValueError, match="outside the data root") as e:
    artifact_io.load_array(str(root / "link.npy"), root=str(root))
  assert "link.npy" in str(e.value)
  gm = tmp_path / "gm"
  make_gm(gm, n=2)
  os.symlink(os.path.join(BAD_IMAGES, "conversions", "grey", "grey.png"), gm / "noisy" / "x.png")
  with pytest.raises(ValueError, match="outside the root") as e:
    fingerprinting.open_generated(str(gm), (8, 8, 1))
  assert "x.png" in str(e.value)


@pytest.mark.parametrize("case", ["zoo_dotdot_name", "zoo_separator_name"])
def test_zoo_model_name_with_path_refused(case):
  with pytest.raises(ValueError, match="not a safe file name") as e:
    fingerprinting.open_generated(os.path.join(BAD, case), (8, 8, 1))
  assert "zoo.json" in str(e.value)


def test_dotdot_model_folder_refused():
  with pytest.raises(ValueError, match="'a..b'"):
    fingerprinting.open_generated(os.path.join(BAD_IMAGES, "dotdot_name"), (8, 8, 1))


def test_npy_bank_with_cmyk_jpeg_and_16bit_png_converted(tmp_path):
  # Documented handling: CMYK/palette/RGBA -> RGB, 16-bit grey / 257, then the bank's channels (1).
  out = fingerprinting.compute_artifacts(
      os.path.join(BAD, "good_float.npy"), os.path.join(BAD_IMAGES, "conversions"), str(tmp_path),
      batch_size=16, log_every_s=0.0)
  assert [m["count"] for m in out["models"]] == [5, 4]  # colour: 5 files, grey: 4 (cmyk, grey16 ..)
  rows = artifact_io.read_artifacts(str(tmp_path))
  assert np.all(np.isfinite(rows["artifact"]))


def test_decompression_bomb_png_refused(tmp_path):
  with pytest.raises(ValueError, match="decompression") as e:
    fingerprinting.compute_artifacts(os.path.join(BAD, "good_float.npy"),
                                     os.path.join(BAD_IMAGES, "bomb"), str(tmp_path), batch_size=8)
  assert "x_bomb.png" in str(e.value)


def test_nan_bank_refused(tmp_path):
  with pytest.raises(ValueError, match="nan.npy"):
    fingerprinting.compute_artifacts(os.path.join(BAD, "nan.npy"), os.path.join(BAD_IMAGES, "bomb"),
                                     str(tmp_path))


def test_bad_file_mid_run_keeps_work_and_resumes_after_fix(tmp_path):
  gm = tmp_path / "gm"
  make_gm(gm, n=12)  # rows 0-35; 'shifted' = rows 12-23
  bad = gm / "shifted" / "000010.png"  # row 22, in batch 5 (4 images a batch)
  good = bad.read_bytes()
  shutil.copy(os.path.join(BAD_IMAGES, "truncated", "good", "x_truncated.png"), bad)
  out = tmp_path / "out"
  kw = dict(batch_size=4, checkpoint_every=100, log_every_s=0.0)
  with pytest.raises(ValueError, match="truncated") as e:
    fingerprinting.compute_artifacts("digits", str(gm), str(out), **kw)
  assert str(bad) in str(e.value)
  steps = [int(s) for s in os.listdir(out / "checkpoints")]
  assert steps and 0 < max(steps) <= 5  # the batches before the bad file survive
  bad.write_bytes(good)  # fix the file and rerun: resumes where it stopped
  seen = []
  fingerprinting.compute_artifacts("digits", str(gm), str(out), on_batch=seen.append, **kw)
  assert seen[0] == max(steps) + 1
  rows = artifact_io.read_artifacts(str(out))
  np.testing.assert_array_equal(np.sort(rows["row"]), np.arange(36))


def test_tampered_shard_refused(tmp_path):
  (tmp_path / "artifacts").mkdir()
  shutil.copy(os.path.join(BAD, "pickled.npz"), tmp_path / "artifacts" / "shard-00000.npz")
  with pytest.raises(ValueError, match="Python objects"):
    artifact_io.read_shard(str(tmp_path), "shard-00000.npz")
  with pytest.raises(ValueError, match="not a safe file name"):
    artifact_io.read_shard(str(tmp_path), "../shard.npz")
