"""Ahead-of-time compile checks for GPUs and TPUs, on a machine without either.

They need libtpu and the CUDA compiler plugin at the installed JAX's version, which are kept out
of the user's environment: `bash tests/aot/run.sh` makes an environment of its own per JAX line
and runs them there. Anywhere else (the ordinary test run) they are skipped.
"""
import importlib.util
import os

import pytest

# Before JAX starts: the plugins only compile here, they must not be opened as devices.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
# Compile-only use: several processes (pytest-xdist, a benchmark beside the tests) may load it.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

_MISSING = [name for name in ("libtpu", "jax_plugins.xla_cuda12")
            if importlib.util.find_spec(name.split(".")[0]) is None
            or (name.startswith("jax_plugins") and importlib.util.find_spec(name) is None)]


def pytest_collection_modifyitems(config, items):
  del config
  if not _MISSING:
    return
  skip = pytest.mark.skip(reason=f"ahead-of-time checks need {', '.join(_MISSING)} (run "
                                 "`bash tests/aot/run.sh`)")
  here = os.path.dirname(os.path.abspath(__file__))
  for item in items:
    if str(item.fspath).startswith(here):
      item.add_marker(skip)
