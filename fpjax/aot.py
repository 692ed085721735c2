"""Ahead-of-time compilation for accelerators this machine does not have.

JAX compiles for a GPU or a TPU without one attached ("deviceless"): a topology from the
target's compiler plugin (libtpu for TPU, the CUDA PJRT plugin for NVIDIA), programs lowered on
`jax.ShapeDtypeStruct`s sharded over its devices, then `.compile()`. The result is the real
program: its HLO (which kernels it calls), `memory_analysis()` (bytes per chip) and, on TPU,
`cost_analysis()`. A kernel that does not fit (VMEM, shared memory) fails here as it would on
the chip. tests/aot and benchmarks/aot.py use this module; a user can check a program for a
pod slice before renting one:

  JAX_PLATFORMS=cpu TPU_SKIP_MDS_QUERY=1 python -c '
  from fpjax import aot; print(aot.mesh("v5e-8"))'

Needs libtpu (TPU targets) or jax-cuda12-pjrt + jax-cuda12-plugin installed without their
dependencies (NVIDIA targets), both at the installed JAX's version, and `JAX_PLATFORMS=cpu` so
that JAX does not try to open them as devices (tests/aot/run.sh installs them in an
environment of their own). NVIDIA targets also need `ptxas` on PATH.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re

# Compile-only use of libtpu: several processes (test workers, a benchmark beside the tests)
# may load it at once; its lock file is for processes that own TPU chips.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

from fpjax import parallel

# GPU target descriptions in XLA's GpuTargetConfigProto text format: the device facts the
# compiler reads (SM count, shared memory per block, compute capability, memory), taken from
# NVIDIA's published specifications of the SXM parts. The cuDNN version only has to be one the
# plugin accepts; no cuDNN call is made by fpjax's programs.
_GPU_CONFIG = """
gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: {smem_per_core}
  threads_per_core_limit: 2048
  core_count: {sms}
  fpus_per_core: {fpus}
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {bandwidth}
  l2_cache_size: {l2}
  clock_rate_ghz: {clock}
  device_memory_size: {memory}
  shared_memory_per_block_optin: {smem_optin}
  cuda_compute_capability {{
    major: {cc_major}
    feature_extension: {feature}
  }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
  dnn_version: "9.10.0"
}}
platform_name: "CUDA"
dnn_version_info {{
  major: 9
  minor: 10
  patch: 0
}}
device_description_str: "{name}"
"""


@dataclasses.dataclass(frozen=True)
class Target:
  """A chip (or slice) to compile for.

  platform: 'cuda' or 'tpu'. topology: libtpu's topology name (TPU) or None (one GPU).
  hbm_bytes: memory per chip, what a program's memory_analysis() must fit in.
  peak_bf16_flops: the chip's dense bf16 matmul peak per chip (vendor figures), for
  rooflines. bandwidth: HBM bytes/s per chip.
  """
  name: str
  platform: str
  hbm_bytes: int
  peak_bf16_flops: float
  bandwidth: float
  topology: str | None = None
  chips_per_host_bounds: tuple[int, int, int] | None = None
  gpu_config: str | None = None
  device_kind: str | None = None
  num_cores: int | None = None


_GIB = 1 << 30
TARGETS = {
    "h100": Target("h100", "cuda", 80 * 10 ** 9, 989e12, 3.35e12,
                   gpu_config=_GPU_CONFIG.format(
                       smem_per_core=233472, sms=132, fpus=128, bandwidth=3352320000000,
                       l2=52428800, clock=1.98, memory=84942979072, smem_optin=232448,
                       cc_major=9, feature="ACCELERATED_FEATURES",
                       name="NVIDIA H100 80GB HBM3"),
                   device_kind="NVIDIA H100 80GB HBM3", num_cores=132),
    "a100": Target("a100", "cuda", 80 * 10 ** 9, 312e12, 2.04e12,
                   gpu_config=_GPU_CONFIG.format(
                       smem_per_core=167936, sms=108, fpus=64, bandwidth=2039040000000,
                       l2=41943040, clock=1.41, memory=85100068864, smem_optin=166912,
                       cc_major=8, feature="NONE", name="NVIDIA A100-SXM4-80GB"),
                   device_kind="NVIDIA A100-SXM4-80GB", num_cores=108),
    "v5e-1": Target("v5e-1", "tpu", 16 * _GIB, 197e12, 819e9, "v5e:1x1", (1, 1, 1)),
    "v5e-8": Target("v5e-8", "tpu", 16 * _GIB, 197e12, 819e9, "v5e:2x4"),
    "v6e-1": Target("v6e-1", "tpu", 32 * _GIB, 918e12, 1640e9, "v6e:1x1", (1, 1, 1)),
    "v6e-8": Target("v6e-8", "tpu", 32 * _GIB, 918e12, 1640e9, "v6e:2x4"),
}


def target(name: str) -> Target:
  if name in TARGETS:
    return TARGETS[name]
  if re.fullmatch(r"v\d+[a-z]*:\d+(x\d+)*", name):  # any libtpu topology, e.g. 'v5p:4x4x4'
    chip = {"v5e": TARGETS["v5e-1"], "v6e": TARGETS["v6e-1"]}.get(name.split(":")[0])
    return Target(name, "tpu", chip.hbm_bytes if chip else 0,
                  chip.peak_bf16_flops if chip else 0.0, chip.bandwidth if chip else 0.0, name)
  raise ValueError(f"unknown compile target {name!r}; known: {sorted(TARGETS)} or a libtpu "
                   "topology such as 'v5e:4x4'")


@functools.lru_cache(maxsize=None)
def devices(name: str) -> tuple:
  """The target's (abstract) devices, from its compiler plugin."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  t = target(name)
  if t.platform == "cuda":
    topo = topologies.get_topology_desc(platform="cuda", topology_name=t.name,
                                        target_config=t.gpu_config, topology="1x1x1")
  else:
    kwargs = {}
    if t.chips_per_host_bounds is not None:
      kwargs["chips_per_host_bounds"] = t.chips_per_host_bounds
    topo = topologies.get_topology_desc(platform="tpu", topology_name=t.topology, **kwargs)
  return tuple(topo.devices)


