"""Generates tests/data/bad_images/: one small folder tree per bad-input case.

Run from the repository root: python tests/data/make_bad_images.py
Each case is a root folder `<case>/<model>/...` that load_image_folder either converts (documented)
or refuses with a ValueError naming the file. Symlink cases are made at test time (tmp_path),
as are empty model folders: git keeps neither symlinks portably nor empty folders.
"""
import io
import os
import shutil
import struct
import zlib

import numpy as np
from PIL import Image

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'bad_images')


def _png(path, arr, mode=None, **kw):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(arr, mode) if mode else Image.fromarray(arr)
  (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(path, **kw)


def _good(root, model='good', n=2, size=8):
  rng = np.random.default_rng(0)
  for i in range(n):
    _png(os.path.join(root, model, f'{i}.png'), rng.integers(0, 256, (size, size), np.uint8))


def _bomb_png(path, width, height):
  """A valid 1-bit PNG header claiming width x height pixels, with a tiny compressed body."""
  def chunk(tag, data):
    return struct.pack('>I', len(data)) + tag + data + struct.pack('>I', zlib.crc32(tag + data))
  row = b'\x00' + b'\x00' * ((width + 7) // 8)
  body = zlib.compress(row * height, 9)
  ihdr = struct.pack('>IIBBBBB', width, height, 1, 0, 0, 0, 0)
  with open(path, 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', body) + chunk(b'IEND', b''))


def main():
  shutil.rmtree(HERE, ignore_errors=True)
  rng = np.random.default_rng(0)
  grey = rng.integers(0, 256, (8, 8), np.uint8)
  rgb = rng.integers(0, 256, (8, 8, 3), np.uint8)

  # --- refused: ValueError naming the file
  root = os.path.join(HERE, 'unreadable'); _good(root)
  with open(os.path.join(root, 'good', 'x_garbage.png'), 'wb') as f:
    f.write(b'this is not an image at all')
  root = os.path.join(HERE, 'truncated'); _good(root)
  buf = io.BytesIO(); Image.fromarray(rgb).save(buf, 'PNG')
  with open(os.path.join(root, 'good', 'x_truncated.png'), 'wb') as f:
    f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
  root = os.path.join(HERE, 'zero_byte'); _good(root)
  open(os.path.join(root, 'good', 'x_empty.png'), 'wb').close()
  root = os.path.join(HERE, 'mixed_resolution'); _good(root)
  _png(os.path.join(root, 'good', 'x_big.png'), rng.integers(0, 256, (12, 10), np.uint8))
  root = os.path.join(HERE, 'bomb'); _good(root)
  _bomb_png(os.path.join(root, 'good', 'x_bomb.png'), 14000, 14000)  # 1.96e8 pixels > Pillow limit
  root = os.path.join(HERE, 'not_an_image'); _good(root)
  with open(os.path.join(root, 'good', 'notes.txt'), 'w') as f:
    f.write('stray file')
  root = os.path.join(HERE, 'dotdot_name'); _good(root, model='a..b')

  # --- converted (documented)
  root = os.path.join(HERE, 'conversions')
  m = os.path.join(root, 'colour')
  _png(os.path.join(m, 'rgb.png'), rgb)
  _png(os.path.join(m, 'rgba.png'), np.dstack([rgb, np.full((8, 8), 128, np.uint8)]))
  pal = Image.fromarray(rgb).convert('P', palette=Image.Palette.ADAPTIVE, colors=16)
  pal.save(os.path.join(m, 'palette.png'))
  pal_t = pal.copy(); pal_t.info['transparency'] = 0; pal_t.save(os.path.join(m, 'palette_alpha.png'), transparency=0)
  Image.fromarray(rgb).convert('CMYK').save(os.path.join(m, 'cmyk.jpg'), quality=95)
  g = os.path.join(root, 'grey')
  _png(os.path.join(g, 'grey.png'), grey)
  _png(os.path.join(g, 'grey_alpha.png'), np.dstack([grey, np.full((8, 8), 7, np.uint8)]), 'LA')
  Image.fromarray(grey.astype(np.uint16) * 257).save(os.path.join(g, 'grey16.png'))
  Image.fromarray(grey).save(os.path.join(g, 'grey.jpeg'), quality=95)
  print('wrote', HERE)


if __name__ == '__main__':
  main()
