"""The precision rule, checked structurally: float32 matmuls and convolutions that do not ask for
HIGHEST. XLA:CPU ignores the precision setting, so no numeric test on the CPU can see TF32 or
bfloat16 passes that GPUs and TPUs use by default; the traced programs can.

Shared by tests/test_precision.py (statistics, spaces) and tests/test_manifold.py (the kernel).
"""
import jax
import numpy as np
from jax import lax

# Primitives whose float32 accuracy depends on the backend's default matmul precision.
PRECISION_PRIMITIVES = ("dot_general", "conv_general_dilated")
_FULL_DTYPES = (np.dtype(np.float32), np.dtype(np.complex64))
# Full float32 on every backend: HIGHEST on both operands, or an explicit float32 algorithm.
_FULL_ALGORITHMS = (lax.DotAlgorithmPreset.F32_F32_F32, lax.DotAlgorithmPreset.F64_F64_F64)


def _sub_jaxprs(value):
  """The jaxprs held by one equation parameter (a Jaxpr, ClosedJaxpr, or a tuple of them)."""
  if hasattr(value, "eqns"):  # Jaxpr (shard_map's body)
    yield value
  elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):  # ClosedJaxpr
    yield value.jaxpr
  elif isinstance(value, (tuple, list)):  # cond's branches
    for v in value:
      yield from _sub_jaxprs(v)


def _asks_full_precision(precision) -> bool:
  if isinstance(precision, lax.DotAlgorithmPreset):
    return precision in _FULL_ALGORITHMS
  if isinstance(precision, (tuple, list)):
    return len(precision) > 0 and all(p == lax.Precision.HIGHEST for p in precision)
  return precision == lax.Precision.HIGHEST


def _walk(jaxpr, path, found):
  for eqn in jaxpr.eqns:
    name = str(eqn.primitive)
    if name in PRECISION_PRIMITIVES:
      dtypes = [np.dtype(v.aval.dtype) for v in eqn.invars]
      if any(d in _FULL_DTYPES for d in dtypes) and not _asks_full_precision(
          eqn.params.get("precision")):
        shapes = " x ".join(str(v.aval.str_short()) for v in eqn.invars)
        found.append(f"{'/'.join(path + [name])}: {shapes} precision="
                     f"{eqn.params.get('precision')}")
    for value in eqn.params.values():
      for sub in _sub_jaxprs(value):
        _walk(sub, path + [name], found)


def default_precision_ops(fn, *args, **kwargs) -> list[str]:
  """Float32 matmuls / convolutions in fn(*args) that do not ask for HIGHEST precision."""
  found = []
  _walk(jax.make_jaxpr(fn, **kwargs)(*args).jaxpr, [], found)
  return found


def count_ops(fn, *args) -> int:
  """Number of dot_general / conv equations in fn(*args), sub-jaxprs included."""
  n = 0
  def walk(jaxpr):
    nonlocal n
    for eqn in jaxpr.eqns:
      n += str(eqn.primitive) in PRECISION_PRIMITIVES
      for value in eqn.params.values():
        for sub in _sub_jaxprs(value):
          walk(sub)
  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return n
