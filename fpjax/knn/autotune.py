"""Choosing the k-NN kernel's configuration by measurement, once per device kind and shape.

The first time `Manifold` searches a (device kind, bank slice shape, search dim, candidate
groups, dtype, stage, query batch) it checks a few candidate configurations (kernel variant
'xla' | 'pallas', bank tile, query block), times those that pass, keeps the fastest, and
caches the choice as JSON in $FPJAX_CACHE_DIR/autotune.json (default
~/.cache/fpjax/autotune.json), keyed by device kind. Before anything is timed, each candidate:
1. is compiled, without running (`jax.jit(...).lower(...).compile()`); one that does not lower
   or compile for this device (shared memory, VMEM, an op the back end lacks) is dropped;
2. if it is a Pallas kernel, runs once on the tuning batch and its answers are compared with
   the XLA scan's: the certificate trusts the kernel's group minima, so a kernel that computed
   them wrong could certify wrong answers. Any certified answer that differs from the XLA
   scan's drops it.
Every dropped candidate is recorded with its reason beside the choice in the cache file (and
logged once). The XLA scan is always the first candidate, so tuning never fails.

No choice changes an answer in 'exact' precision: every configuration returns the same
certified candidates or hands the query to the same fallback stages, whose answers are exact
(tests/test_knn_pallas_fused.py checks identical indices, distances and certificates).

Switch: on by default on GPU and TPU, off on the CPU, where XLA's scan is the only fast
variant (Pallas runs there only in interpret mode, for tests) and the default tile was
already chosen by a sweep (benchmarks/README.md). FPJAX_AUTOTUNE=0 turns it off everywhere,
FPJAX_AUTOTUNE=1 on everywhere (on the CPU it then times XLA tiles only); the `autotune`
argument of `Manifold` (True / False) overrides the backend default, and FPJAX_AUTOTUNE=0
overrides both.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from typing import Callable, Sequence

from absl import logging
import jax


@dataclasses.dataclass(frozen=True)
class Config:
  """One configuration of the candidate search.

  variant: 'xla' (lax.scan over bank tiles), 'pallas' (fpjax.knn.pallas_fused, fused) or
    'mosaic_gpu' (the XLA scan with its group minima from fpjax.knn.mosaic_gpu: Hopper).
  tile: bank rows per scan step ('xla', 'mosaic_gpu') or per grid step ('pallas'); divides
    the slice.
  block_q: queries per grid step ('pallas', 'mosaic_gpu'); 0 for 'xla'.
  dim_block: 'pallas' on GPU: feature slice per dot (Triton needs powers of two); None: one dot.
  interpret: 'pallas' in interpret mode (CPU tests only).
  """
  variant: str = "xla"
  tile: int = 2048
  block_q: int = 0
  dim_block: int | None = None
  interpret: bool = False


def enabled(argument: bool | None = None) -> bool:
  """Whether to tune: FPJAX_AUTOTUNE=0 wins, then `argument`, then FPJAX_AUTOTUNE=1, then backend."""
  env = os.environ.get("FPJAX_AUTOTUNE", "").strip()
  if env == "0":
    return False
  if argument is not None:
    return bool(argument)
  if env:
    return True
  return jax.default_backend() != "cpu"


def cache_path() -> str:
  """The autotuner's cache file: $FPJAX_CACHE_DIR/autotune.json (default ~/.cache/fpjax)."""
  root = os.environ.get("FPJAX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                           "fpjax")
  return os.path.join(root, "autotune.json")


def _divides(rows: int, tile: int) -> bool:
  return tile >= 8 and tile % 8 == 0 and rows % tile == 0


# The fused kernel's blocks per platform: (bank rows per block, queries per block, feature
# slice). NVIDIA (Triton): bank blocks of 512 and 1,024 rows (64 and 128 groups: powers of two,
# as Triton needs), 64 or 128 queries, 128 features per dot, so shared memory does not grow
# with the dimension; 2,048-row blocks need 245-295 KB of shared memory, over an H100's 227 KB.
# TPU (Mosaic TPU): 512 to 2,048 rows, 128 or 256 queries, the full dimension in one dot, so
# the blocks must fit VMEM (TPU_VMEM_BLOCK_BYTES). tests/aot compiles every candidate for an
# H100, an A100, a v5e and a v6e.
PALLAS_BLOCKS = {
    "gpu": [(1024, 128, 128), (1024, 64, 128), (512, 64, 128)],
    "tpu": [(2048, 256, None), (2048, 128, None), (1024, 256, None), (1024, 128, None),
            (512, 256, None), (512, 128, None)],
}
# Double-buffered input blocks of the TPU kernel (queries, bank, norms) stay under this many
# bytes: Mosaic's default scoped VMEM is 16 MiB on v5e (32 MiB on v6e), and the dot results
# and the candidate merge need the rest. At D = 3,072 (compiled for v5e): 2,048 x 256 blocks
# asked for 27.0 MiB, 1,024 x 256 for 16.6 MiB (inputs 15.0), 1,024 x 128 compiled (13.5).
TPU_VMEM_BLOCK_BYTES = 14 << 20
# Hopper (compute capability >= 9): the Mosaic GPU group-minima kernel
# (fpjax.knn.mosaic_gpu) inside the XLA scan, at bank tiles of these many rows (a tile is
# one kernel launch: (queries / 64) x (tile / 1,024) thread blocks on 132 SMs).
MOSAIC_GPU_TILES = (16384, 65536)


def _is_hopper(compute_capability) -> bool:
  return bool(compute_capability) and float(compute_capability) >= 9.0


def slice_unit(device, slice_rows: int, tile: int) -> int:
  """The multiple of rows a resident bank slice is padded to: the bank tile, or on Hopper, for
  slices of at least 128 tiles, the Mosaic GPU kernel's smaller tile, so that it divides the
  slice and the kernel is a candidate (padding rows are masked, never found; their extra work
  is at most MOSAIC_GPU_TILES[0] − tile rows: under 6 % of such a slice, 1.6 % of 1M rows)."""
  if (device.platform == "gpu" and _is_hopper(getattr(device, "compute_capability", None))
      and slice_rows >= 128 * tile and MOSAIC_GPU_TILES[0] % tile == 0):
    return MOSAIC_GPU_TILES[0]
  return tile


def _tpu_blocks_fit(block_b, block_q, dim, itemsize=2):
  return 2 * (block_q * dim * itemsize + block_b * (dim * itemsize + 4)) <= TPU_VMEM_BLOCK_BYTES


def candidates(backend: str, rows: int, tile: int, n_queries: int, dim: int = 784,
               compute_capability: str | None = None) -> list[Config]:
  """Configurations worth checking and timing for a bank slice of `rows` rows (a multiple of
  `tile`) searched in `dim` dimensions: the XLA scan at tile, tile/2, 2·tile (the first is the
  default and the reference); on GPU ('gpu' or 'cuda') and TPU the fused Pallas kernel at
  PALLAS_BLOCKS; on Hopper or newer (`compute_capability` '9.0' and up) also the XLA scan with
  the Mosaic GPU group-minima kernel at MOSAIC_GPU_TILES.
  """
  out = [Config("xla", t) for t in (tile, tile // 2, 2 * tile) if _divides(rows, t)]
  platform = {"cuda": "gpu"}.get(backend, backend)
  for block_b, block_q, dim_block in PALLAS_BLOCKS.get(platform, ()):
    if platform == "tpu" and not _tpu_blocks_fit(block_b, block_q, dim):
      continue
    if _divides(rows, block_b) and block_q <= max(n_queries, 16):
      out.append(Config("pallas", block_b, block_q, dim_block))
  if platform == "gpu" and _is_hopper(compute_capability):
    out += [Config("mosaic_gpu", t, 64) for t in MOSAIC_GPU_TILES if _divides(rows, t)]
  return out


class Tuner:
  """Times candidates once per key and remembers the winner on disk."""

  def __init__(self, path: str | None = None):
    self.path = path or cache_path()
    self._cache = None
    self._warned = set()

  def _load(self) -> dict:
    if self._cache is None:
      try:
        with open(self.path) as f:
          self._cache = json.load(f)
      except (OSError, ValueError):  # no cache yet, or an unreadable one: start afresh
        self._cache = {}
    return self._cache

  def _save(self) -> None:
    try:
      os.makedirs(os.path.dirname(self.path), exist_ok=True)
      # Merge with what other processes wrote since we read the file: keep their choices too.
      mine, self._cache = self._cache, None
      for kind, entries in mine.items():
        self._load().setdefault(kind, {}).update(entries)
      fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.path), suffix=".tmp")
      with os.fdopen(fd, "w") as f:
        json.dump(self._cache, f, indent=1, sort_keys=True)
      os.replace(tmp, self.path)  # atomic: a concurrent reader sees the old or the new file
    except OSError as e:  # a read-only home: tuning still works, it is just not remembered
      self._warn(("save", self.path), f"fpjax autotune: cannot write {self.path}: {e}")

  def _warn(self, key, message):
    if key not in self._warned:
      self._warned.add(key)
      logging.warning(message)

  @staticmethod
  def _time(config: Config, run: Callable[[Config], object], repeats: int) -> float:
    """Best of `repeats` timed runs after one that warms up."""
    run(config)
    times = []
    for _ in range(repeats):
      t = time.perf_counter()
      run(config)
      times.append(time.perf_counter() - t)
    return min(times)

  def dropped(self, device_kind: str, key: dict) -> dict[str, str]:
    """The candidates dropped for `key` on `device_kind`, with the reason: {config: reason}."""
    entry = self._load().get(device_kind, {}).get(json.dumps(key, sort_keys=True), {})
    return dict(entry.get("dropped", {})) if isinstance(entry, dict) else {}

  def _drop(self, dropped, device_kind, config, reason):
    dropped[repr(config)] = reason
    self._warn((device_kind, config), f"fpjax autotune: dropping {config} on {device_kind}: "
               f"{reason}")

  def choose(self, device_kind: str, key: dict, configs: Sequence[Config],
             run: Callable[[Config], object], compile_only: Callable[[Config], object],
             agree: Callable[[object, object], str | None], repeats: int = 2) -> Config:
    """The fastest config for `key` on `device_kind` (cached), checked and timed if new.

    compile_only(config) lowers and compiles without running (raises if it cannot);
    run(config) runs it on the tuning batch and returns host results (blocking);
    agree(reference, results) returns None when a Pallas candidate's results may be trusted
    (reference: configs[0]'s), else why not. configs[0] (the XLA scan) is the fallback and
    is always kept.
    """
    cache = self._load().setdefault(device_kind, {})
    name = json.dumps(key, sort_keys=True)
    entry = cache.get(name)
    if isinstance(entry, dict) and "choice" in entry:  # (older caches: re-tuned)
      cached = Config(**entry["choice"])
      if cached in configs:
        return cached
    dropped, usable = {}, []
    for config in configs:
      try:
        compile_only(config)
        usable.append(config)
      except Exception as e:  # pylint: disable=broad-except
        if config == configs[0]:
          raise  # the XLA scan must compile: a real error, not a tuning choice
        self._drop(dropped, device_kind, config, f"does not compile: {type(e).__name__}: "
                   f"{str(e).splitlines()[0][:300] if str(e) else ''}")
    reference = run(configs[0])
    checked = [configs[0]]
    for config in usable[1:]:
      if config.variant != "xla":  # a kernel of ours: its answers are checked first
        why = agree(reference, run(config))
        if why is not None:
          self._drop(dropped, device_kind, config, f"disagrees with the XLA scan: {why}")
          continue
      checked.append(config)
    best, best_t = configs[0], float("inf")
    for config in checked:
      t = self._time(config, run, repeats)
      if t < best_t:
        best, best_t = config, t
    cache[name] = {"choice": dataclasses.asdict(best), "dropped": dropped}
    self._save()
    return best
