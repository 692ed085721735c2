"""Every float32 matmul whose accuracy fpjax promises asks for full float32 precision.

GPUs run float32 matmuls in TF32 and TPUs in bfloat16 passes unless told otherwise, while
XLA:CPU ignores the setting, so a numeric test on the CPU cannot see a missing
`precision=lax.Precision.HIGHEST`. These tests read it from the traced program instead:
`default_precision_ops(fn, *args)` traces fn with `jax.make_jaxpr` and lists every float32
(or complex64) `dot_general` / `conv_general_dilated` that does not ask for HIGHEST, inside
jit, scan, while, cond, shard_map, custom_jvp and custom_vjp bodies too. Copy the two
helpers below to check other modules.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import fpjax
from fpjax import spaces, stats
from fpjax.attribution import openset

from _precision_check import count_ops, default_precision_ops  # noqa: E402


# --- the checker itself: it must flag default precision wherever the matmul hides --------

A = jnp.ones((4, 4), jnp.float32)


def _scan(f):
  return lambda a: lax.scan(lambda c, _: (f(c), None), a, None, length=2)[0]


def _while(f):
  return lambda a: lax.while_loop(lambda c: c[1] < 2, lambda c: (f(c[0]), c[1] + 1), (a, 0))[0]


def _cond(f):
  return lambda a: lax.cond(a[0, 0] > 0, f, lambda x: x, a)


def _shard_map(f):
  mesh = jax.make_mesh((1,), ("x",))
  return jax.shard_map(f, mesh=mesh, in_specs=jax.P(), out_specs=jax.P())


def _custom_jvp(f):
  g = jax.custom_jvp(f)
  g.defjvp(lambda primals, tangents: (g(*primals), tangents[0]))
  return g


def _custom_vjp(f):
  g = jax.custom_vjp(f)
  g.defvjp(lambda a: (f(a), None), lambda _, ct: (ct,))
  return g


WRAPPERS = {"plain": lambda f: f, "jit": jax.jit, "scan": _scan, "while": _while, "cond": _cond,
            "shard_map": _shard_map, "custom_jvp": _custom_jvp, "custom_vjp": _custom_vjp,
            "jit(scan(cond))": lambda f: jax.jit(_scan(_cond(f)))}


@pytest.mark.parametrize("wrap", list(WRAPPERS))
def test_checker_flags_default_precision_everywhere(wrap):
  default = WRAPPERS[wrap](lambda a: a @ a)
  found = default_precision_ops(default, A)
  assert len(found) == 1 and "dot_general" in found[0], found
  highest = WRAPPERS[wrap](lambda a: jnp.dot(a, a, precision=lax.Precision.HIGHEST))
  assert default_precision_ops(highest, A) == []


@pytest.mark.parametrize("precision, flagged", [
    (None, True), (lax.Precision.DEFAULT, True), (lax.Precision.HIGH, True),
    ((lax.Precision.HIGHEST, lax.Precision.DEFAULT), True),
    (lax.DotAlgorithmPreset.TF32_TF32_F32, True),
    (lax.Precision.HIGHEST, False), ("highest", False), ("F32_F32_F32", False)])
def test_checker_reads_every_spelling_of_precision(precision, flagged):
  found = default_precision_ops(lambda a: jnp.einsum("ij,jk->ik", a, a, precision=precision), A)
  assert bool(found) == flagged, found


def test_checker_flags_convolutions_and_ignores_low_precision_inputs():
  x = jnp.ones((1, 8, 8, 1), jnp.float32)
  w = jnp.ones((3, 3, 1, 2), jnp.float32)
  conv = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                               dimension_numbers=("NHWC", "HWIO", "NHWC"))
  assert len(default_precision_ops(conv, x, w)) == 1
  # bfloat16 inputs chose low precision on purpose (e.g. the fast search's bf16 pass).
  b = A.astype(jnp.bfloat16)
  assert default_precision_ops(lambda a: a @ a, b) == []


# --- fpjax's promised-accurate float32 computations -------------------------------------

def _stats_state(shape, p):
  d = int(np.prod(shape))
  basis = np.linalg.qr(np.random.default_rng(0).normal(size=(d, p)))[0].astype(np.float32)
  return stats.FingerprintStats.init(3, shape, basis=basis)


@pytest.mark.parametrize("shape, p", [((8, 6, 3), 5), ((12,), 4), ((8, 6, 1), 0)])
def test_fingerprint_stats_update_and_merge_use_highest(shape, p):
  state = _stats_state(shape, p)
  n = 10
  art = jnp.ones((n,) + shape, jnp.float32)
  labels = jnp.zeros(n, jnp.int32)
  for dist in (jnp.ones(n, jnp.float32), jnp.ones((n, 3), jnp.float32)):  # k = 1 and k = 3
    update = lambda s, a, d, l: s.update(a, d, l)
    assert default_precision_ops(update, state, art, dist, labels) == []
  assert default_precision_ops(lambda a, b: a.merge(b), state, state) == []
  if p:  # not vacuous: the projection onto the basis is a matmul (the co-moments' outer
    # products are dot_generals too today, but einsum may one day emit them as multiplies)
    assert count_ops(update, state, art, jnp.ones(n), labels) >= 1


def test_spectra_use_no_default_precision_matmul():
  # The FFT is not a dot_general (cuFFT computes in float32 whatever the matmul precision).
  x = jnp.ones((2, 8, 6, 3), jnp.float32)
  assert default_precision_ops(stats.power_spectrum, x) == []
  assert default_precision_ops(stats.azimuthal_average, jnp.ones((2, 3, 8, 6))) == []


@pytest.mark.parametrize("space", sorted(spaces.SPACES))
def test_embedding_spaces_use_highest(space):
  x = jnp.ones((2, 8, 6, 3), jnp.float32)
  assert default_precision_ops(spaces.space_fn(space), x) == []
  if space == "dct":  # the DCT is two matmuls
    assert count_ops(spaces.space_fn(space), x) >= 1


# --- host float64: FDR, finalize and the open-set prototypes never touch a matmul unit ----

def test_fdr_is_float64_on_the_host():
  # A large common offset with small class separations: float32 sums lose the within-class
  # scatter entirely (1e4 + 1e-3 rounds away), float64 keeps it.
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(3), 50)
  x = (1e4 + labels[:, None] * 1e-2 + rng.normal(size=(150, 4)) * 3e-3).astype(np.float32)
  x64 = x.astype(np.float64)
  mu = x64.mean(0)
  between = sum((labels == c).sum() * ((x64[labels == c].mean(0) - mu) ** 2).sum()
                for c in range(3))
  within = sum(((x64[labels == c] - x64[labels == c].mean(0)) ** 2).sum() for c in range(3))
  for features in (x, jnp.asarray(x)):  # device arrays are copied to the host first
    assert fpjax.fisher_discriminant_ratio(features, labels) == pytest.approx(
        between / within, rel=1e-9)


def test_finalize_and_openset_are_float64():
  x = np.random.default_rng(0).normal(size=(30, 4, 4, 1)).astype(np.float32) + 100
  state = stats.FingerprintStats.init(2, (4, 4, 1), basis=np.eye(16, 3, dtype=np.float32))
  out = state.update(x, np.ones(30, np.float32), np.arange(30) % 2).finalize()
  for key in ("var", "cov", "power_spectrum"):
    assert out[key].dtype == np.float64, key
  clf = openset.PrototypeClassifier.fit(x, np.arange(30) % 3)
  assert clf.prototypes.dtype == np.float64 and clf.distances(x).dtype == np.float64


def test_dzanic20_slope_uses_highest():
  # The least-squares slope is the baseline's main feature: the only matmul among the baselines'
  # fit-free features.
  from fpjax.baselines.dzanic20 import dzanic20_features
  x = jnp.ones((2, 28, 28, 1), jnp.float32)
  assert count_ops(dzanic20_features, x) > 0
  assert not default_precision_ops(dzanic20_features, x)
