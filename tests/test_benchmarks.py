"""The benchmarks still run (tiny sizes); their numbers live in benchmarks/README.md."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_knn_benchmark_runs_and_reports_json():
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "benchmarks", "knn.py"), "--sizes=64:3000:300",
       "--repeats=1"], capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  rows = result["results"][0]["rows"]
  assert {"fpjax exact", "fpjax fast", "faiss IndexFlatL2", "sklearn brute"} <= set(rows)
  assert rows["faiss IndexFlatL2"]["agrees_with_exact"] > 0.99
