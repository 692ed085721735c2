"""Sharded results equal single-device results (8 simulated CPU devices, own process): the
Manifold on meshes from parallel.make_mesh and on users' jax.make_mesh meshes (2x2, 1x4,
Explicit and Auto axes, any axis names), and the traceable fpjax.knn.search on them."""
import os
import subprocess
import sys


def test_eight_devices_match_one():
  script = os.path.join(os.path.dirname(__file__), "_multidevice_projection.py")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, script], capture_output=True, text=True, env=env,
                       timeout=600)
  assert out.returncode == 0, out.stdout + out.stderr
  assert "OK" in out.stdout
