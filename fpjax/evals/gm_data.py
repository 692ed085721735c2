"""GM datasets: a zoo workdir or an image-folder root (one class per generative model), the real
source it imitates, and the baselines' lazy view of its images (`SourceImages`).

Nothing here holds images: the source decodes them on demand; the artifact stores hold the
artifacts.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os

import numpy as np

from fpjax import artifact_job
from fpjax import fileio
from fpjax.data.bad_inputs import BadInputs
from fpjax.errors import UserInputError


@dataclasses.dataclass
class GMData:
  """A GM dataset on disk (one class per generative model) and the real source it imitates.

  `real` is any real source `fpjax.compute_artifacts` takes.
  """
  name: str
  path: str                        # zoo workdir or image-folder root, as compute_artifacts takes
  real: str
  class_names: list
  source: object                   # fpjax.data.ImageFolderSource of the generated images
  image_shape: tuple
  bank_size: int                   # images of the real source (the manifold's bank)
  tags: dict | None = None         # model name -> {knob: value} (zoo.json), None for folders


def load_gm(gm: str, real: str | None = None, *, name: str | None = None) -> GMData:
  """Opens a zoo workdir (has zoo.json) or an image-folder root `root/<model>/*.png`.

  `real` is any real source of `artifact_job.load_bank_images` (embedded name,
  'tfds:<name>[:<split>]', a .npy/.npz, an image folder); for a zoo it defaults to the zoo's
  own real dataset, and a different one is an error (artifacts would be measured against the
  wrong manifold). The generated images are listed, not read.
  """
  if not isinstance(gm, str) or not os.path.isdir(gm):
    raise UserInputError(f'--gm {gm!r}: not a directory (expected a zoo workdir or an '
                         'image-folder root)')
  tags = None
  zoo_json = os.path.join(gm, 'zoo.json')
  if os.path.exists(zoo_json):
    meta = fileio.load_json(zoo_json)
    tags = {m['name']: dict(m['tags']) for m in meta['models']}
    if real is not None and real != meta['real']:
      raise UserInputError(f'{zoo_json}: the zoo was trained on real {meta["real"]!r}, '
                           f'not {real!r}')
    real = meta['real']
    name = name or f'zoo-{meta["preset"]}-{meta["real"]}'
  else:
    if real is None:
      raise UserInputError(f'{gm} has no zoo.json: give the real dataset (--real) it imitates')
    name = name or os.path.basename(os.path.normpath(gm))
  bank = artifact_job.load_bank_images(real)
  # Files the listing refuses (names, symlinks out of the folder) are left out quietly here:
  # the artifact job lists them in its bad_inputs.jsonl (or stops, under --on_bad_input=fail).
  quiet = BadInputs(gm, 'skip', write=False, echo=False)
  source = artifact_job.open_generated(gm, bank.shape[1:], quiet)
  return GMData(name, os.path.abspath(gm), real, list(source.class_names), source,
                tuple(bank.shape[1:]), len(bank), tags)


class SourceImages:
  """uint8 images [N, H, W, C] of `source` (an `fpjax.data.ImageFolderSource`), decoded when
  sliced (threads), never all at once: the base the baselines' `RowSubset` reads.

  `files` (paths relative to source.root, e.g. an artifact store's rows) picks and orders the
  images; the map to the source's indices is built on first read, so a run without baselines
  never builds it (it costs a string per image).
  """

  def __init__(self, source, files=None, num_threads: int = 4):
    self.source = source
    self._files = files
    self._indices = np.arange(len(source)) if files is None else None
    self.shape = (len(source) if files is None else len(files),) + tuple(source.image_shape)
    self.dtype = np.dtype(np.uint8)
    self.ndim = 4
    self.num_threads = num_threads

  def __len__(self) -> int:
    return self.shape[0]

  @property
  def indices(self) -> np.ndarray:
    if self._indices is None:
      root = self.source.root
      where = {os.path.relpath(f, root): i for i, f in enumerate(self.source.files)}
      try:
        self._indices = np.array([where[f] for f in self._files], np.int64)
      except KeyError as e:
        raise UserInputError(f'{root}: file {e} of the artifact store is no longer there; '
                             'recompute the store') from None
    return self._indices

  def __getitem__(self, key) -> np.ndarray:
    idx = np.atleast_1d(self.indices[key])
    with concurrent.futures.ThreadPoolExecutor(self.num_threads) as pool:
      images = list(pool.map(lambda i: self.source[int(i)]['image'], idx))
    out = np.empty((len(idx),) + self.shape[1:], np.uint8)
    for j, a in enumerate(images):
      out[j] = a
    return out
