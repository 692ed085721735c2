r"""Does `evaluate` stay within a fixed memory budget as the GM dataset grows?

Synthesises a GM image folder of N 28x28 grey PNGs from 20 "models": each image is an mnist5k
training digit plus its model's artifact pattern (a faint sinusoidal grating of model-specific
frequency, orientation and phase, amplitude 12 grey levels) plus Gaussian noise (sigma 6), so
the models are separable by their artifacts, as in a real GM dataset. Each model has a pool of
POOL = 1,000 distinct images, encoded once with Pillow (cached as pool_<m>.npz); its files cycle
through the pool's PNG bytes, so a GM of N images repeats each image about N / 20,000 times.
Repeats are fine here: this benchmark measures memory and time, which do not depend on the
pixel values (the probe's accuracy does, and is not the point). Writing is then just file
writes (a million files in a few minutes, not hours of PNG encoding). The folder is cached
under --cache.

Then, for each N, one fresh subprocess runs

  python -m fpjax.bin.evaluate --gm=DIR --real=mnist5k --spaces=rgb --classifiers=probe
      --baselines=none --splits=1 --estimators=nn --workdir=WORK

from a cold work directory (the artifact store is computed inside the run) and reports its wall
time and peak RSS. The peak is `ru_maxrss` of the only child of a small wrapper process (the
high-water mark of the evaluate process: JAX, grain reader threads, the artifact job and the
tables all run in it); the wrapper also samples its RSS once a second into eval_<N>.rss.

  python benchmarks/memory.py [--sizes=50000,200000] [--cache=/tmp/fpjax_memory_bench]

Prints a table and one JSON line.
"""
import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

MODELS = 20
SIZE = 28


def _pattern(model: int) -> np.ndarray:
  rng = np.random.default_rng(1000 + model)
  fy, fx = rng.uniform(1.0, 9.0, size=2)
  phase = rng.uniform(0, 2 * np.pi)
  y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
  return 12.0 * np.sin(2 * np.pi * (fy * y + fx * x) + phase)


POOL = 1000  # distinct images per model; a GM of N images repeats each about N / (20 * POOL) times


def _encode_pool(args) -> int:
  """Encodes the model's POOL distinct PNGs once; caches their bytes under cache/pool_<m>.npz."""
  cache, model = args
  path = os.path.join(cache, f'pool_{model:02d}.npz')
  if os.path.exists(path):
    return model
  import io
  from PIL import Image
  from fpjax import data
  digits = np.asarray(data.load_real('mnist5k').train_images[..., 0], np.float64)
  rng = np.random.default_rng(model)
  pattern = _pattern(model)
  blobs = []
  for _ in range(POOL):
    a = digits[rng.integers(len(digits))] + pattern + rng.normal(0.0, 6.0, (SIZE, SIZE))
    buf = io.BytesIO()
    Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8)).save(buf, format='PNG')
    blobs.append(buf.getvalue())
  offsets = np.cumsum([0] + [len(b) for b in blobs])
  tmp = path + '.tmp.npz'
  np.savez(tmp, data=np.frombuffer(b''.join(blobs), np.uint8), offsets=offsets)
  os.replace(tmp, path)
  return model


def _write_model(args) -> int:
  """Writes `count` files of one model, cycling through its pool of encoded PNGs."""
  root, cache, model, count = args
  pool = np.load(os.path.join(cache, f'pool_{model:02d}.npz'))
  raw, off = pool['data'].tobytes(), pool['offsets']
  blobs = [raw[off[j]:off[j + 1]] for j in range(len(off) - 1)]
  folder = os.path.join(root, f'model_{model:02d}')
  os.makedirs(folder, exist_ok=True)
  for i in range(count):
    with open(os.path.join(folder, f'{i:07d}.png'), 'wb') as f:
      f.write(blobs[i % len(blobs)])
  return count


