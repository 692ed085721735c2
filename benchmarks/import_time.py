"""How long does `import fpjax` take beyond `import jax`? (issue 11 item 5: at most 0.5 s more)

Each import runs in a fresh interpreter (`python -c 'import X'`, JAX_PLATFORMS=cpu), REPEATS
times alternating; the table gives the median wall time, the median CPU time (user + system) of
the child, which other load on the machine disturbs less, and its peak RSS. A row for
`import fpjax; fpjax.compute_artifacts` shows what the lazy part costs when it is used.

    python benchmarks/import_time.py [--repeats=5]

Prints a table and one JSON line.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

CASES = {
    "jax": "import jax",
    "fpjax": "import fpjax",
    "fpjax+compute_artifacts": "import fpjax; fpjax.compute_artifacts",
}


def _run(code: str) -> tuple[float, float, float]:
  """(wall seconds, CPU seconds, peak RSS MB) of a fresh interpreter running `code`."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  t0 = time.perf_counter()
  proc = subprocess.Popen([sys.executable, "-c", code], env=env)
  _, status, usage = os.wait4(proc.pid, 0)
  seconds = time.perf_counter() - t0
  if status != 0:
    raise RuntimeError(f"{code!r} failed with status {status}")
  return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # Linux: KiB


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  _run("import fpjax")  # warm the file cache and bytecode once
  times = {name: [] for name in CASES}
  cpu = {name: [] for name in CASES}
  rss = {name: [] for name in CASES}
  for _ in range(args.repeats):
    for name, code in CASES.items():  # alternate, so drift hits every case alike
      s, c, m = _run(code)
      times[name].append(s)
      cpu[name].append(c)
      rss[name].append(m)
  med = {n: statistics.median(v) for n, v in times.items()}
  med_cpu = {n: statistics.median(v) for n, v in cpu.items()}
  mem = {n: statistics.median(v) for n, v in rss.items()}
  print(f"{'import':<26} {'wall s':>7} {'min s':>7} {'max s':>7} {'CPU s':>7} {'RSS MB':>7}")
  for n in CASES:
    print(f"{n:<26} {med[n]:7.3f} {min(times[n]):7.3f} {max(times[n]):7.3f} {med_cpu[n]:7.3f} "
          f"{mem[n]:7.0f}")
  extra = med["fpjax"] - med["jax"]
  extra_cpu = med_cpu["fpjax"] - med_cpu["jax"]
  print(f"import fpjax costs {extra:+.3f} s wall, {extra_cpu:+.3f} s CPU over import jax "
        "(target: <= 0.5 s)")
  print(json.dumps({"benchmark": "import_time", "repeats": args.repeats,
                    "median_s": {n: round(v, 4) for n, v in med.items()},
                    "median_cpu_s": {n: round(v, 4) for n, v in med_cpu.items()},
                    "rss_mb": {n: round(v, 1) for n, v in mem.items()},
                    "fpjax_minus_jax_s": round(extra, 4),
                    "fpjax_minus_jax_cpu_s": round(extra_cpu, 4), "target_s": 0.5,
                    "python": platform.python_version(), "cpus": os.cpu_count(),
                    "machine": platform.machine()}))


if __name__ == "__main__":
  main()
