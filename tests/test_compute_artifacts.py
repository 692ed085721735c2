"""The compute_artifacts binary: SIGKILL mid-run, rerun, outputs equal an uninterrupted run (three
estimators in one store: their artifacts and statistics too)."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np

from fpjax import fileio
from fpjax import store as store_lib
from test_fingerprinting import make_gm
from test_fingerprinting import same_outputs

FLAGS = ["--real=digits", "--batch_size=8", "--checkpoint_every=2", "--space=rgb",
         "--estimators=nn,knn_mean-k3,input"]
# The killed run is slowed down (0.4 s per batch) so the kill lands between checkpoints.
SLOW = textwrap.dedent("""
    import functools, sys, time
    from fpjax import artifact_job
    from fpjax.bin import compute_artifacts
    from fpjax.bin import flags
    artifact_job.compute_artifacts = functools.partial(
        artifact_job.compute_artifacts, on_batch=lambda done: time.sleep(0.4))
    flags.run(compute_artifacts.main)
""")


def _binary(gm, out, prefix=None):
  cmd = prefix or [sys.executable, "-m", "fpjax.bin.compute_artifacts"]
  return cmd + FLAGS + [f"--gm={gm}", f"--workdir={out}"]


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu")


def test_sigkill_then_rerun_equals_uninterrupted(tmp_path):
  gm = tmp_path / "gm"
  make_gm(gm, n=20)  # 60 images, 8 batches of 8
  clean = subprocess.run(_binary(gm, tmp_path / "clean"), env=_env(), capture_output=True,
                         text=True, timeout=300)
  assert clean.returncode == 0, clean.stderr[-3000:]

  out = tmp_path / "killed"
  slow = subprocess.Popen(_binary(gm, out, [sys.executable, "-c", SLOW, "x"]), env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpt = out / "checkpoints"
  deadline = time.time() + 240
  # Kill right after the first checkpoint is finished, while batches 3-4 are being computed.
  while time.time() < deadline and not (ckpt.exists() and "2" in os.listdir(ckpt)):
    time.sleep(0.05)
    assert slow.poll() is None, "the slowed run ended before it could be killed"
  time.sleep(0.5)
  slow.send_signal(signal.SIGKILL)
  slow.wait(timeout=30)
  assert not store_lib.is_complete(str(out))

  rerun = subprocess.run(_binary(gm, out), env=_env(), capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "resuming" in rerun.stderr and "at batch 0/" not in rerun.stderr

  same_outputs(tmp_path / "clean", out)
  store = store_lib.ArtifactStore.open(str(out))
  assert store.estimators == ["nn", "knn_mean-k3", "input"] and store.k == 3
  assert not any(n.startswith(".tmp-") for n in os.listdir(out / "artifacts"))


def test_sigterm_exits_143_with_checkpoint(tmp_path):
  gm = tmp_path / "gm"
  make_gm(gm, n=20)
  out = tmp_path / "out"
  slow = subprocess.Popen(_binary(gm, out, [sys.executable, "-c", SLOW, "x"]), env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while time.time() < deadline and not (out / "metrics.jsonl").exists():
    time.sleep(0.05)
  slow.send_signal(signal.SIGTERM)
  err = slow.communicate(timeout=120)[1]
  assert slow.returncode == 143, err[-3000:]
  assert "rerun with the same --workdir" in err
  steps = os.listdir(out / "checkpoints")
  assert steps and not store_lib.is_complete(str(out))  # resuming it: test_fingerprinting


def test_two_processes_with_estimators_equal_one(tmp_path):
  """Two processes (4 CPU devices each) with a search, a learned and the control estimator equal
  one process: each trains the same autoencoder and they save it together; every estimator's
  rows and statistics agree."""
  from test_multihost import _cmd, _free_port
  gm = tmp_path / "gm"
  make_gm(gm, n=8)
  est = ["--estimators=nn,knn_mean-k3,learned,input"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="4")
  single = subprocess.run(_cmd(gm, tmp_path / "one", *est), env=env, capture_output=True,
                          text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]
  port = _free_port()
  procs = [subprocess.Popen(
      _cmd(gm, tmp_path / "two", *est, f"--coordinator_address=localhost:{port}",
           "--num_processes=2", f"--process_id={i}"), env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, o in zip(procs, outs):
    assert p.returncode == 0, o[-3000:]
  assert all("trained the 'learned' autoencoder" in o for o in outs)
  assert os.path.isdir(tmp_path / "two" / "autoencoder")
  one, two = (store_lib.ArtifactStore.open(str(tmp_path / d)) for d in ("one", "two"))
  assert one.estimators == two.estimators == ["nn", "knn_mean-k3", "learned", "input"]
  np.testing.assert_array_equal(one.index, two.index)
  for key in one.estimators:
    np.testing.assert_allclose(np.asarray(one.artifacts(key)), np.asarray(two.artifacts(key)),
                               atol=1e-5, err_msg=key)
    s1, s2 = (fileio.load_array(s.stats_path_of(key)) for s in (one, two))
    for f in s1:
      np.testing.assert_allclose(s1[f], s2[f], rtol=1e-4, atol=1e-5, err_msg=f"{key} {f}")
