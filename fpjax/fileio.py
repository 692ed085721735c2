"""Files a user hands fpjax and files fpjax writes: safe array readers and atomic writes.

Readers never unpickle: `load_array` reads .npy/.npz with allow_pickle=False and checks the
header against the file size before allocating anything, so a corrupt or hostile file gives a
BadInputError (a UserInputError) naming the file instead of a crash, a huge allocation or code
execution.
JSON and .npz files are written to a temporary name in the same folder and renamed into place
(`os.replace` is atomic), so a reader never sees half a file under a final name.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
from typing import Any

import numpy as np

from fpjax.errors import BadInputError, UserInputError

# Refuse arrays larger than this unless the caller raises the limit: a tiny file whose header
# (or zip entry) claims terabytes is a decompression bomb, not data.
DEFAULT_MAX_BYTES = 16 << 30


def atomic_write(path: str, write) -> str:
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=folder)
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def save_npz(path: str, **arrays) -> str:
  """Writes arrays to `path` (.npz, uncompressed) atomically."""
  return atomic_write(path, lambda f: np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()}))


def save_json(path: str, obj: Any, *, sort_keys: bool = True) -> str:
  """Writes JSON to `path` atomically; NaN/Inf are refused (strict JSON)."""
  text = json.dumps(obj, indent=1, sort_keys=sort_keys, allow_nan=False)
  return atomic_write(path, lambda f: f.write(text.encode()))


def load_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise UserInputError(f"{path}: unreadable JSON: {e}") from e


def check_inside(path: str, root: str) -> str:
  """Real path of `path`; UserInputError if it (through symlinks) leaves `root`."""
  real, real_root = os.path.realpath(path), os.path.realpath(root)
  if os.path.commonpath([real, real_root]) != real_root:
    raise UserInputError(f"{path}: resolves to {real}, outside the data root {real_root}; refused.")
  return real


def check_name(name: str, what: str = "model name") -> str:
  """A name used as a folder/file name: no path separator, no '..', not empty."""
  if (not isinstance(name, str) or not name or ".." in name or "/" in name or "\\" in name
      or os.sep in name or name.startswith(".") or "\x00" in name):
    raise UserInputError(f"{what} {name!r} is not a safe file name (empty, '..', leading '.' "
                     "or a path separator); refused.")
  return name


def _refused(path: str, reason: str) -> BadInputError:
  """A user file the readers refuse (stage 'load')."""
  return BadInputError(path, reason, "load")


def _npy_header(f, path: str):
  try:
    version = np.lib.format.read_magic(f)
  except ValueError as e:
    raise _refused(path, f"not a .npy array (wrong magic bytes): {e}") from e
  try:
    if version == (1, 0):
      shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
      shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
      # pylint: disable-next=protected-access
      shape, fortran, dtype = np.lib.format._read_array_header(f, version)
  except (ValueError, SyntaxError) as e:
    raise _refused(path, f"corrupt .npy header: {e}") from e
  return shape, fortran, np.dtype(dtype)


def _check_dtype(dtype: np.dtype, path: str) -> None:
  if dtype.hasobject:
    raise _refused(path, f"holds Python objects (dtype {dtype}); loading it would unpickle "
                         "arbitrary code, refused (allow_pickle stays off). Save plain numeric "
                         "arrays.")
  if dtype.kind not in "biuf":
    raise _refused(path, f"dtype {dtype} is not a numeric array dtype.")


def _load_npy(path: str, max_bytes: int) -> np.ndarray:
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    shape, _, dtype = _npy_header(f, path)
    _check_dtype(dtype, path)
    need = math.prod(shape) * dtype.itemsize
    if need > max_bytes:
      raise _refused(path, f"header claims shape {shape} of {dtype} = {need} bytes, over the "
                           f"limit of {max_bytes} bytes; refused (pass max_bytes to raise "
                           "it).")
    have = size - f.tell()
    if have != need:
      raise _refused(path, f"header claims shape {shape} of {dtype} = {need} bytes but the "
                           f"file holds {have}; truncated or corrupt.")
  try:
    return np.load(path, allow_pickle=False)
  except (ValueError, OSError) as e:
    raise _refused(path, f"unreadable .npy: {e}") from e


def _load_npz(path: str, max_bytes: int) -> dict[str, np.ndarray]:
  try:
    zf = zipfile.ZipFile(path)
  except (zipfile.BadZipFile, OSError) as e:
    raise _refused(path, f"not a .npz archive (wrong magic or corrupt zip): {e}") from e
  out = {}
  with zf:
    total = 0
    for info in zf.infolist():
      total += info.file_size
      if total > max_bytes:
        raise _refused(path, f"archive expands to over {max_bytes} bytes (entry "
                             f"{info.filename}); decompression bomb refused.")
      if not info.filename.endswith(".npy"):
        raise _refused(path, f"entry {info.filename!r} is not a .npy array.")
      name = f"{path}[{info.filename[:-4]}]"
      try:
        with zf.open(info) as f:
          shape, _, dtype = _npy_header(f, name)
          _check_dtype(dtype, name)
          need = math.prod(shape) * dtype.itemsize
          if need + f.tell() != info.file_size:
            raise _refused(name, f"header claims {need} bytes but the entry holds "
                                 f"{info.file_size - f.tell()}; corrupt.")
        with zf.open(info) as f:
          out[info.filename[:-4]] = np.lib.format.read_array(f, allow_pickle=False)
      except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise _refused(name, f"corrupt archive entry: {e}") from e
  return out


def load_array(path: str, *, max_bytes: int = DEFAULT_MAX_BYTES, root: str | None = None):
  """Reads a .npy (-> ndarray) or .npz (-> dict of ndarrays) without ever unpickling.

  Every problem is a BadInputError naming the file (`path`): missing, not a regular file, wrong
  magic, corrupt or truncated header, object (pickled) arrays, non-numeric dtypes, sizes over
  `max_bytes` (decompression bombs); a symlink out of `root` (when given) is a UserInputError.
  """
  path = os.fspath(path)
  if root is not None:
    check_inside(path, root)
  if not os.path.exists(path):
    raise _refused(path, "no such file.")
  if not os.path.isfile(path):
    raise _refused(path, "not a regular file.")
  if path.endswith(".npy"):
    return _load_npy(path, max_bytes)
  if path.endswith(".npz"):
    return _load_npz(path, max_bytes)
  raise _refused(path, "expected a .npy or .npz file.")


def load_images(path: str, **kwargs) -> np.ndarray:
  """Images [N, H, W, C] from a .npy (or the 'images' entry of a .npz), checked.

  uint8 (0-255) or float in [0, 1], C in {1, 3}; NaN/Inf or out-of-range values are a
  BadInputError naming the file and the first bad image.
  """
  a = load_array(path, **kwargs)
  if isinstance(a, dict):
    if "images" not in a:
      raise _refused(path, f".npz has no 'images' entry (has {sorted(a)}).")
    a = a["images"]
  if a.ndim != 4 or a.shape[-1] not in (1, 3) or a.shape[0] == 0:
    raise _refused(path, f"expected images [N, H, W, C] with C in {{1, 3}} and N > 0; got "
                         f"shape {a.shape}.")
  if a.dtype == np.uint8:
    return a
  if a.dtype.kind != "f":
    raise _refused(path, f"images must be uint8 or float in [0, 1]; got dtype {a.dtype}.")
  flat = a.reshape(a.shape[0], -1)
  bad = ~np.all(np.isfinite(flat), axis=1)
  if bad.any():
    raise _refused(path, f"{int(bad.sum())} image(s) hold NaN or Inf, first at row "
                         f"{int(np.flatnonzero(bad)[0])}.")
  out = (flat.min(axis=1) < 0) | (flat.max(axis=1) > 1)
  if out.any():
    raise _refused(path, f"float images must lie in [0, 1]; row {int(np.flatnonzero(out)[0])} "
                         f"spans [{flat[out].min():.3g}, {flat[out].max():.3g}].")
  return a.astype(np.float32)
