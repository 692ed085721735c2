r"""Python loop over one jitted step vs many steps per dispatch (lax.scan), on this backend.

fpjax picks the loop by backend (fpjax.models.training.steps_per_dispatch): 1 step per
dispatch on the CPU, ACCELERATOR_STEPS_PER_DISPATCH (a scan) on GPU/TPU. This measures both
paths in one process, through the public entry points, for:
  zoo train    fpjax.zoo.train.train (GAN and DDPM of the quick preset, mnist5k 28x28)
  zoo sample   DDPM ancestral sampling, 100 images (one denoising step = one step)
  encoder      train_encoder('sl') and train_encoder('ssl') (quick preset, mnist5k)
  probe        LinearProbe on [N, 784] features
  attributor   Attributor('quick') on [N, 28, 28, 1] artifacts
Per-step time = (T(long run) - T(short run)) / (extra steps), each T the median of --repeats
runs: compilation, checkpoints and set-up are the same in both runs and cancel.

  python benchmarks/training_loops.py [--repeats=3 --scan_steps=100 --only=probe,attributor]

Prints a table and one JSON line.
"""
import argparse
import json
import os
import statistics
import tempfile
import time

from absl import logging
import jax
import numpy as np

from fpjax.attribution import Attributor, LinearProbe
from fpjax.data import load_real
from fpjax.models import train_encoder, training
from fpjax.zoo import recipes, train


def _median_time(fn, repeats):
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def per_step(run, short, long, repeats):
  """run(n) does n steps; returns seconds per step from the difference of two lengths."""
  t_short = _median_time(lambda: run(short), repeats)
  t_long = _median_time(lambda: run(long), repeats)
  return max(t_long - t_short, 0.0) / (long - short)


def _workloads(tiny: bool) -> dict:
  """name -> (run(n, S), short n, long n, steps per unit of n)."""
  real = load_real("digits" if tiny else "mnist5k")
  imgs, labels = real.train_images, real.train_labels
  rng = np.random.default_rng(0)
  tmp = tempfile.mkdtemp(prefix="fpjax-bench-loops-")
  short, long = (4, 12) if tiny else (20, 120)
  quick = recipes.PRESETS["quick"]

  def zoo_train(name):
    r = next(x for x in recipes.DEFAULT_ZOO if x.name == name)

    def run(n, S):
      # The loop under test only: no GAN decoder pretraining (its VAE steps time like a VAE's).
      p = recipes.replace_preset(quick, steps={r.family: n}, chunk=n, gan_pretrain_steps=0)
      train.train(r, p, imgs, 0, os.path.join(tmp, f"{name}-{S}-{n}-{time.time_ns()}"),
                  per_dispatch=S, real_labels=labels)
    return run

  def zoo_sample(n, S):
    r = next(x for x in recipes.DEFAULT_ZOO if x.name == "ddpm_nearest_gn_silu_ancestral")
    p = recipes.replace_preset(quick, ancestral_steps=n)
    modules = train.build_modules(r, p, imgs.shape[1:], 0, num_classes=10)  # guided, as the zoo
    train.sample(r, p, modules, 100, 1, imgs.shape[1:], per_dispatch=S)

  def encoder(kind):
    def run(n, S):
      train_encoder(kind, imgs, labels, steps=n, seed=0, per_dispatch=S)
    return run

  nfeat = 512 if tiny else 4096
  feats = rng.normal(size=(nfeat, 784)).astype(np.float32)
  fy = rng.integers(0, 8, nfeat)
  art = rng.normal(size=(nfeat // 2, 28, 28, 1)).astype(np.float32)
  ay = rng.integers(0, 8, nfeat // 2)

  def probe(epochs, S):  # 16 steps per epoch (batch 256)
    LinearProbe(epochs=epochs, val_fraction=0.0, per_dispatch=S).fit(feats, fy)

  def attributor(epochs, S):  # 32 steps per epoch (batch 64)
    Attributor("quick", epochs=epochs, milestones=(), per_dispatch=S).fit(art, ay)

  steps_per_epoch_probe = max(1, nfeat // 256)
  steps_per_epoch_att = max(1, (nfeat // 2) // 64)
  return {
      # name: (run(n, S), short n, long n, steps per unit of n)
      "zoo train gan": (zoo_train("gan_tconv_bn_relu_ns"), short, long, 1),
      "zoo train ddpm": (zoo_train("ddpm_nearest_gn_silu_ancestral"), short, long, 1),
      "zoo sample ddpm": (zoo_sample, short // 2, long // 2, 1),
      "encoder sl": (encoder("sl"), short, long, 1),
      "encoder ssl": (encoder("ssl"), short // 2, long // 2, 1),
      "probe": (probe, 1 if tiny else 2, 2 if tiny else 22, steps_per_epoch_probe),
      "attributor": (attributor, 1, 2 if tiny else 4, steps_per_epoch_att),
  }


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--scan_steps", type=int, default=None,
                      help="steps per dispatch of the scanned path (default: fpjax's "
                           "accelerator value)")
  parser.add_argument("--only", default="", help="comma-separated subset of the workloads")
  parser.add_argument("--tiny", action="store_true", help="tiny sizes (a smoke test)")
  args = parser.parse_args()

  logging.set_verbosity(logging.WARNING)
  scan = args.scan_steps or training.ACCELERATOR_STEPS_PER_DISPATCH
  workloads = _workloads(args.tiny)

  only = [w.strip() for w in args.only.split(",") if w.strip()]
  rows = {}
  print(f"backend {jax.default_backend()}, {jax.device_count()} device(s) "
        f"({jax.devices()[0].device_kind}), {os.cpu_count()} CPUs; scanned path: {scan} steps "
        f"per dispatch; load average {os.getloadavg()[0]:.2f}")
  print(f"{'workload':18s} {'loop ms/step':>13s} {'scan ms/step':>13s} {'scan/loop':>10s}")
  for name, (run, a, b, unit) in workloads.items():
    if only and not any(o in name for o in only):
      continue
    t = {}
    for label, S in (("loop", 1), ("scan", scan)):
      t[label] = per_step(lambda n: run(n, S), a, b, args.repeats) / unit
    rows[name] = {"loop_ms_per_step": round(1e3 * t["loop"], 3),
                  "scan_ms_per_step": round(1e3 * t["scan"], 3),
                  "scan_over_loop": round(t["scan"] / max(t["loop"], 1e-12), 3)}
    r = rows[name]
    print(f"{name:18s} {r['loop_ms_per_step']:13.3f} {r['scan_ms_per_step']:13.3f} "
          f"{r['scan_over_loop']:10.2f}", flush=True)
  print(json.dumps({"benchmark": "training_loops", "backend": jax.default_backend(),
                    "device_kind": jax.devices()[0].device_kind, "cpus": os.cpu_count(),
                    "scan_steps_per_dispatch": scan, "repeats": args.repeats,
                    "load_average": round(os.getloadavg()[0], 2), "rows": rows}))


if __name__ == "__main__":
  main()
