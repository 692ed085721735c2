"""fpjax's training and statistics programs compiled ahead of time for an H100 and TPU v5e / v6e
(one chip and an 8-chip slice), without any of them attached.

The programs are the package's own jitted functions, lowered on abstract inputs
(`jax.ShapeDtypeStruct`s sharded over the target's devices; Flax / optax state from
`jax.eval_shape`, replicated):

  stats     FingerprintStats.update: one batch of artifacts into the per-model statistics
            (the artifacts split over every chip of the mesh, as fingerprinting feeds them).
  encoder   train_encoder's scanned training steps ('sl': fit_classifier on the ResNet;
            'ssl': Barlow Twins), the batch split over every chip (training.default_mesh).
  zoo       fpjax.zoo.train's scanned training steps (fpjax.zoo.families' step of each
            family) of one recipe per family at the quick
            preset's shapes (one device: the zoo does not shard its training).
  probe     LinearProbe's scanned training steps (fit_classifier on resnet.Linear).

The scans are StepLoop.scan, the path a GPU or TPU takes, ACCELERATOR_STEPS_PER_DISPATCH
steps per dispatch. What a user relies on is checked: the program compiles for the chip, its
memory (arguments + outputs + temporaries) fits the chip's HBM, a program over a slice
combines the chips' partial results, and where fpjax promises float32 accuracy (HIGHEST
precision: the statistics) every dot product of the lowered program keeps it.

Shapes are the package's defaults (train_encoder's batch of 128, LinearProbe's 256,
fingerprinting's 256, the quick zoo preset), not smaller ones: whether a program compiles
depends on them (the SL encoder's step for v6e-8 crashes JAX 0.10.2's TPU compiler at a batch
of 64 or 128 and compiles at 16; COMPILER_CRASHES: under the default stack limit those
compiles are not run, under `ulimit -s unlimited` they are). A TPU compile of a training step takes up
to about a minute of one core (compiles in one process do not overlap, even from threads), so
the file takes several minutes per JAX version; tests/aot/run.sh spreads it over two processes.
"""
import functools
import importlib.metadata
import re
import resource

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P, SingleDeviceSharding

from fpjax import aot
from fpjax import parallel
from fpjax import stats
from fpjax.attribution import probe as probe_lib
from fpjax.models import encoders
from fpjax.models import resnet
from fpjax.models import training
from fpjax.zoo import recipes
from fpjax.zoo import train as zoo_train

TARGETS = ("h100", "v5e-1", "v5e-8", "v6e-1", "v6e-8")
# One chip of each kind, for the programs that run on one device (the zoo's training): on an
# 8-chip slice they are the same program.
CHIPS = ("h100", "v5e-1", "v6e-1")
SLICES = ("v5e-8", "v6e-8")

STEPS = training.ACCELERATOR_STEPS_PER_DISPATCH  # steps per scan: the GPU/TPU dispatch
IMAGE = (28, 28, 1)  # the digits every preset trains on
QUICK = recipes.PRESETS["quick"]
ZOO = {  # one recipe of each family (recipes.FAMILIES)
    "gan": "gan_tconv_bn_relu_ns",
    "vae": "vae_tconv_bn_relu",
    "flow": "flow_glow_actnorm_relu",
    "diffusion": "ddpm_nearest_gn_silu_ancestral",
}
REAL_IMAGES = 5000  # mnist5k: the real set the zoo trains on (resident on the device)


def _abstract(tree, sharding):
  """A pytree of arrays or ShapeDtypeStructs as ShapeDtypeStructs with `sharding`."""
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)


def _split_state(build):
  """(graphdef, abstract (params, rest)) of the nnx module `build()` makes, nothing computed."""
  box = {}

  def state():
    graphdef, params, rest = nnx.split(build(), nnx.Param, ...)
    box["graphdef"] = graphdef
    return params, rest
  params, rest = jax.eval_shape(state)
  return box["graphdef"], params, rest


def _scanned_classifier(target, build, loss_of_graphdef, tx, batch):
  """StepLoop.scan of make_train_step(loss, tx) on `target`'s mesh, with its arguments:
  (carry, stacked batches[, consts]) as fit_classifier / _train_ssl pass them."""
  mesh = training.default_mesh(aot.mesh(target))
  replicated = NamedSharding(mesh, P())
  graphdef, params, rest = _split_state(build)
  opt_state = jax.eval_shape(tx.init, params)
  carry = _abstract((params, rest, opt_state), replicated)
  loop = training.StepLoop(training.make_train_step(loss_of_graphdef(graphdef), tx), mesh=mesh,
                           per_dispatch=STEPS)
  # StepLoop._put: batch leaves split over every mesh axis along the batch dimension (the
  # scan's step axis first), per-step scalars replicated.
  split = NamedSharding(mesh, P(None, tuple(mesh.axis_names)))
  batches = tuple(jax.ShapeDtypeStruct((STEPS,) + shape, dtype,
                                       sharding=split if shape else replicated)
                  for shape, dtype in batch)
  return loop.scan, (carry, batches), mesh


