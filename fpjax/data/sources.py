"""Random-access sources of images: in-memory arrays, image folders and prepared TFDS datasets.

Every source has `len(source)` and `source[i] -> {'image': uint8 [H,W,C], 'label': int32}` in a
fixed order, so the input pipeline (pipeline.py) can shard it by process and resume it.

Image folders follow the paper's layout, one folder per generative model:
`root/<model_name>/*.{png,jpg,jpeg}`; class k is the k-th model name in sorted order.

Conversions done by `load_image_folder` (documented, never silent skips):
- palette ('P'), '1', CMYK, YCbCr, LAB, HSV images are converted to RGB (or L when they are grey);
- alpha channels (RGBA, LA, palette transparency) are dropped (not composited);
- 16-bit / 32-bit integer greyscale ('I;16', 'I') is rescaled to 8 bits by dividing by 257;
- `channels=1` turns colour into luminance (ITU-R 601-2, Pillow's 'L'); `channels=3` repeats grey;
  `channels=None` gives 1 channel if every image is grey, else 3;
- mixed resolutions are an error unless `image_size` is given, then every image is resized
  (bicubic) to it.
Bad files are a `BadInputError` (a ValueError) naming the file: unreadable, truncated or
zero-byte files, images larger than Pillow's decompression-bomb limit
(`PIL.Image.MAX_IMAGE_PIXELS`), float images, symlinks pointing outside `root` or into another
model's folder, and files in `root/<model>/` that are not regular image files. Given a
`bad_inputs` list (fpjax.data.BadInputs, policy 'skip'), the listing and
`load_image_folder` record such a file and go on without it; `ImageFolderSource[i]` never raises
for one but returns it as data ('error': the reason) for the pipeline's caller to skip or stop.
A folder that is unusable as a whole (model folder names with '..' or a path separator, an empty
model folder, no model folders) is a `UserInputError`.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from typing import Any, Sequence

from absl import logging
import numpy as np
from PIL import Image, UnidentifiedImageError

from fpjax.errors import BadInputError, UserInputError

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')


@dataclasses.dataclass
class ImageSet:
  """Images with one label per generative model (class_names[label] is the model name)."""
  images: np.ndarray        # uint8 [N,H,W,C]
  labels: np.ndarray        # int32 [N]
  class_names: list[str]
  files: list[str]

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, i: int) -> dict[str, Any]:
    return {'image': self.images[i], 'label': self.labels[i]}


class ArraySource:
  """Random-access source over in-memory arrays (images [N,...], optional labels [N])."""

  def __init__(self, images, labels=None):
    self.images = np.asarray(images)
    self.labels = (np.zeros(len(self.images), np.int32) if labels is None
                   else np.asarray(labels, np.int32))
    if self.images.ndim != 4:
      raise UserInputError(f'images must be [N,H,W,C], got shape {self.images.shape}.')
    if len(self.labels) != len(self.images):
      raise UserInputError(f'{len(self.images)} images but {len(self.labels)} labels.')

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, i: int) -> dict[str, Any]:
    return {'image': self.images[i], 'label': self.labels[i]}


# ----------------------------------------------------------------------------- image folders


def _outside(path: str, real_root: str) -> str | None:
  """Why `path` (through symlinks) leaves `real_root`, or None."""
  real = os.path.realpath(path)
  if os.path.commonpath([real, real_root]) != real_root:
    return f'symlink points outside the root {real_root} ({real}); refused.'
  return None


def _list_folder(root: str, bad_inputs=None) -> tuple[list[str], list[list[str]]]:
  """Model names and their image files; a bad file is recorded in `bad_inputs` (and left out)
  when it says to skip, else a BadInputError."""
  if not os.path.isdir(root):
    raise UserInputError(f'{root}: not a directory.')
  real_root = os.path.realpath(root)

  def bad(path, reason):
    if bad_inputs is None:
      raise BadInputError(path, reason, 'list')
    if not bad_inputs.record(path, reason, 'list'):
      raise bad_inputs.error()

  class_names, class_files = [], []
  for name in sorted(os.listdir(root)):
    path = os.path.join(root, name)
    if '..' in name or '/' in name or '\\' in name or os.sep in name:
      raise UserInputError(f'{path}: model folder name {name!r} contains ".." or a path separator.')
    if not os.path.isdir(path):
      raise UserInputError(f'{path}: expected only model folders directly under {root}.')
    why = _outside(path, real_root)
    if why:
      raise UserInputError(f'{path}: {why}')
    real_dir = os.path.realpath(path)
    files = []
    for fname in sorted(os.listdir(path)):
      fpath = os.path.join(path, fname)
      real = os.path.realpath(fpath)
      if not fname.lower().endswith(IMAGE_EXTENSIONS):
        bad(fpath, f'not an image file (extensions {IMAGE_EXTENSIONS}).')
      elif why := _outside(fpath, real_root):
        bad(fpath, why)
      elif os.path.commonpath([real, real_dir]) != real_dir and os.path.islink(fpath):
        # A link to another model's folder would silently mislabel the image.
        bad(fpath, f'symlink points into another model folder ({real}); refused.')
      elif not os.path.isfile(real):
        bad(fpath, 'not a regular file.')
      else:
        files.append(fpath)
    if not files:
      raise UserInputError(f'{path}: model folder is empty (no readable '
                           f'{"/".join(IMAGE_EXTENSIONS)} file).')
    class_names.append(name)
    class_files.append(files)
  if not class_names:
    raise UserInputError(f'{root}: no model folders found.')
  return class_names, class_files


def _decode(path: str) -> np.ndarray:
  """Decodes one file to uint8 [H,W,1] (grey) or [H,W,3] (colour); BadInputError on bad input."""
  if os.path.getsize(path) == 0:
    raise BadInputError(path, 'zero-byte file.')
  try:
    with Image.open(path) as im:
      limit = Image.MAX_IMAGE_PIXELS
      if limit is not None and im.width * im.height > limit:
        raise BadInputError(path, f'{im.width}x{im.height} pixels exceeds the decompression-bomb '
                            f'limit PIL.Image.MAX_IMAGE_PIXELS={limit}.')
      im.load()
      mode = im.mode
      if mode in ('I;16', 'I;16B', 'I;16L', 'I'):
        a = np.asarray(im, dtype=np.int64)
        return np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)[..., None]
      if mode == 'F':
        raise BadInputError(path, 'floating-point images are not supported.')
      if mode == 'P':
        im = im.convert('RGBA' if 'transparency' in im.info else 'RGB')
        mode = im.mode
      if mode == 'L':  # the common case (grey PNGs): no conversion copy
        return np.asarray(im)[..., None]
      if mode in ('LA', '1'):
        return np.asarray(im.convert('L'))[..., None]
      rgb = np.asarray(im.convert('RGB'))
      if mode == 'RGBA' or mode == 'RGB':
        # A colour file whose channels are all equal is grey (e.g. palette of greys).
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
          return rgb[..., :1]
      return rgb
  except Image.DecompressionBombError as e:
    raise BadInputError(path, f'decompression bomb refused by Pillow: {e}') from e
  except UnidentifiedImageError as e:
    raise BadInputError(path, 'unreadable image (not a PNG/JPEG Pillow can identify).') from e
  except OSError as e:
    raise BadInputError(path, f'truncated or corrupt image: {e}') from e


def _to_size(path: str, a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  if a.shape[:2] == size:
    return a
  im = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
  out = np.asarray(im.resize((size[1], size[0]), Image.Resampling.BICUBIC))
  return out[..., None] if out.ndim == 2 else out


def _to_channels(a: np.ndarray, channels: int) -> np.ndarray:
  """Grey -> colour repeats the channel; colour -> grey uses Pillow's convert('L') weights."""
  if a.shape[-1] == channels:
    return a
  if channels == 3:
    return np.repeat(a, 3, axis=-1)
  return np.clip(np.rint(a @ np.array([0.299, 0.587, 0.114])), 0, 255).astype(np.uint8)[..., None]


