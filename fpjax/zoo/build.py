"""Builds the zoo: train every recipe of a preset, sample it, score it, write it to WORKDIR.

On disk (build_zoo is a single-process job):
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

import dataclasses
import hashlib
import json
import os
import shutil
import time

from absl import logging
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
    raise ValueError(f'{path} holds a zoo built with {({k: held.get(k) for k in config})}, '
                     f'not {config}; use another workdir.')
  return held


def build_zoo(workdir: str, preset: str = 'quick', real: str = 'mnist5k', seed: int = 0,
              num_samples: int | None = None, progress: bool = True) -> dict:
  """Trains, samples and scores the zoo of `preset` on real data `real`; returns zoo.json.

  Deterministic: the same arguments give the same losses and images. Rebuilding a complete
  zoo is a no-op; an interrupted build resumes (finished models are kept, a model in training
  resumes from its latest orbax checkpoint).
  """
  if preset not in recipes_lib.PRESETS:
    raise ValueError(f'unknown preset {preset!r}; expected one of {sorted(recipes_lib.PRESETS)}.')
  p = recipes_lib.PRESETS[preset]
  data = load_real(real)
  n = p.num_samples if num_samples is None else int(num_samples)
  if n < 1:
    raise ValueError(f'num_samples must be >= 1, got {n}.')
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

  os.makedirs(os.path.join(workdir, 'models'), exist_ok=True)
  os.makedirs(os.path.join(workdir, 'grids'), exist_ok=True)
  os.makedirs(os.path.join(workdir, 'images'), exist_ok=True)
  # Every path needs it (zoo.json's 'reference'); trained once, cached in WORKDIR/reference.
  reference = quality_lib.QualityReference(
      data, os.path.join(workdir, 'reference'), seed=seed,
      classifier_steps=p.classifier_steps, encoder_steps=p.encoder_steps, num_samples=n)

  recipes = recipes_lib.recipes_for(p)
  trained = {}  # training_name -> (modules, steps, final_loss), for recipes sharing a network
  total_steps = sum(p.steps[r.family] for r in recipes if r.shares_training_with is None)
  bar = tqdm.tqdm(total=total_steps, desc=f'zoo {preset}/{real}', unit='step',
                  disable=not progress, smoothing=0.1)
  t_start = time.time()
  entries = []
  for r in recipes:
    entry_path = os.path.join(workdir, 'models', f'{r.name}.json')
    if os.path.exists(entry_path):
      with open(entry_path, encoding='utf-8') as f:
        entry = json.load(f)
      if entry.get('config') == config:
        if r.shares_training_with is None:
          bar.update(p.steps[r.family])
        entries.append(entry)
        continue
    model_seed = seed * 1000 + r.seed
    t0 = time.time()
    if r.training_name not in trained:
      donor = next(x for x in recipes if x.name == r.training_name)
      trained[r.training_name] = train_lib.train(
          donor, p, data.train_images, model_seed,
          os.path.join(workdir, 'checkpoints', r.training_name),
          progress=bar.update if r.shares_training_with is None else None)
    modules, steps, final_loss = trained[r.training_name]
    t1 = time.time()
    samples = train_lib.sample(r, p, modules, n, model_seed + 1, data.image_shape)
    _write_images(os.path.join(workdir, 'images', r.name), samples)
    save_grid(os.path.join(workdir, 'grids', f'{r.name}.png'), samples)
    entry = {'name': r.name, 'family': r.family, 'tags': r.tags, 'seed': model_seed,
             'steps': steps, 'final_loss': final_loss, 'num_samples': n,
             'quality': reference(samples), 'config': config,
             'train_seconds': round(t1 - t0, 2), 'sample_seconds': round(time.time() - t1, 2)}
    artifact_io.save_json(entry_path, entry, sort_keys=False)
    entries.append(entry)
    q = entry['quality']
    logging.info('zoo: %s loss %.4f, distance ratio %.3f (real %.3f), recognisable %.3f '
                 '(%.2f of real), FD %.2f, diversity %.2f, train %.1fs sample %.1fs', r.name,
                 final_loss, q['distance_ratio'], q['real_test_to_manifold'] / q['noise_to_manifold'],
                 q['recognisable'], q['recognisable_vs_real'], q['frechet_distance'],
                 q['diversity'], t1 - t0, time.time() - t1)
  bar.close()
  models = []
  for e in entries:
    e = dict(e)
    for k in ('config', 'train_seconds', 'sample_seconds'):
      e.pop(k, None)  # timings vary run to run; zoo.json must not
    models.append(e)
  zoo = {**config, 'reference': reference.summary, 'models': models}
  artifact_io.save_json(zoo_path, zoo, sort_keys=False)
  logging.info('build_zoo: %d models in %.1fs -> %s', len(models), time.time() - t_start, zoo_path)
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
