"""The job's inputs, named on its command line: the real bank (`load_bank_images`), the
generated images (`open_generated`) and the embedding space (`resolve_space`)."""
from __future__ import annotations

import os

import numpy as np

from fpjax import data
from fpjax import fileio
from fpjax import models
from fpjax import spaces as spaces_lib
from fpjax.data.bad_inputs import BadInputs
from fpjax.errors import UserInputError


def load_bank_images(real: str, bad_inputs: BadInputs | None = None) -> np.ndarray:
  """Real images for the bank: an embedded dataset name, 'tfds:<name>[:<split>]', a .npy/.npz
  of images [N, H, W, C], or an image folder (all its classes pooled; bad files go to
  `bad_inputs` as stage 'real')."""
  if real in data.REAL_NAMES:
    return np.asarray(data.load_real(real).train_images)
  if real.startswith("tfds:"):
    name, _, split = real[len("tfds:"):].partition(":")
    return data.load_tfds(name, split or "train")[0]
  if real.endswith((".npy", ".npz")):
    return fileio.load_images(real)
  if os.path.isdir(real):
    return data.load_image_folder(real, bad_inputs=bad_inputs, stage="real").images
  raise UserInputError(f"--real {real!r}: not one of {list(data.REAL_NAMES)}, 'tfds:<name>', a "
                       ".npy/.npz of images or an image folder.")


def open_generated(gm: str, image_shape, bad_inputs: BadInputs | None = None
                   ) -> data.ImageFolderSource:
  """--gm: a zoo work directory (has zoo.json and images/) or an image-folder root."""
  if not os.path.isdir(gm):
    raise UserInputError(f"--gm {gm!r}: not a directory (a zoo workdir or an image-folder root).")
  zoo_json = os.path.join(gm, "zoo.json")
  if os.path.isfile(zoo_json):
    meta = fileio.load_json(zoo_json)
    try:
      names = [fileio.check_name(m["name"], f"{zoo_json}: model name") for m in meta["models"]]
    except (KeyError, TypeError) as e:
      raise UserInputError(f"{zoo_json}: no 'models' list of {{'name': ...}} entries: {e}") from e
    root = os.path.join(gm, "images")
    fileio.check_inside(root, gm)
    return data.ImageFolderSource(root, image_shape, class_names=sorted(names),
                                  bad_inputs=bad_inputs)
  return data.ImageFolderSource(gm, image_shape, bad_inputs=bad_inputs)


def resolve_space(space: str, encoder: str | None):
  """The space argument Manifold takes: a name, or the loaded Encoder for 'sl'/'ssl'."""
  if space not in spaces_lib.SPACE_NAMES:
    raise UserInputError(f"space must be one of {spaces_lib.SPACE_NAMES}; got {space!r}")
  if space not in spaces_lib.ENCODER_SPACES:
    if encoder:
      raise UserInputError(
          f"--encoder is for the spaces {spaces_lib.ENCODER_SPACES}, not {space!r}.")
    return space
  if not encoder:
    raise UserInputError(f"space {space!r} needs --encoder=<a saved fpjax Encoder>.")
  if not os.path.exists(encoder):
    raise UserInputError(f"--encoder {encoder!r}: no such file or folder.")
  return models.load_encoder(encoder)
