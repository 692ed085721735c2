"""Builds the zoo: train every recipe of a preset, sample it, score it, write it to WORKDIR.

build_zoo runs on one host (the chief); on the CPU it trains `workers` models at once, each in a
worker process (one small convolutional training keeps about one core busy).

zoo.json: the build's config, the realism reference, and per model its tags, steps, final loss,
quality (fpjax.zoo.quality) and wall seconds of training and sampling (train_seconds,
sample_seconds: the only fields that differ between two builds of the same zoo).

On disk:
  WORKDIR/images/<model>/<i:06d>.png   samples (uint8, the real data's shape)
  WORKDIR/grids/<model>.png            8x8 grid of the first 64 samples
  WORKDIR/checkpoints/<model>/         orbax checkpoints (resume an interrupted build)
  WORKDIR/models/<model>.json          the model's zoo.json entry, written once it is complete
  WORKDIR/reference/                   the digit classifier and SL encoder that score realism
                                       (fpjax.zoo.quality), trained once and reused on resume
  WORKDIR/build.json                   the build's config, written first: a workdir holds one zoo
  WORKDIR/zoo.json                     written last (atomic rename): its presence = complete zoo
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import os
import shutil
import threading
import time

from absl import logging
import jax
import numpy as np
from PIL import Image
import tqdm

from fpjax import artifact_io
from fpjax.data import load_image_folder, load_real
from fpjax.data.sources import ImageSet
from fpjax.zoo import quality as quality_lib
from fpjax.zoo import recipes as recipes_lib
from fpjax.zoo import train as train_lib

ZOO_JSON = 'zoo.json'


def save_grid(path: str, images: np.ndarray, rows: int = 8) -> None:
  n = min(len(images), rows * rows)
  h, w, c = images.shape[1:]
  grid = np.zeros((rows * h, rows * w, c), np.uint8)
  for i in range(n):
    r, q = divmod(i, rows)
    grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = images[i]
  img = Image.fromarray(grid[..., 0] if c == 1 else grid)
  scale = max(1, 224 // (rows * h))  # small images (8x8 digits) are enlarged to be visible
  img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST).save(path)


def _write_images(folder: str, images: np.ndarray) -> None:
  tmp = folder + '.tmp'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  for i, img in enumerate(images):
    Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(
        os.path.join(tmp, f'{i:06d}.png'))
  shutil.rmtree(folder, ignore_errors=True)
  os.replace(tmp, folder)


def _config(preset: recipes_lib.Preset, real: str, seed: int, num_samples: int,
            image_shape) -> dict:
  # The recipe hash changes whenever the preset's sizes or its recipes do, so a workdir trained
  # under an older definition is never resumed or reused as if it were this zoo.
  spec = json.dumps([dataclasses.asdict(preset),
                     [dataclasses.asdict(r) for r in recipes_lib.recipes_for(preset)]],
                    sort_keys=True, default=str)
  return {'real': real, 'preset': preset.name, 'seed': seed, 'num_samples': num_samples,
          'image_shape': list(image_shape),
          'recipe_hash': hashlib.sha256(spec.encode()).hexdigest()[:16]}


def _check_config(path: str, config: dict) -> dict | None:
  """The JSON at path (None if absent); raises if it was written for another zoo."""
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    held = json.load(f)
  if {k: held.get(k) for k in config} != config:
    raise artifact_io.UserInputError(
        f'{path} holds a zoo built with {({k: held.get(k) for k in config})}, not {config}; '
        'use another workdir.')
  return held


def default_workers() -> int:
  """Training processes build_zoo runs at once by default: min(2, CPU cores) on a single-process
  CPU job, where one small convolutional training keeps about one core busy; 1 on GPU/TPU (one
  process owns the accelerator) and in multi-process JAX jobs."""
  if jax.process_count() > 1 or jax.default_backend() != 'cpu':
    return 1
  return min(2, os.cpu_count() or 1)


_worker_progress = None  # in a worker process: the queue of finished training steps (the bar)


def _init_worker(progress_queue) -> None:
  global _worker_progress
  _worker_progress = progress_queue


def _worker_job(recipes: list, *args) -> list[dict]:
  return _train_and_sample(recipes, *args, progress=_worker_progress.put)


def _train_and_sample(recipes: list, preset, real: str, seed: int, num_samples: int,
                      ckpt_root: str, progress=None) -> list[dict]:
  """Trains the network the recipes share (recipes[0] is its donor) and samples every recipe.

  Runs in the build process or in a worker process: the result depends only on the arguments.
  Returns per recipe {'name', 'samples' (uint8), 'steps', 'final_loss', 'train_seconds',
  'sample_seconds'}; the sharers' train_seconds are 0 (the donor trained their network).
  progress(k) is called after every k training steps.
  """
  data = load_real(real)
  donor = recipes[0]
  model_seed = seed * 1000 + donor.seed
  t0 = time.time()
  modules, steps, final_loss = train_lib.train(
      donor, preset, data.train_images, model_seed,
      os.path.join(ckpt_root, donor.training_name), progress=progress)
  train_seconds = time.time() - t0
  out = []
  for r in recipes:
    t1 = time.time()
    samples = train_lib.sample(r, preset, modules, num_samples, seed * 1000 + r.seed + 1,
                               data.image_shape)
    out.append({'name': r.name, 'samples': samples, 'steps': steps, 'final_loss': final_loss,
                'train_seconds': round(train_seconds if r is donor else 0.0, 2),
                'sample_seconds': round(time.time() - t1, 2)})
  return out


def build_zoo(workdir: str, preset: str = 'quick', real: str = 'mnist5k', seed: int = 0,
              num_samples: int | None = None, progress: bool = True,
              workers: int | None = None) -> dict:
  """Trains, samples and scores the zoo of `preset` on real data `real`; returns zoo.json.

  Deterministic: the same arguments give the same losses and images, whatever `workers`.
  Rebuilding a complete zoo is a no-op; an interrupted build resumes (finished models are kept,
  a model in training resumes from its latest orbax checkpoint).

  workers: trainings run at once, each in its own process ('spawn'); default
  default_workers(). With 1, everything runs in this process. The realism reference
  (fpjax.zoo.quality) is trained here while the workers train the first models. A model whose
  training or sampling fails fails the build, with its name, once the running ones end (their
  checkpoints let the next build resume).
  """
  if preset not in recipes_lib.PRESETS:
    raise artifact_io.UserInputError(
        f'unknown preset {preset!r}; expected one of {sorted(recipes_lib.PRESETS)}.')
  p = recipes_lib.PRESETS[preset]
  data = load_real(real)
  n = p.num_samples if num_samples is None else int(num_samples)
  if n < 1:
    raise artifact_io.UserInputError(f'num_samples must be >= 1, got {n}.')
  workers = default_workers() if workers is None else int(workers)
  if workers < 1:
    raise artifact_io.UserInputError(f'workers must be >= 1, got {workers}.')
  if workers > 1 and jax.default_backend() != 'cpu':
    raise artifact_io.UserInputError(
        f'workers={workers}: training in several processes is for the CPU; on '
        f'{jax.default_backend()} one process owns the accelerator (workers=1).')
  config = _config(p, real, seed, n, data.image_shape)
  zoo_path = os.path.join(workdir, ZOO_JSON)
  zoo = _check_config(zoo_path, config)
  if zoo is not None:
    logging.info('build_zoo: %s is complete; nothing to do.', zoo_path)
    return zoo
  build_path = os.path.join(workdir, 'build.json')
  if _check_config(build_path, config) is None:
    os.makedirs(workdir, exist_ok=True)
    artifact_io.save_json(build_path, config, sort_keys=False)
  for sub in ('models', 'grids', 'images'):
    os.makedirs(os.path.join(workdir, sub), exist_ok=True)

  recipes = recipes_lib.recipes_for(p)
  entries = {}
  for r in recipes:
    entry_path = os.path.join(workdir, 'models', f'{r.name}.json')
    if os.path.exists(entry_path):
      entry = artifact_io.load_json(entry_path)
      if entry.get('config') == config:
        entries[r.name] = entry
  # One job per trained network: its donor first, then the recipes sampling it. Longest first
  # (steps, then family: DDPMs also sample longest), so two workers end close together.
  groups = {}
  for r in recipes:
    groups.setdefault(r.training_name, []).append(r)
  jobs = [sorted(g, key=lambda r: r.shares_training_with is not None) for g in groups.values()
          if any(r.name not in entries for r in g)]
  jobs.sort(key=lambda g: (-p.steps[g[0].family], -len(g), g[0].name))
  total_steps = sum(p.steps[r.family] for r in recipes if r.shares_training_with is None)
  bar = tqdm.tqdm(total=total_steps, desc=f'zoo {preset}/{real}', unit='step',
                  disable=not progress, smoothing=0.1)
  bar.update(total_steps - sum(p.steps[g[0].family] for g in jobs))
  t_start = time.time()
  ckpt_root = os.path.join(workdir, 'checkpoints')
  args = (p, real, seed, n, ckpt_root)

  def make_reference():
    # Every path needs it (zoo.json's 'reference'); trained once, cached in WORKDIR/reference.
    return quality_lib.QualityReference(
        data, os.path.join(workdir, 'reference'), seed=seed,
        classifier_steps=p.classifier_steps, encoder_steps=p.encoder_steps, num_samples=n)

  by_name = {r.name: r for r in recipes}

  def finish(results):
    for res in results:
      r = by_name[res['name']]
      samples = res.pop('samples')
      _write_images(os.path.join(workdir, 'images', r.name), samples)
      save_grid(os.path.join(workdir, 'grids', f'{r.name}.png'), samples)
      entry = {'name': r.name, 'family': r.family, 'tags': r.tags,
               'seed': seed * 1000 + r.seed, 'steps': res['steps'],
               'final_loss': res['final_loss'], 'num_samples': n,
               'quality': reference(samples), 'config': config,
               'train_seconds': res['train_seconds'], 'sample_seconds': res['sample_seconds']}
      artifact_io.save_json(os.path.join(workdir, 'models', f'{r.name}.json'), entry,
                            sort_keys=False)
      entries[r.name] = entry
      q = entry['quality']
      logging.info('zoo: %s loss %.4f, distance ratio %.3f (real %.3f), recognisable %.3f '
                   '(%.2f of real), FD %.2f, diversity %.2f, train %.1fs sample %.1fs', r.name,
                   entry['final_loss'], q['distance_ratio'],
                   q['real_test_to_manifold'] / q['noise_to_manifold'], q['recognisable'],
                   q['recognisable_vs_real'], q['frechet_distance'], q['diversity'],
                   entry['train_seconds'], entry['sample_seconds'])

  def failed(group, e):
    names = ', '.join(r.name for r in group)
    return RuntimeError(f'build_zoo: model {names} failed: {type(e).__name__}: {e}')

  if workers == 1 or len(jobs) <= 1:
    reference = make_reference()
    for g in jobs:
      try:
        results = _train_and_sample(g, *args, progress=bar.update)
      except Exception as e:
        raise failed(g, e) from e
      finish(results)
  else:
    ctx = multiprocessing.get_context('spawn')
    steps_done = ctx.Queue()

    def show_progress():  # a thread: the bar moves while this process trains the reference
      for k in iter(steps_done.get, None):
        bar.update(k)
    pump = threading.Thread(target=show_progress, daemon=True)
    pump.start()
    try:
      with concurrent.futures.ProcessPoolExecutor(
          min(workers, len(jobs)), mp_context=ctx, initializer=_init_worker,
          initargs=(steps_done,)) as pool:
        futures = {pool.submit(_worker_job, g, *args): g for g in jobs}
        reference = make_reference()  # trained while the workers train
        for f in futures:  # in job order: the longest first
          try:
            results = f.result()
          except Exception as e:
            for x in futures:
              x.cancel()
            raise failed(futures[f], e) from e
          finish(results)
    finally:
      steps_done.put(None)
      pump.join()
  bar.close()
  models = []
  for r in recipes:
    e = dict(entries[r.name])
    e.pop('config')
    models.append(e)
  zoo = {**config, 'reference': reference.summary, 'models': models}
  artifact_io.save_json(zoo_path, zoo, sort_keys=False)
  logging.info('build_zoo: %d models in %.1fs (%d workers) -> %s', len(models),
               time.time() - t_start, workers, zoo_path)
  return zoo


def load_zoo(workdir: str) -> tuple[ImageSet, dict]:
  """Reads a complete zoo: (ImageSet of all samples, labels = model index, zoo.json dict)."""
  zoo_path = os.path.join(workdir, ZOO_JSON)
  if not os.path.exists(zoo_path):
    raise ValueError(f'{zoo_path} not found: the zoo in {workdir} is missing or incomplete.')
  with open(zoo_path, encoding='utf-8') as f:
    meta = json.load(f)
  images = load_image_folder(os.path.join(workdir, 'images'))
  names = [m['name'] for m in meta['models']]
  if images.class_names != names:
    raise ValueError(f'{workdir}/images holds models {images.class_names}, zoo.json lists {names}.')
  return images, meta
