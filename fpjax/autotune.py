"""Choosing the k-NN kernel's configuration by measurement, once per device kind and shape.

The first time `Manifold` searches a (device kind, bank slice shape, search dim, candidate
groups, dtype, stage, query batch) it times a few candidate configurations (kernel variant
'xla' | 'pallas', bank tile, query block), keeps the fastest, and caches the choice as JSON
in $FPJAX_CACHE_DIR/autotune.json (default ~/.cache/fpjax/autotune.json), keyed by device kind.
A candidate that fails to lower or compile is skipped with one logged warning; the XLA scan
is always a candidate, so tuning never fails.

No choice changes an answer in 'exact' precision: every configuration returns the same
certified candidates or hands the query to the same fallback stages, whose answers are exact
(tests/test_pallas_search.py checks identical indices, distances and certificates).

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

  variant: 'xla' (lax.scan over bank tiles) or 'pallas' (fpjax.pallas_search, fused).
  tile: bank rows per scan step ('xla') or per grid step ('pallas'); divides the slice.
  block_q: queries per grid step ('pallas'); 0 for 'xla'.
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
  root = os.environ.get("FPJAX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                           "fpjax")
  return os.path.join(root, "autotune.json")


def _divides(rows: int, tile: int) -> bool:
  return tile >= 8 and tile % 8 == 0 and rows % tile == 0


def candidates(backend: str, rows: int, tile: int, n_queries: int) -> list[Config]:
  """Configurations worth timing for a bank slice of `rows` rows (a multiple of `tile`).

  XLA scans at tile/2, tile, 2·tile; on GPU and TPU also the fused Pallas kernel with bank
  blocks of 1,024 and 2,048 rows (128 and 256 groups: powers of two, as Triton needs) and
  64 or 128 queries per block.
  """
  out = [Config("xla", t) for t in (tile, tile // 2, 2 * tile) if _divides(rows, t)]
  if backend in ("gpu", "cuda", "rocm", "tpu"):
    dim_block = 128 if backend != "tpu" else None  # Mosaic TPU takes the full feature dim
    for block_b in (2048, 1024):
      if not _divides(rows, block_b):
        continue
      for block_q in ((128, 64) if backend != "tpu" else (256, 128)):
        if block_q <= max(n_queries, 16):
          out.append(Config("pallas", block_b, block_q, dim_block))
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
    """Best of `repeats` timed runs after one that compiles and warms up."""
    run(config)
    times = []
    for _ in range(repeats):
      t = time.perf_counter()
      run(config)
      times.append(time.perf_counter() - t)
    return min(times)

  def choose(self, device_kind: str, key: dict, configs: Sequence[Config],
             run: Callable[[Config], object], repeats: int = 2) -> Config:
    """The fastest config for `key` on `device_kind` (cached), timing `run(config)` if new.

    `run` must block until its results are ready. configs[0] is the fallback (XLA) and is
    always kept if every other candidate fails.
    """
    cache = self._load().setdefault(device_kind, {})
    name = json.dumps(key, sort_keys=True)
    if name in cache:
      cached = Config(**cache[name])
      if cached in configs:
        return cached
    best, best_t = configs[0], float("inf")
    for config in configs:
      try:
        t = self._time(config, run, repeats)
      except Exception as e:  # pylint: disable=broad-except
        # A variant this device cannot lower or compile: skipped, never a crash.
        self._warn((device_kind, config), f"fpjax autotune: skipping {config} on "
                   f"{device_kind}: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
        continue
      if t < best_t:
        best, best_t = config, t
    cache[name] = dataclasses.asdict(best)
    self._save()
    return best