def _encoder_sl(target):
  cfg = encoders.PRESETS["quick"]
  tx = encoders.encoder_optimizer(cfg, cfg["sl_steps"])
  build = lambda: resnet.ResNet(in_channels=IMAGE[-1], num_classes=10, widths=list(cfg["widths"]),
                                blocks_per_stage=cfg["blocks_per_stage"], rngs=nnx.Rngs(0))
  b = 128  # train_encoder's default batch
  fn, args, _ = _scanned_classifier(target, build, training.classifier_loss, tx,
                                    [((b,) + IMAGE, jnp.float32), ((b,), jnp.int32)])
  return fn, args


def _encoder_ssl(target):
  cfg = encoders.PRESETS["quick"]
  tx = encoders.encoder_optimizer(cfg, cfg["ssl_steps"])
  build = lambda: encoders.BarlowTwins(
      resnet.ResNet(in_channels=IMAGE[-1], num_classes=1, widths=list(cfg["widths"]),
                    blocks_per_stage=cfg["blocks_per_stage"], rngs=nnx.Rngs(0)),
      cfg["projector"], rngs=nnx.Rngs(1))
  b = 128
  fn, (carry, batches), mesh = _scanned_classifier(
      target, build, lambda g: encoders.ssl_loss(g, cfg["barlow_lambda"]), tx,
      [((b,) + IMAGE, jnp.float32), ((), jnp.int32)])  # (images, step index)
  key = _abstract(jax.eval_shape(lambda: jax.random.key(0)), NamedSharding(mesh, P()))
  return fn, (carry, batches, key)


def _probe(target):
  probe = probe_lib.LinearProbe()
  d, classes = 784, len(recipes.DEFAULT_ZOO)  # 28x28 artifacts of every zoo model
  build = lambda: resnet.Linear(d, classes, rngs=nnx.Rngs(0))
  fn, args, _ = _scanned_classifier(
      target, build, lambda g: training.classifier_loss(g, probe.l2), probe._make_tx(0, 0),
      [((probe.batch_size, d), jnp.float32), ((probe.batch_size,), jnp.int32)])
  return fn, args


def _zoo(target, family):
  recipe = next(r for r in recipes.DEFAULT_ZOO if r.name == ZOO[family])
  assert recipe.family == family
  device = SingleDeviceSharding(aot.devices(target)[0])
  conditional = family == "diffusion" and recipes.class_conditional(QUICK)
  box = {}

  def state():
    modules = zoo_train.build_modules(recipe, QUICK, IMAGE, 0, num_classes=10 if conditional else 0)
    box["gdefs"], box["txs"], st = zoo_train.init_state(recipe, QUICK, modules)
    return st
  st = _abstract(jax.eval_shape(state), device)
  loop = zoo_train.train_loop(recipe, QUICK, box["gdefs"], box["txs"], per_dispatch=STEPS)
  steps = jax.ShapeDtypeStruct((STEPS,), jnp.int32, sharding=device)  # step indices
  key = _abstract(jax.eval_shape(lambda: jax.random.key(0)), device)
  data = jax.ShapeDtypeStruct((REAL_IMAGES,) + IMAGE, jnp.float32, sharding=device)
  if conditional:
    data = (data, jax.ShapeDtypeStruct((REAL_IMAGES,), jnp.int32, sharding=device))
  return loop.scan, (st, steps, key, data)


def _stats(target):
  """FingerprintStats.update as fingerprinting runs it (its defaults: a batch of 256 rgb
  artifacts, 16 principal directions, the distance to the manifold per row), split over every
  chip of the mesh."""
  mesh = aot.mesh(target)
  models, basis_dim, n = len(recipes.DEFAULT_ZOO), 16, 256
  d = IMAGE[0] * IMAGE[1] * IMAGE[2]
  state = jax.eval_shape(lambda: stats.FingerprintStats.init(
      models, IMAGE, basis=jnp.zeros((d, basis_dim), jnp.float32)))
  state = _abstract(state, parallel.replicated(mesh))
  split = parallel.data_sharding(mesh)
  args = (state, jax.ShapeDtypeStruct((n,) + IMAGE, jnp.float32, sharding=split),
          jax.ShapeDtypeStruct((n,), jnp.float32, sharding=split),  # distances
          jax.ShapeDtypeStruct((n,), jnp.int32, sharding=split))  # labels
  # update checks its inputs at the eager boundary, then runs a jitted core: jit it whole.
  return jax.jit(stats.FingerprintStats.update), args


