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
import functools
import hashlib
import json
import multiprocessing
import os
import shutil
import threading
import time
from typing import Callable

from absl import logging
import jax
import numpy as np
from PIL import Image
import tqdm

from fpjax.errors import ConfigMismatchError, UserInputError
from fpjax import fileio
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
  spec = json.dumps([recipes_lib.preset_dict(preset),
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
    raise ConfigMismatchError(
        f'{path} holds a zoo built with {({k: held.get(k) for k in config})}, not {config}; '
        'use another workdir.', os.path.dirname(path))
  return held


def default_workers() -> int:
  """Training processes build_zoo runs at once by default: min(2, CPU cores) on a single-process
  CPU job, where one small convolutional training keeps about one core busy; 1 on GPU/TPU (one
  process owns the accelerator) and in multi-process JAX jobs."""
  if jax.process_count() > 1 or jax.default_backend() != 'cpu':
    return 1
  return min(2, os.cpu_count() or 1)


_worker_progress = None  # in a worker process: called with the steps of each checkpoint


def _chunk_callback(progress, after_chunk):
  """progress, then the caller's after_chunk hook, after each checkpoint of a training."""
  if after_chunk is None:
    return progress

  def both(steps):
    progress(steps)
    after_chunk(steps)
  return both


def _init_worker(progress_queue, cache_dir, cache_min_seconds, after_chunk) -> None:
  global _worker_progress
  _worker_progress = _chunk_callback(progress_queue.put, after_chunk)
  if cache_dir:  # the parent's persistent compilation cache: a program compiles once per build
    jax.config.update('jax_compilation_cache_dir', cache_dir)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', cache_min_seconds)


def _worker_job(recipes: list, *args) -> list[dict]:
  return _train_and_sample(recipes, *args, progress=_worker_progress)


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
      os.path.join(ckpt_root, donor.training_name), progress=progress,
      real_labels=data.train_labels)
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


@dataclasses.dataclass(frozen=True)
class ZooSpec:
  """One zoo of a build: build_zoo's arguments."""
  workdir: str
  preset: str = 'quick'
  real: str = 'mnist5k'
  seed: int = 0
  num_samples: int | None = None  # None: the preset's


class _ZooBuild:
  """The state of one zoo while build_zoos trains it: what is done, what is left, its files."""

  def __init__(self, spec: ZooSpec):
    if spec.preset not in recipes_lib.PRESETS:
      raise UserInputError(
          f'unknown preset {spec.preset!r}; expected one of {sorted(recipes_lib.PRESETS)}.')
    self.spec = spec
    self.preset = p = recipes_lib.PRESETS[spec.preset]
    self.data = load_real(spec.real)
    self.n = n = p.num_samples if spec.num_samples is None else int(spec.num_samples)
    if n < 1:
      raise UserInputError(f'num_samples must be >= 1, got {n}.')
    self.config = _config(p, spec.real, spec.seed, n, self.data.image_shape)
    self.zoo_path = os.path.join(spec.workdir, ZOO_JSON)
    self.zoo = _check_config(self.zoo_path, self.config)
    self.recipes = recipes_lib.recipes_for(p)
    self.by_name = {r.name: r for r in self.recipes}
    self.entries = {}
    self.jobs = []
    self.reference = None
    self.args = (p, spec.real, spec.seed, n, os.path.join(spec.workdir, 'checkpoints'))
    self._build_path = os.path.join(spec.workdir, 'build.json')
    _check_config(self._build_path, self.config)

  def prepare(self) -> None:
    """Writes build.json and the folders, reads the models already complete, lists the jobs."""
    if self.zoo is not None:
      return
    spec, p = self.spec, self.preset
    if not os.path.exists(self._build_path):
      os.makedirs(spec.workdir, exist_ok=True)
      fileio.save_json(self._build_path, self.config, sort_keys=False)
    for sub in ('models', 'grids', 'images'):
      os.makedirs(os.path.join(spec.workdir, sub), exist_ok=True)
    for r in self.recipes:
      entry_path = os.path.join(spec.workdir, 'models', f'{r.name}.json')
      if os.path.exists(entry_path):
        entry = fileio.load_json(entry_path)
        if entry.get('config') == self.config:
          self.entries[r.name] = entry
    # One job per trained network: its donor first, then the recipes sampling it. Longest first
    # (steps, then family: DDPMs also sample longest), so two workers end close together.
    groups = {}
    for r in self.recipes:
      groups.setdefault(r.training_name, []).append(r)
    self.jobs = [sorted(g, key=lambda r: r.shares_training_with is not None)
                 for g in groups.values() if any(r.name not in self.entries for r in g)]
    self.jobs.sort(key=lambda g: (-recipes_lib.training_steps(p, g[0].family), -len(g),
                                  g[0].name))

  @property
  def total_steps(self) -> int:
    return sum(recipes_lib.training_steps(self.preset, r.family) for r in self.recipes
               if r.shares_training_with is None) if self.zoo is None else 0

  @property
  def steps_left(self) -> int:
    return sum(recipes_lib.training_steps(self.preset, g[0].family) for g in self.jobs)

  def make_reference(self) -> None:
    # Every path needs it (zoo.json's 'reference'); trained once, cached in WORKDIR/reference.
    p, spec = self.preset, self.spec
    self.reference = quality_lib.QualityReference(
        self.data, os.path.join(spec.workdir, 'reference'), seed=spec.seed,
        classifier_steps=p.classifier_steps, encoder_steps=p.encoder_steps, num_samples=self.n)

  def failed(self, group, e) -> RuntimeError:
    names = ', '.join(r.name for r in group)
    return RuntimeError(f'build_zoo: model {names} failed: {type(e).__name__}: {e}')

  def finish(self, results: list[dict]) -> None:
    """Writes the samples, grid and zoo.json entry of each result of one job."""
    workdir, seed = self.spec.workdir, self.spec.seed
    for res in results:
      r = self.by_name[res['name']]
      samples = res.pop('samples')
      _write_images(os.path.join(workdir, 'images', r.name), samples)
      save_grid(os.path.join(workdir, 'grids', f'{r.name}.png'), samples)
      entry = {'name': r.name, 'family': r.family, 'tags': r.tags,
               'seed': seed * 1000 + r.seed, 'steps': res['steps'],
               'final_loss': res['final_loss'], 'num_samples': self.n,
               'quality': self.reference(samples), 'config': self.config,
               'train_seconds': res['train_seconds'], 'sample_seconds': res['sample_seconds']}
      fileio.save_json(os.path.join(workdir, 'models', f'{r.name}.json'), entry,
                            sort_keys=False)
      self.entries[r.name] = entry
      q = entry['quality']
      logging.info('zoo: %s loss %.4f, distance ratio %.3f (real %.3f), recognisable %.3f '
                   '(%.2f of real), FD %.2f, diversity %.2f, train %.1fs sample %.1fs', r.name,
                   entry['final_loss'], q['distance_ratio'],
                   q['real_test_to_manifold'] / q['noise_to_manifold'], q['recognisable'],
                   q['recognisable_vs_real'], q['frechet_distance'], q['diversity'],
                   entry['train_seconds'], entry['sample_seconds'])

  def complete(self, t_start: float, workers: int) -> dict:
    """Writes zoo.json (last, atomically: its presence means a complete zoo) and returns it."""
    if self.zoo is not None:
      logging.info('build_zoo: %s is complete; nothing to do.', self.zoo_path)
      return self.zoo
    models = []
    for r in self.recipes:
      e = dict(self.entries[r.name])
      e.pop('config')
      models.append(e)
    self.zoo = {**self.config, 'reference': self.reference.summary, 'models': models}
    fileio.save_json(self.zoo_path, self.zoo, sort_keys=False)
    logging.info('build_zoo: %d models, complete %.1fs after the build started (%d workers) '
                 '-> %s', len(models), time.time() - t_start, workers, self.zoo_path)
    return self.zoo


class ZooBuilds:
  """Several zoos built by one pool of workers: build_zoos' result.

  Iterating yields each zoo.json, in the order of the specs, once that zoo is complete. The
  workers train the jobs of all zoos in order (each zoo's longest first) from the start, without
  waiting for the caller: while the caller uses a complete zoo, they go on training the next
  ones. At the first next() this process trains the realism references of every zoo (while the
  workers train). close() (or leaving a `with` block) cancels the jobs that have not started;
  the running ones end and keep their checkpoints, so a later build resumes them.
  """

  def __init__(self, specs, progress: bool, workers: int | None, after_chunk=None):
    self._builds = [_ZooBuild(s) for s in specs]  # every spec checked before anything is written
    dirs = [os.path.abspath(s.workdir) for s in specs]
    twice = sorted({d for d in dirs if dirs.count(d) > 1})
    if twice:
      raise UserInputError(
          f'build_zoos: two zoos in one workdir {twice[0]}; a workdir holds one zoo.')
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
      raise UserInputError(f'workers must be >= 1, got {workers}.')
    if workers > 1 and jax.default_backend() != 'cpu':
      raise UserInputError(
          f'workers={workers}: training in several processes is for the CPU; on '
          f'{jax.default_backend()} one process owns the accelerator (workers=1).')
    for b in self._builds:
      b.prepare()
    self.workers = workers
    todo = [b for b in self._builds if b.zoo is None]
    total = sum(b.total_steps for b in todo)
    self._bar = tqdm.tqdm(total=total, unit='step', smoothing=0.1,
                          desc='zoo ' + ', '.join(f'{b.spec.preset}/{b.spec.real}' for b in todo),
                          disable=not progress or not todo)
    self._bar.update(total - sum(b.steps_left for b in todo))
    self._t_start = time.time()
    self._pool = None
    self._after_chunk = after_chunk
    num_jobs = sum(len(b.jobs) for b in self._builds)
    if workers > 1 and num_jobs > 1:
      ctx = multiprocessing.get_context('spawn')
      self._steps_done = ctx.Queue()
      self._pump = threading.Thread(target=self._show_progress, daemon=True)
      self._pump.start()
      self._pool = concurrent.futures.ProcessPoolExecutor(
          min(workers, num_jobs), mp_context=ctx, initializer=_init_worker,
          initargs=(self._steps_done, jax.config.jax_compilation_cache_dir,
                    jax.config.jax_persistent_cache_min_compile_time_secs, after_chunk))
      self._futures = [{self._pool.submit(_worker_job, g, *b.args): g for g in b.jobs}
                       for b in self._builds]
    self._gen = self._run()

  def _show_progress(self):  # a thread: the bar moves while this process does other work
    for k in iter(self._steps_done.get, None):
      self._bar.update(k)

  def _results(self, i: int):
    """(group, a call returning its results) for each job of zoo i, in job order."""
    if self._pool is None:  # trained here, when asked
      progress = _chunk_callback(self._bar.update, self._after_chunk)
      return [(g, functools.partial(_train_and_sample, g, *self._builds[i].args,
                                    progress=progress)) for g in self._builds[i].jobs]
    return [(g, f.result) for f, g in self._futures[i].items()]

  def _run(self):
    try:
      if self._pool is not None:  # the references train here while the workers train
        for b in self._builds:
          if b.zoo is None:
            b.make_reference()
      for i, b in enumerate(self._builds):
        if b.zoo is None and b.reference is None:
          b.make_reference()
        for g, get in self._results(i):
          try:
            results = get()
          except Exception as e:
            raise b.failed(g, e) from e
          b.finish(results)
        yield b.complete(self._t_start, self.workers)
    finally:
      self._shutdown()

  def _shutdown(self):
    if self._pool is not None:
      if not all(f.done() for fs in self._futures for f in fs):
        # Closed early (an error, Ctrl-C): stop the running trainings now rather than wait
        # minutes for them; each has checkpointed its last finished chunk (orbax writes are
        # atomic), which a later build resumes from.
        _terminate_workers(self._pool)
      self._pool.shutdown(wait=True, cancel_futures=True)
      self._steps_done.put(None)
      self._pump.join()
      self._pool = None
    self._bar.close()

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    return next(self._gen)

  def close(self) -> None:
    self._gen.close()
    self._shutdown()  # also when iteration never started

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def _terminate_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
  terminate = getattr(pool, 'terminate_workers', None)  # Python >= 3.14
  if terminate is not None:
    terminate()
    return
  for proc in list((getattr(pool, '_processes', None) or {}).values()):
    proc.terminate()
  for proc in list((getattr(pool, '_processes', None) or {}).values()):
    proc.join()


def build_zoos(specs, progress: bool = True, workers: int | None = None,
               after_chunk: Callable[[int], None] | None = None) -> ZooBuilds:
  """Starts building several zoos with one pool of workers (specs: ZooSpec each; workers as in
  build_zoo) and returns the ZooBuilds that yields them. Same zoos as one build_zoo per spec.

  after_chunk(steps): called in the process that trains, after each checkpoint of a training
  (steps: the steps the checkpoint adds); picklable when workers > 1. For monitoring, and for
  tests that must act at a known step (not after a time).
  """
  return ZooBuilds(specs, progress, workers, after_chunk)


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
  checkpoints let the next build resume). Several zoos at once: build_zoos.
  """
  with build_zoos([ZooSpec(workdir, preset, real, seed, num_samples)], progress=progress,
                  workers=workers) as builds:
    [zoo] = builds
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
