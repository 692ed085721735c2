"""How long does building the reduced search take, against the full-space build?

Issue 9's target: the reduced-search build at most 1.5x the full-space build. In one process,
alternating the two (full first on even repeats, reduced first on odd ones), on the digits-like
banks of benchmarks/knn.py, it times:

  build   the constructor (`Manifold.from_embeddings`): the full-space build places the bank;
          the reduced one also runs the randomized SVD and reduces the bank (fpjax.knn.reduced).
  ready   build + compiling the search kernel of the first call (default query batch), which
          both searches need before their first answer: the like-for-like comparison.
  cold    every compilation cache emptied before each build (`jax.clear_caches()`); warm: not.
          (A persistent compilation cache would hide the cold cost: it is not used.)

Wall and CPU seconds (this process), medians over --builds, the ratio of the medians, and the
load average before and after: on a shared machine other processes slow both kinds alike, so
the ratio is the figure to read. It also times build + a first projection of --first_call_queries rows,
and, with --search_queries, the search itself once built (medians of 3 after a first call): the
reduced search's share of queries searched again in the full space (those its bound could not
certify), against the full-space search.

  python benchmarks/reduced_build.py
  python benchmarks/reduced_build.py --banks=784:50000 --builds=5 --first_call_queries=0
  python benchmarks/reduced_build.py --first_call_queries=0 --search_queries=5000
"""
import json
import os
import platform
import resource
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

import fpjax
from fpjax.knn import reduced as reduced_lib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from knn import digits_like  # pylint: disable=g-import-not-at-top,wrong-import-position

# (knn.py, imported for its data, defines --sizes and --repeats: these names differ.)
_BANKS = flags.DEFINE_list("banks", ["784:50000", "3072:50000"], "dim:bank pairs")
_BUILDS = flags.DEFINE_integer("builds", 5, "timed builds per kind and mode (medians)")
_QUERIES = flags.DEFINE_integer("first_call_queries", 5000,
                                "queries of the first-call check (0: skip it)")
_SEARCH = flags.DEFINE_integer("search_queries", 0,
                               "queries of the search-speed check once built (0: skip it)")


def _cpu():
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def _clock():
  return time.perf_counter(), _cpu()


def _since(start):
  return time.perf_counter() - start[0], _cpu() - start[1]


def build_once(bank, reduced, cold):
  """(build, ready) as (wall, cpu) pairs, and the manifold."""
  if cold:
    jax.clear_caches()
    reduced_lib.reduce_fn.cache_clear()
  start = _clock()
  m = fpjax.Manifold.from_embeddings(bank, search_dim="auto" if reduced else None)
  jax.block_until_ready(m.mean)
  build = _since(start)
  assert (m.basis is not None) == reduced, "digits should choose the reduced search"
  # pylint: disable=protected-access
  sharding = NamedSharding(m.mesh, P(fpjax.parallel.DATA, None))
  q = jax.ShapeDtypeStruct((m._batch(None), m.dim), jnp.float32, sharding=sharding)
  args = (q, m.bank, m.mean, np.int32(0), np.int32(m.size))
  if reduced:
    args += (m.placement.search_rows + m._reduced,)
  m._search_fn(jnp.bfloat16, reduced, k=1).lower(*args).compile()
  return build, _since(start), m


def search_speed(bank, queries):
  """Median search wall / CPU s (3 runs after a first call) of the full-space and the reduced
  search, alternating, and the share of queries the reduced search searched again."""
  ms = {kind: fpjax.Manifold.from_embeddings(bank, search_dim="auto" if kind == "reduced" else None)
        for kind in ("full", "reduced")}
  times = {kind: [] for kind in ms}
  answers = {}
  for i in range(4):
    for kind in (("full", "reduced") if i % 2 == 0 else ("reduced", "full")):
      m = ms[kind]
      m.stats = dict.fromkeys(m.stats, 0)
      start = _clock()
      _, index = m.search(queries, 1)
      answers[kind] = np.asarray(index)
      if i:  # the first call compiles the fallback stages
        times[kind].append(_since(start))
  out = {}
  for kind, v in times.items():
    out[f"{kind}_s"], out[f"{kind}_cpu_s"] = (float(a) for a in np.median(np.asarray(v), axis=0))
  st = ms["reduced"].stats
  out.update(queries=len(queries), researched_pct=100.0 * st["researched"] / st["queries"],
             same_answers=bool(np.array_equal(answers["full"], answers["reduced"])))
  return out


