"""The compute_artifacts binary: killed mid-run (SIGKILL) or preempted (SIGTERM, exit 143), then
rerun: the outputs equal an uninterrupted run's (three estimators in one store: their artifacts
and statistics too). The interruptions come from the job's own `on_batch` hook at a chosen
batch, so nothing depends on how fast the machine is."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fpjax import fileio
from fpjax import progress
from fpjax import store as store_lib
from test_fingerprinting import make_gm
from test_fingerprinting import same_outputs
from test_multihost import _cmd
from test_multihost import _free_port

FLAGS = ["--real=digits", "--batch_size=8", "--checkpoint_every=2", "--space=rgb",
         "--estimators=nn,knn_mean-k3,input"]
# The binary, with the job's on_batch hook sending this process `signal` once `batch` batches
# are committed (after batch 2's checkpoint, before batch 4's: the kill lands between them).
STOP_AT = textwrap.dedent("""
    import functools, os, signal, sys
    from fpjax import artifact_job
    from fpjax.bin import compute_artifacts
    from fpjax.bin import flags
    sig, batch = getattr(signal, sys.argv.pop(1)), int(sys.argv.pop(1))
    def stop(done):
      if done == batch:
        os.kill(os.getpid(), sig)
    artifact_job.compute_artifacts = functools.partial(artifact_job.compute_artifacts,
                                                       on_batch=stop)
    flags.run(compute_artifacts.main)
""")


def _binary(gm, out, stop=None):
  cmd = [sys.executable, "-m", "fpjax.bin.compute_artifacts"]
  if stop is not None:
    cmd = [sys.executable, "-c", STOP_AT, *stop]
  return cmd + FLAGS + [f"--gm={gm}", f"--workdir={out}"]


def _run(cmd, **kw):
  return subprocess.run(cmd, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
                        text=True, timeout=300, **kw)


@pytest.fixture(scope="module")
def gm_and_clean(tmp_path_factory):
  """60 images (8 batches of 8) and an uninterrupted run of the binary on them."""
  tmp = tmp_path_factory.mktemp("binary")
  make_gm(tmp / "gm", n=20)
  clean = _run(_binary(tmp / "gm", tmp / "clean"))
  assert clean.returncode == 0, clean.stderr[-3000:]
  return tmp / "gm", tmp / "clean"


def _steps(workdir):
  return [r["step"] for r in progress.read_metrics(os.path.join(workdir, "metrics.jsonl"))]


def test_sigkill_then_rerun_equals_uninterrupted(gm_and_clean, tmp_path):
  gm, clean = gm_and_clean
  out = tmp_path / "killed"
  killed = _run(_binary(gm, out, ("SIGKILL", "3")))
  assert killed.returncode == -9, killed.stderr[-3000:]
  assert not store_lib.is_complete(str(out))
  assert os.listdir(out / "checkpoints") == ["2"]  # batch 3's rows written, not checkpointed

  rerun = _run(_binary(gm, out))
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  # The rerun resumed after batch 2 (its first metrics line is batch 3's), not from the start.
  assert _steps(out) == [1, 2, 3, 3, 4, 5, 6, 7, 8]
  same_outputs(clean, out)
  store = store_lib.ArtifactStore.open(str(out))
  assert store.estimators == ["nn", "knn_mean-k3", "input"] and store.k == 3
  assert not any(n.startswith(".tmp-") for n in os.listdir(out / "artifacts"))


def test_sigterm_exits_143_with_checkpoint_then_resumes(gm_and_clean, tmp_path):
  gm, clean = gm_and_clean
  out = tmp_path / "out"
  term = _run(_binary(gm, out, ("SIGTERM", "3")))
  assert term.returncode == 143, term.stderr[-3000:]
  assert "Traceback" not in term.stderr
  # The signal came after batch 3: the processes agree on stopping at the next batch boundary
  # check, after committing batch 4, and checkpoint it (batch 2's is kept too).
  assert sorted(os.listdir(out / "checkpoints")) == ["2", "4"]
  assert not store_lib.is_complete(str(out))
  rerun = _run(_binary(gm, out))
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert _steps(out) == [1, 2, 3, 4, 5, 6, 7, 8]  # nothing redone, nothing lost
  same_outputs(clean, out)


def test_two_processes_with_estimators_equal_one(tmp_path):
  """Two processes (4 CPU devices each) with a search, a learned and the control estimator equal
  one process: each trains the same autoencoder and they save it together; every estimator's
  rows and statistics agree."""
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
  # Each process logs its own training (the one pinned line of that step).
  assert all("compute_artifacts: trained the 'learned' autoencoder" in o for o in outs)
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
