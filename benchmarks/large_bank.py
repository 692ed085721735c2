r"""Does memory stay bounded as the bank grows when it streams from host RAM?

For each bank size, one fresh subprocess builds `Manifold.from_embeddings(bank,
device_bank_bytes=...)` ('streamed': the bank stays in host RAM and goes to the devices one
chunk of at most device_bank_bytes per device at a time) or with the bank resident on the
devices ('resident'), projects queries, and reports its peak RSS (resource.getrusage).

Columns: `init MB` = peak RSS growth while Manifold() is built (on top of the caller's bank),
`project MB` = further growth during project() (compilation + kernel working set).

What is bounded, honestly: the host copy of the bank is itself in RAM (rows x dim x 4 bytes)
and is reported as `bank_MB`. On a CPU backend the "devices" are host RAM too, so a resident
bank costs a second copy and shows up in RSS; streamed, what comes on top of the host bank is
the kernel's working set: one chunk per device plus queries x tile distance blocks, which does
not grow with the bank. On GPU/TPU the same split holds for device memory (device_bank_bytes
caps the bank slice a device holds) while host RAM holds the bank once.

  python benchmarks/large_bank.py [--rows=16384,32768,65536,131072 --dim=784]

Prints a table and one JSON line.
"""
import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np
rows, dim, queries, budget = (int(a) for a in sys.argv[1:5])
import jax
from fpjax.manifold import Manifold
jax.block_until_ready(jax.numpy.zeros(8) + 1)  # JAX runtime up before the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rng = np.random.default_rng(0)
bank = np.empty((rows, dim), np.float32)
for s in range(0, rows, 8192):  # no float64 temporaries
  bank[s:s + 8192] = rng.standard_normal((min(8192, rows - s), dim), dtype=np.float32)
after_bank = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
q = rng.standard_normal((queries, dim), dtype=np.float32)
t = time.perf_counter()
m = Manifold.from_embeddings(bank, precision="fast", device_bank_bytes=budget or None)
after_init = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
p = m.project_embedded(q, batch_size=queries)
np.asarray(p.index)
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base_kb": base, "after_bank_kb": after_bank, "after_init_kb": after_init,
                  "peak_kb": peak,
                  "streamed": m.bank is None, "chunk_rows": m.chunk_rows, "tile": m.tile,
                  "compiled_kernels": len(m._fns),
                  "seconds": seconds}))
"""


def run(rows, dim, queries, budget):
  env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
  out = subprocess.run([sys.executable, "-c", CHILD, str(rows), str(dim), str(queries),
                        str(budget)], capture_output=True, text=True, env=env, timeout=900)
  if out.returncode:
    raise RuntimeError(out.stderr[-3000:])
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--rows", default="16384,32768,65536,131072")
  parser.add_argument("--dim", type=int, default=784)
  parser.add_argument("--queries", type=int, default=256)
  parser.add_argument("--device_bank_bytes", type=int, default=8 << 20)
  args = parser.parse_args()
  results = []
  print(f"{'rows':>8s} {'mode':>9s} {'bank MB':>8s} {'peak RSS MB':>12s} {'RSS - bank MB':>14s} "
        f"{'init MB':>8s} {'project MB':>10s} {'chunk rows':>10s} {'kernels':>8s} {'seconds':>8s}")
  for rows in (int(r) for r in args.rows.split(",")):
    for mode, budget in (("resident", 0), ("streamed", args.device_bank_bytes)):
      r = run(rows, args.dim, args.queries, budget)
      bank_mb = rows * args.dim * 4 / 2 ** 20
      peak_mb = (r["peak_kb"] - r["base_kb"]) / 1024  # above the JAX runtime's own footprint
      init_mb = (r["after_init_kb"] - r["after_bank_kb"]) / 1024  # Manifold() on top of the bank
      project_mb = (r["peak_kb"] - r["after_init_kb"]) / 1024     # project() on top of that
      r.update(rows=rows, mode=mode, bank_mb=bank_mb, peak_mb=peak_mb,
               working_set_mb=peak_mb - bank_mb, init_mb=init_mb, project_mb=project_mb)
      results.append(r)
      print(f"{rows:8d} {mode:>9s} {bank_mb:8.0f} {peak_mb:12.0f} {peak_mb - bank_mb:14.0f} "
            f"{init_mb:8.0f} {project_mb:10.0f} {r['chunk_rows']:10d} {r['compiled_kernels']:8d} {r['seconds']:8.2f}")
  print(json.dumps({"benchmark": "large_bank", "dim": args.dim, "queries": args.queries,
                    "device_bank_bytes": args.device_bank_bytes, "cpu_count": os.cpu_count(),
                    "load_average": os.getloadavg(), "results": results}))


if __name__ == "__main__":
  main()