def synthesise(cache: str, n: int) -> str:
  """The cached folder of n images (n // 20 per model), written when missing."""
  root = os.path.join(cache, f'gm_{n}')
  done = root + '.done'  # outside the folder: it holds model folders only
  if os.path.exists(done):
    return root
  shutil.rmtree(root, ignore_errors=True)
  t0 = time.time()
  with multiprocessing.get_context('spawn').Pool(2) as pool:
    pool.map(_encode_pool, [(cache, m) for m in range(MODELS)])
    pool.map(_write_model, [(root, cache, m, n // MODELS) for m in range(MODELS)])
  with open(done, 'w') as f:
    f.write(f'{n} images written in {time.time() - t0:.0f}s\n')
  print(f'# wrote {n} PNGs to {root} in {time.time() - t0:.0f}s', file=sys.stderr, flush=True)
  return root


def _measure(trace: str, cmd) -> None:
  """Wrapper process: runs cmd as its only child and prints its peak RSS and wall time.

  Also samples the child's RSS once a second into `trace` ("<unix time> <RSS kB>" lines), to
  line up with the timestamps of the evaluate log and see which phase holds the memory.
  """
  t0 = time.time()
  child = subprocess.Popen(cmd)
  with open(trace, 'w') as f:
    while child.poll() is None:
      try:
        with open(f'/proc/{child.pid}/status') as st:
          rss = next(l.split()[1] for l in st if l.startswith('VmRSS'))
        f.write(f'{time.time():.1f} {rss}\n')
        f.flush()
      except (OSError, StopIteration):
        pass
      time.sleep(1.0)
  rc = child.returncode
  wall = time.time() - t0
  peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: kilobytes
  print(json.dumps({'rc': rc, 'wall_s': wall, 'peak_rss_kb': peak_kb}))


def run_evaluate(gm: str, workdir: str, log: str) -> dict:
  shutil.rmtree(workdir, ignore_errors=True)
  cmd = [sys.executable, '-m', 'fpjax.bin.evaluate', f'--gm={gm}', '--real=mnist5k',
         '--spaces=rgb', '--classifiers=probe', '--baselines=none', '--splits=1',
         '--estimators=nn',
         f'--workdir={workdir}']
  with open(log, 'w') as f:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), '--_measure',
                          log[:-len('.log')] + '.rss'] + cmd,
                         stdout=subprocess.PIPE, stderr=f, text=True)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  if result['rc'] != 0:
    raise RuntimeError(f'evaluate failed (exit {result["rc"]}); see {log}')
  with open(os.path.join(workdir, 'tables.json')) as f:
    tables = json.load(f)
  row = next(r for r in tables['rows'] if r['table'] == '1')
  store = os.path.join(workdir, 'artifacts')
  store_bytes = sum(os.path.getsize(os.path.join(d, x)) for d, _, fs in os.walk(store) for x in fs)
  return dict(result, accuracy=row['accuracy_mean'], num_images=tables['config']['num_images'],
              store_MB=store_bytes / 2 ** 20, timings=tables['timings'])


def main():
  if len(sys.argv) > 2 and sys.argv[1] == '--_measure':
    _measure(sys.argv[2], sys.argv[3:])
    return
  parser = argparse.ArgumentParser()
  parser.add_argument('--sizes', default='50000,200000')
  parser.add_argument('--cache', default='/tmp/fpjax_memory_bench')
  parser.add_argument('--keep_workdirs', action='store_true')
  args = parser.parse_args()
  sizes = [int(s) for s in args.sizes.split(',')]
  os.makedirs(args.cache, exist_ok=True)
  results = []
  print(f'{"images":>9} {"wall s":>8} {"peak RSS MB":>12} {"store MB":>9} {"accuracy":>9}')
  for n in sizes:
    gm = synthesise(args.cache, n)
    work = os.path.join(args.cache, f'eval_{n}')
    r = run_evaluate(gm, work, os.path.join(args.cache, f'eval_{n}.log'))
    if not args.keep_workdirs:
      shutil.rmtree(work, ignore_errors=True)
    r['images'] = n
    results.append(r)
    print(f'{n:>9} {r["wall_s"]:>8.0f} {r["peak_rss_kb"] / 1024:>12.0f} {r["store_MB"]:>9.0f} '
          f'{100 * r["accuracy"]:>8.1f}%', flush=True)
  print(json.dumps({'benchmark': 'memory', 'cpus': os.cpu_count(), 'results': results}))


if __name__ == '__main__':
  main()