class ImageFolderSource:
  """`root/<model>/*.{png,jpg,jpeg}`, decoded when the input pipeline asks for an image.

  The listing (names, symlinks, non-image files) is checked up front with the same rules as
  `load_image_folder` (bad files recorded in `bad_inputs` and left out, when given). Element i
  is {'image', 'label', 'row': i, 'error': ''}; a file that fails to decode, or whose size is not
  `image_shape`'s, gives a zero image and 'error': the reason, so grain's reader threads never
  raise and the caller decides (skip and list it, or stop). Images are converted to
  `image_shape`'s channel count.
  """

  def __init__(self, root: str, image_shape: Sequence[int],
               class_names: Sequence[str] | None = None, bad_inputs=None):
    self.root = os.path.abspath(root)
    names, files = _list_folder(self.root, bad_inputs)
    if class_names is not None and list(class_names) != names:
      raise UserInputError(f'{self.root}: model folders {names} differ from the expected models '
                           f'{list(class_names)}.')
    self.class_names = names
    self.files = [f for fs in files for f in fs]
    self.labels = np.concatenate([np.full(len(fs), i, np.int32) for i, fs in enumerate(files)])
    self.image_shape = tuple(int(s) for s in image_shape)

  def __len__(self) -> int:
    return len(self.files)

  def load(self, i: int) -> np.ndarray:
    """Image i as uint8 `image_shape`; BadInputError naming the file if it cannot be."""
    path = self.files[i]
    a = _decode(path)
    h, w, c = self.image_shape
    if a.shape[:2] != (h, w):
      raise BadInputError(path, f'image is {a.shape[1]}x{a.shape[0]} but {w}x{h} is expected '
                          '(the real bank\'s size).')
    return _to_channels(a, c)

  def __getitem__(self, i: int) -> dict[str, Any]:
    error = ''
    try:
      image = self.load(i)
    except BadInputError as e:
      image, error = np.zeros(self.image_shape, np.uint8), e.reason
    return {'image': image, 'label': self.labels[i], 'row': np.int64(i), 'error': error}