def bench_size(dim, n_bank, repeats, n_queries, n_search):
  bank = digits_like(n_bank, dim, seed=0)
  out = dict(dim=dim, bank=n_bank, load_before=os.getloadavg())
  build_once(bank, True, cold=False)  # imports and first-use costs outside the timings
  for mode in ("cold", "warm"):
    times = {kind: {"build": [], "ready": []} for kind in ("full", "reduced")}
    for i in range(repeats):
      for kind in (("full", "reduced") if i % 2 == 0 else ("reduced", "full")):
        build, ready, m = build_once(bank, kind == "reduced", cold=mode == "cold")
        times[kind]["build"].append(build)
        times[kind]["ready"].append(ready)
        if kind == "reduced":
          out["search_dim"] = int(m.basis.shape[1])
          out["orth_err"] = float(m.reduce_consts.orth_err)
    row = {}
    for what in ("build", "ready"):
      for kind in ("full", "reduced"):
        wall, cpu = np.median(np.asarray(times[kind][what]), axis=0)
        row[f"{kind}_{what}_s"], row[f"{kind}_{what}_cpu_s"] = float(wall), float(cpu)
      row[f"{what}_ratio"] = row[f"reduced_{what}_s"] / row[f"full_{what}_s"]
    out[mode] = row
  if n_queries:
    queries = digits_like(n_queries, dim, seed=1)
    first = {"full": [], "reduced": []}
    for i in range(max(1, repeats // 2)):
      for kind in (("full", "reduced") if i % 2 == 0 else ("reduced", "full")):
        start = _clock()
        m = fpjax.Manifold.from_embeddings(bank, search_dim="auto" if kind == "reduced" else None)
        m.project_embedded(queries).artifact.block_until_ready()
        first[kind].append(_since(start))
    out["first_call"] = {f"{kind}_s": float(np.median([w for w, _ in v]))
                         for kind, v in first.items()}
    out["first_call"]["queries"] = n_queries
  if n_search:
    out["search"] = search_speed(bank, digits_like(n_search, dim, seed=2))
  out["load_after"] = os.getloadavg()
  return out


def main(argv):
  del argv
  machine = dict(device=str(jax.devices()[0].device_kind), backend=jax.default_backend(),
                 devices=jax.device_count(), cpus=os.cpu_count(),
                 cpu=platform.processor() or platform.machine(), jax=jax.__version__)
  print(f"machine: {machine}")
  results = []
  for spec in _BANKS.value:
    dim, n_bank = (int(v) for v in spec.split(":"))
    results.append(bench_size(dim, n_bank, _BUILDS.value, _QUERIES.value, _SEARCH.value))
    print_size(results[-1], _BUILDS.value)
  print(json.dumps(dict(benchmark="reduced_build", machine=machine, results=results)))


def print_size(s, builds):
  """The table of one bench_size result (benchmarks/accelerator.py prints it too)."""
  print(f"\nbank {s['bank']} x {s['dim']} (digits-like), reduced search r = {s['search_dim']}, "
        f"‖VᵀV − I‖ ≤ {s['orth_err']:.1e}; load {s['load_before'][0]:.1f} -> "
        f"{s['load_after'][0]:.1f}; medians of {builds}, wall s (CPU s)")
  print(f"{'':<6}{'full build':>16}{'reduced build':>16}{'ratio':>7}"
        f"{'full ready':>16}{'reduced ready':>16}{'ratio':>7}")
  for mode in ("cold", "warm"):
    r = s[mode]
    cell = lambda k: f"{r[k + '_s']:.2f} ({r[k + '_cpu_s']:.2f})"  # pylint: disable=cell-var-from-loop
    print(f"{mode:<6}{cell('full_build'):>16}{cell('reduced_build'):>16}"
          f"{r['build_ratio']:>6.2f}x{cell('full_ready'):>16}{cell('reduced_ready'):>16}"
          f"{r['ready_ratio']:>6.2f}x")
  if "first_call" in s:
    f = s["first_call"]
    print(f"build + first projection of {f['queries']} queries (warm): full-space "
          f"{f['full_s']:.2f} s, reduced {f['reduced_s']:.2f} s")
  if "search" in s:
    f = s["search"]
    print(f"search of {f['queries']} queries once built: full-space {f['full_s']:.2f} s "
          f"({f['full_cpu_s']:.2f}), reduced {f['reduced_s']:.2f} s ({f['reduced_cpu_s']:.2f}); "
          f"{f['researched_pct']:.2f} % searched again; same answers: {f['same_answers']}")


if __name__ == "__main__":
  app.run(main)
