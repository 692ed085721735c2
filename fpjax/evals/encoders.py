"""The learned embedding spaces' encoders (SL, SSL): trained once on the real source, saved in
the work directory and reused; a zoo's reference SL encoder is copied when it is the same one.
"""
from __future__ import annotations

import os
import shutil
import time

from absl import logging
import numpy as np

from fpjax import artifact_job
from fpjax import data as data_lib
from fpjax import fileio
from fpjax import parallel
from fpjax import spaces as spaces_lib
from fpjax.errors import UserInputError
from fpjax.models import encoders as encoders_lib

ENCODER_SPACES = spaces_lib.ENCODER_SPACES
MANIFPT_SPACES = spaces_lib.SPACE_NAMES
LABELLED_SPACES = ('sl',)          # its encoder is trained on the real labels


def safe_name(name: str) -> str:
  """A folder name for a dataset or real-source name (which may be a path or 'tfds:x:y')."""
  out = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in name).strip('.')
  return out or '_'


def real_training_set(real: str):
  """(images, labels or None) of a real source: the encoders' training data.

  Labels: the embedded sets' digits, a TFDS dataset's 'label', a .npz's 'labels' entry, an
  image folder's class folders (when there are at least two); a .npy has none.
  """
  if real in data_lib.REAL_NAMES:
    r = data_lib.load_real(real)
    return r.train_images, r.train_labels
  if real.startswith('tfds:'):
    name, _, split = real[len('tfds:'):].partition(':')
    images, labels = data_lib.load_tfds(name, split or 'train')
    return images, labels if len(np.unique(labels)) > 1 else None
  if real.endswith('.npz'):
    arrays = fileio.load_array(real)
    labels = arrays.get('labels')
    return artifact_job.load_bank_images(real), None if labels is None else np.asarray(labels)
  if os.path.isdir(real):
    s = data_lib.load_image_folder(real)
    return s.images, s.labels if len(s.class_names) > 1 else None
  return artifact_job.load_bank_images(real), None


def make_encoders(names, real: str, *, workdir: str, encoder_steps: dict | None = None,
                  seed: int = 0, zoo_reference: str | None = None) -> dict:
  """Space name -> None (a core space) or the path of its saved SL/SSL Encoder.

  Encoders are trained on the real source's images (SL with its labels) and saved once in
  `workdir/encoders/<kind>-<real>-steps<steps>-seed<seed>` (reused when present); the key holds
  what the encoder depends on, so other settings never reuse it. 'sl' is left out, with a
  one-line warning, when the real source has no labels. Process 0 writes; the others wait.

  zoo_reference: a zoo's `reference/` folder (fpjax.zoo.quality). Its SL encoder, which scores
  the zoo's realism, is copied instead of trained again when it was trained on the same real
  source with the same steps and seed: `train_encoder` is deterministic, so it is the encoder
  this function would train (the demo saves that training, about 35 s on 2 CPU cores).
  """
  out, data = {}, None
  for n in names:
    if n in spaces_lib.SPACES:
      out[n] = None
      continue
    if n not in ENCODER_SPACES:
      raise UserInputError(f'unknown space {n!r}; expected some of {MANIFPT_SPACES}')
    steps = (encoder_steps or {}).get(n)
    path = os.path.join(workdir, 'encoders',
                        f'{n}-{safe_name(real)}-steps{steps or "preset"}-seed{seed}')
    if os.path.exists(os.path.join(path, 'config.json')):
      logging.info('encoder %s: reusing %s', n, path)
      out[n] = path
      continue
    same = _zoo_reference_encoder(zoo_reference, n, real, steps, seed)
    if same:
      _copy_encoder(same, path)
      logging.info('encoder %s: copied the zoo reference\'s %s', n, same)
      out[n] = path
      continue
    if data is None:
      data = real_training_set(real)
    images, labels = data
    if n in LABELLED_SPACES and labels is None:
      logging.warning("space '%s' skipped: the real source %r has no labels to train its "
                      'encoder on', n, real)
      continue
    t0 = time.time()
    enc = encoders_lib.train_encoder(n, images, labels if n in LABELLED_SPACES else None,
                                     steps=steps, seed=seed)
    logging.info('encoder %s: trained on %d real images in %.1fs', n, len(images),
                 time.time() - t0)
    if parallel.is_chief():
      enc.save(path)
    parallel.barrier(f'encoder {path}')  # process 0 has written what the others read
    out[n] = path
  return out


def _copy_encoder(folder: str, path: str) -> None:
  """Process 0 copies an encoder folder (atomically: a partial copy is never `path`)."""
  if parallel.is_chief():
    tmp = path + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(folder, tmp)
    os.replace(tmp, path)
  parallel.barrier(f'encoder {path}')


def _zoo_reference_encoder(reference: str | None, kind: str, real: str, steps: int | None,
                           seed: int) -> str | None:
  """The zoo reference's encoder folder of this kind when it is the encoder make_encoders would
  train (same real source, steps and seed; fpjax.zoo.quality stamps them), else None."""
  if not reference:
    return None
  folder = os.path.join(reference, f'{kind}_encoder')
  stamp = os.path.join(folder, 'zoo_config.json')
  if not os.path.exists(stamp):
    return None
  if steps is None:
    steps = encoders_lib.PRESETS['quick'][f'{kind}_steps']
  return folder if fileio.load_json(stamp) == {'real': real, 'seed': seed,
                                               'steps': steps} else None