def load_image_folder(root: str, *, image_size: int | Sequence[int] | None = None,
                      channels: int | None = None, num_threads: int | None = None,
                      bad_inputs=None, stage: str = 'decode') -> ImageSet:
  """Reads `root/<model_name>/*.{png,jpg,jpeg}` into an ImageSet (see module docstring).

  Args:
    root: folder with one sub-folder of images per generative model.
    image_size: None (all images must share one size) or int / (H, W) to resize every image to.
    channels: None (1 if all grey else 3), 1 or 3.
    num_threads: Pillow decoding threads (default: min(32, cpu_count + 4)).
    bad_inputs: a fpjax.data.BadInputs: bad files are recorded there (as `stage`) and
      left out when it says to skip; None: the first bad file is a BadInputError.
  """
  if channels not in (None, 1, 3):
    raise UserInputError(f'channels must be None, 1 or 3, got {channels!r}.')
  size = None
  if image_size is not None:
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or min(size) < 1:
      raise UserInputError(f'image_size must be a positive int or (H, W), got {image_size!r}.')
  class_names, class_files = _list_folder(root, bad_inputs)
  files = [f for fs in class_files for f in fs]
  labels = np.concatenate([np.full(len(fs), k, np.int32) for k, fs in enumerate(class_files)])
  workers = num_threads or min(32, (os.cpu_count() or 1) + 4)

  def decode(path):
    try:
      return _decode(path)
    except BadInputError as e:
      return e

  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    decoded = list(pool.map(decode, files))  # map keeps file order
  keep = []
  for i, a in enumerate(decoded):  # errors in file order, from this thread
    if isinstance(a, BadInputError):
      if bad_inputs is None:
        raise BadInputError(a.path, a.reason, stage)
      if not bad_inputs.record(a.path, a.reason, stage):
        raise bad_inputs.error()
    else:
      keep.append(i)
  if not keep:
    raise UserInputError(f'{root}: no readable image.')
  files = [files[i] for i in keep]
  labels = labels[keep]
  decoded = [decoded[i] for i in keep]
  if size is None:
    first = decoded[0].shape[:2]
    for f, a in zip(files, decoded):
      if a.shape[:2] != first:
        raise UserInputError(f'{f}: size {a.shape[1]}x{a.shape[0]} differs from {files[0]} '
                             f'({first[1]}x{first[0]}); pass image_size= to resize.')
    size = first
  else:
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      decoded = list(pool.map(_to_size, files, decoded, [size] * len(files)))
  if channels is None:
    channels = 1 if all(a.shape[-1] == 1 for a in decoded) else 3
  images = np.empty((len(files), size[0], size[1], channels), np.uint8)
  for i, a in enumerate(decoded):
    images[i] = _to_channels(a, channels)
  for name, fs in zip(class_names, class_files):
    logging.info('load_image_folder: %s: read %d images of class %r', root, len(fs), name)
  return ImageSet(images, labels, class_names, files)


