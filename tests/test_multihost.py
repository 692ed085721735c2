"""Two processes on localhost (4 CPU devices each, gloo collectives) equal one process.

Runs the compute_artifacts binary with --coordinator_address/--num_processes/--process_id.
Each process writes its own chunks of the artifact store; the joined store must equal the
store of a one-process run.
"""
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np

from fpjax.data.bad_inputs import BAD_INPUTS, read_bad_inputs
from test_bad_input import BAD_IMAGES
from test_fingerprinting import make_gm
from test_fingerprinting import read_fingerprint
from test_fingerprinting import read_rows


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _cmd(gm, out, *extra):
  return [sys.executable, "-m", "fpjax.bin.compute_artifacts", "--real=digits", f"--gm={gm}",
          f"--workdir={out}", "--batch_size=16", "--checkpoint_every=2", "--space=freq", *extra]


def test_two_processes_equal_one(tmp_path):
  gm = tmp_path / "gm"
  make_gm(gm, n=15)  # 45 images: the last batch is padded differently on 1 and 2 processes
  # A bad file at row 15, in process 1's block of batch 0 (rows 8-15), and a symlink leaving the
  # root (refused when listing, by process 0 alone): each listed once, skipped on both runs.
  truncated = gm / "noisy" / "x_truncated.png"
  shutil.copy(os.path.join(BAD_IMAGES, "truncated", "good", "x_truncated.png"), truncated)
  link = gm / "washed" / "y_link.png"
  os.symlink(os.path.join(BAD_IMAGES, "conversions", "grey", "grey.png"), link)
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="4")
  single = subprocess.Popen(_cmd(gm, tmp_path / "one"), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
  single_out = single.communicate(timeout=300)[0]
  assert single.returncode == 0, single_out[-3000:]
  port = _free_port()
  procs = [subprocess.Popen(
      _cmd(gm, tmp_path / "two", f"--coordinator_address=localhost:{port}", "--num_processes=2",
           f"--process_id={i}"), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True) for i in range(2)]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  for p, o in zip(procs, outs):
    assert p.returncode == 0, o[-3000:]
  # The one pinned line of the job's start: each process sees its 4 of the 8 devices.
  assert "compute_artifacts: process 0 of 2, 4 of 8 devices" in outs[0], outs[0][-3000:]
  assert "compute_artifacts: process 1 of 2, 4 of 8 devices" in outs[1]

  # Two processes: global batch 16 = two blocks of 8 rows, one per process; a block is a chunk.
  index = json.load(open(tmp_path / "two" / "artifacts" / "index.json"))
  assert index["chunk_rows"] == 8 and index["process_count"] == 2 and index["num_rows"] == 46
  assert index["files"][15] == os.path.join("noisy", "x_truncated.png")
  assert sorted(os.listdir(tmp_path / "two" / "artifacts" / "label")) == [
      ".zarray", "0", "1", "2", "3", "4", "5"]  # rows 0-7 (process 0), 8-15 (process 1), ...
  listed = read_bad_inputs(str(tmp_path / "two"))
  with open(tmp_path / "two" / BAD_INPUTS) as f:
    assert len(f.readlines()) == 2
  assert sorted((e["path"], e["stage"]) for e in listed) == [
      (str(truncated), "decode"), (str(link), "list")]
  assert sum(str(truncated) in o for o in outs) == 1  # one stderr line, from process 1
  assert str(truncated) in outs[1] and str(link) in outs[0] and str(link) not in outs[1]
  one = read_rows(tmp_path / "one")
  two = read_rows(tmp_path / "two")
  np.testing.assert_array_equal(one["label"], np.repeat(np.arange(3), 15))
  for f in ("label", "index"):
    np.testing.assert_array_equal(one[f], two[f], err_msg=f)
  np.testing.assert_allclose(one["distance"], two["distance"], rtol=1e-6)
  np.testing.assert_allclose(one["artifact"], two["artifact"], atol=1e-6)
  s1, sum1 = read_fingerprint(tmp_path / "one")
  s2, sum2 = read_fingerprint(tmp_path / "two")
  for f in s1:
    np.testing.assert_allclose(s1[f], s2[f], rtol=1e-5, atol=1e-6, err_msg=f)
  assert [m["count"] for m in sum1["models"]] == [m["count"] for m in sum2["models"]] == [15] * 3
  assert sum1["bad_inputs"] == sum2["bad_inputs"] == 2
  # Only process 0 writes metrics.
  assert os.path.getsize(tmp_path / "two" / "metrics.jsonl") > 0


def test_two_processes_stop_together_on_a_bad_file(tmp_path):
  # --on_bad_input=fail: process 1 finds the bad file in its block of batch 2 (rows 40-47); the
  # processes agree to stop before committing that batch, keep batches 0-1, and both exit 2.
  gm = tmp_path / "gm"
  make_gm(gm, n=15)
  bad = gm / "washed" / "000010.png"  # row 40
  shutil.copy(os.path.join(BAD_IMAGES, "truncated", "good", "x_truncated.png"), bad)
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="4")
  port = _free_port()
  procs = [subprocess.Popen(
      _cmd(gm, tmp_path / "two", f"--coordinator_address=localhost:{port}", "--num_processes=2",
           f"--process_id={i}", "--on_bad_input=fail"), env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  assert [p.returncode for p in procs] == [2, 2], outs[0][-2000:] + outs[1][-2000:]
  assert "Traceback" not in outs[0] + outs[1]
  last = [o.strip().splitlines()[-1] for o in outs]
  assert last[1].startswith("compute_artifacts: error: ") and str(bad) in last[1]
  # Process 0 names no file it did not see; it points to the list where process 1 wrote it.
  assert last[0].startswith("compute_artifacts: error: ") and str(bad) not in last[0]
  assert str(tmp_path / "two" / BAD_INPUTS) in last[0]
  assert os.listdir(tmp_path / "two" / "checkpoints") == ["2"]
  assert [e["row"] for e in read_bad_inputs(str(tmp_path / "two"))] == [40]