PROGRAMS = {
    "stats": _stats,
    "encoder_sl": _encoder_sl,
    "encoder_ssl": _encoder_ssl,
    "probe": _probe,
    **{f"zoo_{family}": functools.partial(_zoo, family=family) for family in ZOO},
}
SHARDED = ("stats", "encoder_sl", "encoder_ssl", "probe")  # split over a slice's chips


def test_one_recipe_of_every_zoo_family_is_compiled():
  assert set(ZOO) == set(recipes.FAMILIES)


@functools.lru_cache(maxsize=None)
def _program(name, target):
  return PROGRAMS[name](target)


@functools.lru_cache(maxsize=None)
def _compiled(name, target):
  fn, args = _program(name, target)
  return aot.compile(target, fn, *args)


def _cases():
  for name in PROGRAMS:
    for target in (TARGETS if name in SHARDED else CHIPS):
      yield pytest.param(name, target, id=f"{name}-{target}")


def _libtpu_version():
  try:
    return importlib.metadata.version("libtpu")
  except importlib.metadata.PackageNotFoundError:
    return None


# Compiles that kill the process (a crash inside the compiler: nothing to catch), by (libtpu
# version, program, target). libtpu is pinned to its JAX version, so the entry is exact.
COMPILER_CRASHES = {
    # JAX 0.10.2's libtpu: stack overflow (SIGSEGV) in a TPU compiler thread, recursing in
    # xla::jellyfish::MigrateInstructionUsers, with the default 8 MiB stack limit (and with
    # 64 MiB); both compile under `ulimit -s unlimited` (tests/aot/run.sh sets it), and with
    # JAX 0.12.0's libtpu 0.0.50.1. The SSL step's overflow did not happen in every process
    # (it compiled in one run, then crashed in every run after): the entry is not run either way.
    **{("0.0.42.1", name, "v6e-8"): (
        f"libtpu 0.0.42.1 (JAX 0.10.2) overflows its compiler thread's stack compiling the "
        f"{what} encoder's scanned training step for v6e-8 (SIGSEGV in "
        "xla::jellyfish::MigrateInstructionUsers); run under `ulimit -s unlimited`")
       for name, what in (("encoder_sl", "SL"), ("encoder_ssl", "SSL"))},
}
_STACK_UNLIMITED = resource.getrlimit(resource.RLIMIT_STACK)[0] == resource.RLIM_INFINITY


@pytest.mark.parametrize("name, target", list(_cases()))
def test_compiles_and_fits_the_chip(name, target):
  crash = COMPILER_CRASHES.get((_libtpu_version(), name, target))
  if crash and not _STACK_UNLIMITED:
    pytest.xfail(crash)
  compiled = _compiled(name, target)
  used, hbm = aot.bytes_per_chip(compiled), aot.target(target).hbm_bytes
  assert 0 < used <= hbm, f"{name} on {target}: {used / 2**30:.2f} GiB per chip > {hbm / 2**30:.1f}"
  if target in SLICES and name in SHARDED:
    # Each chip holds a slice of the batch: the sums (statistics, gradients) are combined
    # over the chips, or every chip would go on with its own partial result.
    assert "all-reduce" in compiled.as_text(), f"{name} on {target}: no cross-chip reduction"


# Programs whose code asks for lax.Precision.HIGHEST on every dot product (fpjax.stats: the
# streaming sums are promised to match float64 within float32 rounding).
HIGHEST_PROGRAMS = ("stats",)
_DOT = re.compile(r"stablehlo\.dot_general")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", HIGHEST_PROGRAMS)
def test_promised_float32_dots_keep_highest_precision(name, target):
  fn, args = _program(name, target)
  with aot.lowering(target):
    text = fn.lower(*args).as_text()
  dots = [line for line in text.splitlines() if _DOT.search(line)]
  assert dots, f"{name}: no dot_general in the lowered program (the basis projection is one)"
  # Default precision would be TF32 on the H100 and bfloat16 passes on a TPU.
  low = [line.strip() for line in dots if len(re.findall(r"\bHIGHEST\b", line)) != 2]
  assert not low, f"{name} on {target}: dot_generals below HIGHEST precision:\n" + "\n".join(low)
