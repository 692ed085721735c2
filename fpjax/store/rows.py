"""The one lazy view of rows, `RowSubset` (any rows, in any order, of an array-like, read on
demand: a store's good rows, a split, a sample), its zarr row source `ZarrRows`, and `FileList`
(the rows' file paths, held compactly).

A store hides the rows of bad files, so its row i is the array's row `rows[i]`; both views read
only what is asked for, which keeps a million-row store's analysis within memory.
"""
from __future__ import annotations

import collections.abc

import numpy as np

# The most bytes of array rows one scattered read (`ZarrRows[sorted rows]`) spans: bounds the
# chunks tensorstore holds decoded at once.
READ_SPAN_BYTES = 64 * 2 ** 20


class ZarrRows:
  """A zarr (tensorstore) array as the row source of a `RowSubset`: len(), shape, dtype, and
  `[a:b]` / `[sorted int array]` -> numpy, read on demand.

  Scattered rows (e.g. a stratified sample of the whole store) are read in pieces that span at
  most READ_SPAN_BYTES of the array's rows: tensorstore decodes every chunk one read touches
  before it copies the rows out, so a 10,000-row sample of a 1M-row store held ~0.5 GB of chunks
  at once in one read.
  """

  def __init__(self, array):
    self._array = array
    self.dtype = np.dtype(array.dtype.numpy_dtype)
    self.shape = tuple(array.shape)

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, key) -> np.ndarray:
    if isinstance(key, slice):
      a, b, _ = key.indices(len(self))
      return self._array[a:max(a, b)].read().result()
    phys = np.asarray(key, np.int64)
    if len(phys) == 0:
      return np.zeros((0, *self.shape[1:]), self.dtype)
    row_bytes = max(1, int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize)
    span = max(1, READ_SPAN_BYTES // row_bytes)
    if phys[-1] - phys[0] < span:
      return self._array[phys].read().result()
    out = np.empty((len(phys), *self.shape[1:]), self.dtype)
    i = 0
    while i < len(phys):
      j = int(np.searchsorted(phys, phys[i] + span, side="left"))
      out[i:j] = self._array[phys[i:j]].read().result()
      i = j
    return out


def store_rows(array, rows: np.ndarray) -> "RowSubset":
  """The rows `rows` (the store's good rows, increasing) of a zarr array, as the one lazy row
  view (`RowSubset`); no row map when every row is good."""
  rows = np.asarray(rows, np.int64)
  return RowSubset(ZarrRows(array), None if len(rows) == array.shape[0] else rows)


class FileList(collections.abc.Sequence):
  """The store's file paths (relative to gm_root), held as one numpy array of UTF-8 bytes.

  A Python list costs a str object and a pointer per image (~80 bytes for 'model_00/0000000.png');
  this costs the path's bytes (~20), which matters at millions of rows. Reads like a list of
  str (len, [i], [a:b], iteration) and compares equal to a list, tuple or FileList of the same
  paths.
  """

  def __init__(self, paths):
    encoded = [p.encode("utf-8") for p in paths]
    self._paths = np.array(encoded, dtype=bytes) if encoded else np.zeros(0, "S1")

  def __len__(self) -> int:
    return len(self._paths)

  def __getitem__(self, key):
    if isinstance(key, slice):
      out = FileList([])
      out._paths = self._paths[key]
      return out
    return self._paths[key].decode("utf-8")

  def __iter__(self):
    return (p.decode("utf-8") for p in self._paths)

  def __eq__(self, other):
    if isinstance(other, FileList):
      return len(self) == len(other) and bool(np.array_equal(self._paths, other._paths))
    if isinstance(other, (list, tuple)):
      return len(self) == len(other) and all(a == b for a, b in zip(self, other))
    return NotImplemented

  __hash__ = None

  def __repr__(self) -> str:
    head = ", ".join(repr(f) for f in self[:3])
    return f"FileList([{head}{', ...' if len(self) > 3 else ''}], {len(self)} paths)"



class RowSubset:
  """Rows `rows` (int indices into `base`, any order; None: every row) of an array-like `base`,
  read on demand: the evaluation's view of a split's or a sample's rows.

  `base` needs len(), .shape, .dtype and [sorted int array] / [a:b] -> np.ndarray (a
  `ZarrRows`, the evaluation's `SourceImages`, an ndarray). A view supports what the classifiers
  read: len(), .shape, .dtype, .ndim, [i], slices [a:b] and int or bool array indexing in any
  order (-> numpy; the base is always read in sorted order, a contiguous run as one slice), and
  `take` (a view of a view is one view of the base). `np.asarray(view)` reads every row.
  """

  def __init__(self, base, rows=None):
    self.base = base
    self.rows = None if rows is None else np.asarray(rows, np.int64)
    n = len(base) if self.rows is None else len(self.rows)
    self.shape = (n,) + tuple(base.shape[1:])
    self.dtype = np.dtype(base.dtype)
    self.ndim = len(self.shape)

  def __len__(self) -> int:
    return self.shape[0]

  def _read(self, idx: np.ndarray) -> np.ndarray:
    if idx.size == 0:
      return np.zeros((0,) + self.shape[1:], self.dtype)
    if idx[-1] - idx[0] + 1 == idx.size:  # contiguous: one slice read
      return np.asarray(self.base[int(idx[0]):int(idx[-1]) + 1])
    return np.asarray(self.base[idx])

  def __getitem__(self, key):
    if isinstance(key, (int, np.integer)):
      return self[np.array([key])][0]
    if isinstance(key, slice):
      pos = np.arange(len(self))[key]
    else:
      pos = np.asarray(key)
      if pos.dtype == bool:
        pos = np.flatnonzero(pos)
      pos = np.where(pos < 0, pos + len(self), pos)
      if pos.size and (pos.min() < 0 or pos.max() >= len(self)):
        raise IndexError(f'rows out of range for {len(self)} rows')
    idx = pos if self.rows is None else self.rows[pos]
    if idx.size > 1 and np.any(np.diff(idx) < 0):
      order = np.argsort(idx, kind='stable')
      out = np.empty((len(idx),) + self.shape[1:], self.dtype)
      out[order] = self._read(idx[order])
      return out
    return self._read(idx)

  def take(self, positions) -> 'RowSubset':
    """A view of the rows at `positions` of this view."""
    positions = np.asarray(positions, np.int64)
    return RowSubset(self.base, positions if self.rows is None else self.rows[positions])

  def __array__(self, dtype=None, copy=None):
    out = self[:]
    return out if dtype is None else out.astype(dtype)