def mesh(name: str, data: int | None = None, bank: int | None = None) -> jax.sharding.Mesh:
  """fpjax's ('data', 'bank') mesh over the target's devices (default: every chip a bank
  shard, as `parallel.make_mesh`)."""
  return parallel.make_mesh(data, bank, devices=list(devices(name)))


@contextlib.contextmanager
def lowering(name: str, mesh: jax.sharding.Mesh | None = None):
  """Where the target's programs must be lowered: from JAX 0.11 on, Mosaic GPU kernels lower
  without a GPU only under an abstract mesh that names the device; it must have the axes of
  the program's own mesh (`mesh`, if it has one). Elsewhere a no-op."""
  t = target(name)
  if t.platform != "cuda" or not hasattr(jax.sharding, "AbstractDevice"):
    yield
    return
  # Looked up here: AbstractDevice exists only from JAX 0.11 on.
  AbstractDevice, AbstractMesh, AxisType = (  # pylint: disable=invalid-name
      jax.sharding.AbstractDevice, jax.sharding.AbstractMesh, jax.sharding.AxisType)
  if mesh is not None:  # a mesh over the target's devices knows them already
    abstract = mesh.abstract_mesh
  else:
    abstract = AbstractMesh((1,), ("aot",), axis_types=(AxisType.Auto,),
                            abstract_device=AbstractDevice(device_kind=t.device_kind,
                                                           num_cores=t.num_cores,
                                                           platform="cuda"))
  with jax.sharding.use_abstract_mesh(abstract):
    yield


def _mesh_of(args):
  for leaf in jax.tree.leaves(args):
    mesh = getattr(getattr(leaf, "sharding", None), "mesh", None)
    if isinstance(mesh, jax.sharding.Mesh):
      return mesh
  return None


def lower(name: str, fn, *args, **kwargs):
  """`fn` (a jitted function) lowered for target `name` on `args` (ShapeDtypeStructs sharded
  over the target's devices): a `jax.stages.Lowered` (`.as_text()` is its StableHLO)."""
  with lowering(name, _mesh_of(args)):
    return fn.lower(*args, **kwargs)


def compile(name: str, fn, *args, **kwargs):  # pylint: disable=redefined-builtin
  """`fn` lowered (see `lower`) and compiled for target `name`: a `jax.stages.Compiled`."""
  with lowering(name, _mesh_of(args)):  # Mosaic GPU kernels compile under it too
    return lower(name, fn, *args, **kwargs).compile()


def custom_calls(compiled) -> set[str]:
  """The custom-call targets in a compiled program (e.g. 'tpu_custom_call' for a Mosaic TPU
  kernel, '__gpu$xla.gpu.triton' for a Triton kernel)."""
  return set(re.findall(r'custom_call_target="([^"]+)"', compiled.as_text()))


def bytes_per_chip(compiled) -> int:
  """Peak device memory of one chip for a compiled program: arguments + outputs + temporaries
  (aliased buffers counted once)."""
  m = compiled.memory_analysis()
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)
