#!/usr/bin/env bash
# Ahead-of-time compile checks for NVIDIA GPUs and TPUs, on a machine with neither, in
# environments of their own (libtpu is pinned to one JAX version and the CUDA compiler plugin
# goes in without its dependencies: neither may touch the user's environment), one per JAX
# line fpjax supports: JAX 0.10 on Python 3.11 and JAX 0.12 on Python 3.12.
#   bash tests/aot/run.sh            # both lines
#   AOT_PYTHONS=3.12 bash tests/aot/run.sh   # one
set -euo pipefail
cd "$(dirname "$0")/../.."

find_python() {  # python$1 on PATH, else pyenv's
  local p
  if p=$(command -v "python$1" 2>/dev/null) && "$p" -c "" 2>/dev/null; then echo "$p"; return; fi
  for p in "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/"$1".*/bin/"python$1"; do
    if [ -x "$p" ]; then echo "$p"; return; fi
  done
  return 1
}

# JAX 0.10.2's libtpu overflows its compiler thread's default 8 MiB stack on one program (the
# SL encoder's training step for v6e-8; docs/accelerators.md): compile as a TPU host should.
ulimit -s unlimited 2>/dev/null || true

status=0 ran=0
for version in ${AOT_PYTHONS:-3.11 3.12}; do
  if ! python=$(find_python "$version"); then
    echo "tests/aot: python$version not found: its JAX line is not checked" >&2
    continue
  fi
  env=".venv-aot-$version"
  [ -x "$env/bin/python" ] || "$python" -m venv "$env"
  "$env/bin/python" -m pip install --quiet --upgrade pip
  "$env/bin/python" -m pip install --quiet -e ".[aot]"
  "$env/bin/python" -m pip install --quiet --no-deps -r tests/aot/requirements-cuda.txt
  echo "tests/aot: JAX $("$env/bin/python" -c 'import jax; print(jax.__version__)') on Python $version"
  # tests/aot, and the Mosaic GPU kernel in the interpreter of this JAX line (it differs by line).
  JAX_PLATFORMS=cpu TPU_SKIP_MDS_QUERY=1 "$env/bin/python" -m pytest -q -n 2 tests/aot \
    tests/test_knn_mosaic_gpu.py || status=1
  ran=$((ran + 1))
done
[ "$ran" -gt 0 ] || { echo "tests/aot: no Python for any JAX line" >&2; exit 1; }
exit $status
