"""Lazy views of a store's rows: `LazyRows` (rows of a zarr array, read on demand) and
`FileList` (the rows' file paths, held compactly), and `RowSubset` (any rows, in any order, of
such an array-like: what the evaluation's classifiers read).

A store hides the rows of bad files, so its row i is the array's row `rows[i]`; both views read
only what is asked for, which keeps a million-row store's analysis within memory.
"""
from __future__ import annotations

import collections.abc

import numpy as np

# The most bytes of array rows one scattered read (`LazyRows[sorted rows]`) spans: bounds the
# chunks tensorstore holds decoded at once.
READ_SPAN_BYTES = 64 * 2 ** 20


class LazyRows:
  """Rows of a zarr array, read on demand: len(), shape, dtype, ndim, `[a:b]`, `[sorted int
  array]`, `[i]`, and np.asarray (reads everything). `rows` maps its row i to the array's row
  rows[i] (the good rows of the store), increasing."""

  def __init__(self, array, rows: np.ndarray):
    self._array = array
    self._rows = np.asarray(rows, np.int64)
    self._identity = len(self._rows) == array.shape[0]  # no bad rows: row i is array row i
    self.dtype = np.dtype(array.dtype.numpy_dtype)
    self.shape = (len(self._rows), *array.shape[1:])
    self.ndim = len(self.shape)

  def __len__(self) -> int:
    return self.shape[0]

  def _read(self, phys: np.ndarray) -> np.ndarray:
    if len(phys) == 0:
      return np.zeros((0, *self.shape[1:]), self.dtype)
    if phys[-1] - phys[0] + 1 == len(phys):  # one contiguous run: a plain slice
      return self._array[int(phys[0]):int(phys[-1]) + 1].read().result()
    # Scattered rows (e.g. a stratified sample of the whole store): tensorstore decodes every
    # chunk that one read touches before it copies the rows out, so a 10,000-row sample of a
    # 1M-row store held ~0.5 GB of chunks at once. Read in pieces that span at most
    # READ_SPAN_BYTES of the array's rows, into one output.
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

  def __getitem__(self, key) -> np.ndarray:
    if isinstance(key, (int, np.integer)):
      i = int(key) + (len(self) if key < 0 else 0)
      if not 0 <= i < len(self):
        raise IndexError(f"row {key} out of range for {len(self)} rows")
      return self._read(self._rows[i:i + 1])[0]
    if isinstance(key, slice):
      a, b, step = key.indices(len(self))
      if step != 1:
        raise IndexError("LazyRows takes contiguous slices (step 1) or sorted row arrays")
      if self._identity:
        return self._read(np.arange(a, max(a, b)))
      return self._read(self._rows[a:b])
    idx = np.asarray(key)
    if idx.dtype == bool:
      idx = np.flatnonzero(idx)
    if idx.ndim != 1 or idx.dtype.kind not in "iu":
      raise IndexError(f"LazyRows takes an int, a slice or a 1-D array of rows; got {key!r}")
    if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
      raise IndexError(f"rows out of range for {len(self)} rows")
    if np.any(np.diff(idx) < 0):
      raise IndexError("row arrays must be sorted (read in storage order)")
    return self._read(self._rows[idx])

  def __array__(self, dtype=None, copy=None):
    out = self[0:len(self)]
    return out if dtype is None else out.astype(dtype)


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
  `LazyRows`, the evaluation's `SourceImages`, an ndarray). A view supports what the classifiers
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