def save_image_folder(root: str, images, labels, class_names: Sequence[str]) -> list[str]:
  """Writes images as `root/<class_name>/<index:06d>.png` (the layout load_image_folder reads)."""
  images = np.asarray(images)
  paths = []
  counters = {}
  for img, lab in zip(images, np.asarray(labels)):
    name = class_names[int(lab)]
    os.makedirs(os.path.join(root, name), exist_ok=True)
    k = counters.get(name, 0)
    counters[name] = k + 1
    p = os.path.join(root, name, f'{k:06d}.png')
    Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(p)
    paths.append(p)
  return paths


# ----------------------------------------------------------------------------- TFDS


class TfdsSource:
  """A prepared TFDS dataset read through `tfds.data_source` (array_record; no TensorFlow).

  The dataset must already be prepared in `data_dir` (preparing it needs TensorFlow, the 'tf'
  extra); reading does not. Yields {'image': uint8 [H,W,C], 'label': int32}.
  """

  def __init__(self, name: str, split: str = 'train', *, data_dir: str | None = None,
               image_key: str = 'image', label_key: str = 'label'):
    # Lazy: tensorflow_datasets is heavy to import and only TFDS sources need it.
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    try:
      self._ds = tfds.data_source(name, split=split, data_dir=data_dir)
    except Exception as e:  # pylint: disable=broad-except
      raise UserInputError(f'TFDS dataset {name!r} split {split!r} could not be opened from '
                           f'data_dir={data_dir!r} (prepare it first, e.g. with the tf extra): '
                           f'{e}') from e
    self.name, self.split = name, split
    self._image_key, self._label_key = image_key, label_key

  def __len__(self) -> int:
    return len(self._ds)

  def __getitem__(self, i: int) -> dict[str, Any]:
    ex = self._ds[int(i)]
    img = np.asarray(ex[self._image_key])
    if img.ndim == 2:
      img = img[..., None]
    if img.dtype != np.uint8:
      raise ValueError(f'TFDS {self.name}[{i}]: image dtype {img.dtype}, expected uint8.')
    label = np.int32(ex[self._label_key]) if self._label_key in ex else np.int32(0)
    return {'image': img, 'label': label}


def load_tfds(name: str, split: str = 'train', *, data_dir: str | None = None,
              max_examples: int | None = None,
              num_threads: int = 8) -> tuple[np.ndarray, np.ndarray]:
  """Reads a prepared TFDS image dataset (e.g. 'cifar10') into uint8 images [N,H,W,C], labels."""
  source = TfdsSource(name, split, data_dir=data_dir)
  n = len(source) if max_examples is None else min(max_examples, len(source))
  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    examples = list(pool.map(source.__getitem__, range(n)))
  if not examples:
    raise UserInputError(f'TFDS {name}[{split}] is empty.')
  images = np.stack([e['image'] for e in examples])
  labels = np.array([e['label'] for e in examples], np.int32)
  logging.info('load_tfds: read %d examples of %s[%s]', n, name, split)
  return images, labels
