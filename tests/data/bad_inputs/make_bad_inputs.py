"""Generates tests/data/bad_inputs/: bad .npy/.npz arrays and bad zoo workdirs.

Run from the repository root: python tests/data/bad_inputs/make_bad_inputs.py
Image-file cases (decompression-bomb PNG, CMYK JPEG, 16-bit PNG, truncated, '..' folder names)
live in tests/data/bad_images/ (made by tests/data/make_bad_images.py) and are reused, not copied.
Symlinks out of the data root are made at test time (git does not keep them portably).
"""
import io
import json
import os
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _header_only_npy(path, shape, dtype='<f4'):
  """A valid .npy header claiming `shape` followed by a few bytes: a decompression bomb."""
  with open(path, 'wb') as f:
    np.lib.format.write_array_header_1_0(
        f, {'descr': dtype, 'fortran_order': False, 'shape': shape})
    f.write(b'\0' * 64)


def main():
  rng = np.random.default_rng(0)
  images = rng.random((4, 8, 8, 1), dtype=np.float32)
  ok = images.copy()
  np.save(os.path.join(HERE, 'good_float.npy'), ok)
  nan = images.copy(); nan[2, 3, 4, 0] = np.nan
  np.save(os.path.join(HERE, 'nan.npy'), nan)
  np.save(os.path.join(HERE, 'out_of_range.npy'), images * 3)
  obj = np.empty(2, dtype=object); obj[0] = {'a': 1}; obj[1] = [1, 2]
  np.save(os.path.join(HERE, 'pickled.npy'), obj, allow_pickle=True)
  with open(os.path.join(HERE, 'wrong_magic.npy'), 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n' + b'\0' * 120)
  buf = io.BytesIO(); np.save(buf, ok)
  with open(os.path.join(HERE, 'truncated.npy'), 'wb') as f:
    f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
  _header_only_npy(os.path.join(HERE, 'bomb.npy'), (10 ** 6, 256, 256, 3))
  # 64 MiB of zeros compress to ~64 KiB: refused under a smaller max_bytes (the tests use 1 MiB).
  with zipfile.ZipFile(os.path.join(HERE, 'bomb.npz'), 'w', zipfile.ZIP_DEFLATED) as zf:
    with zf.open('images.npy', 'w', force_zip64=True) as f:
      np.lib.format.write_array_header_1_0(
          f, {'descr': '|u1', 'fortran_order': False, 'shape': (1 << 20, 8, 8, 1)})
      chunk = b'\0' * (1 << 20)
      for _ in range(64):
        f.write(chunk)
  np.savez(os.path.join(HERE, 'pickled.npz'), ok=ok, obj=obj)  # savez keeps object arrays
  np.save(os.path.join(HERE, 'wrong_rank.npy'), np.zeros((4, 8, 8), np.uint8))
  np.save(os.path.join(HERE, 'strings.npy'), np.array(['a', 'b']))
  for case, name in (('zoo_dotdot_name', '../escape'), ('zoo_separator_name', 'gan/evil')):
    root = os.path.join(HERE, case)
    os.makedirs(os.path.join(root, 'images'), exist_ok=True)
    with open(os.path.join(root, 'zoo.json'), 'w') as f:
      json.dump({'real': 'digits', 'models': [{'name': name}]}, f)
    open(os.path.join(root, 'images', '.keep'), 'w').close()
  print('wrote', HERE)


if __name__ == '__main__':
  main()
