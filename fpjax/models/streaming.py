"""Streaming over array-likes: contiguous slices only, never the whole array.

``x`` may be a numpy array or any array-like with ``__len__``, ``.shape``, ``.dtype`` and
contiguous slicing ``x[a:b] -> array`` (e.g. a lazy on-disk array): finiteness checks and
moments go a slice at a time, training minibatches come from a shuffle buffer
(:func:`shuffled_minibatches`), so memory is bounded by the buffer, not N.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from fpjax.stats import merge_moments

# Shuffle buffer: blocks of BLOCK_ROWS contiguous rows, BUFFER_BLOCKS blocks per buffer
# (65,536 rows read and shuffled together).
BLOCK_ROWS = 4096
BUFFER_BLOCKS = 16


def as_rows(x):
  """x itself if it is array-like enough to stream (len, shape, dtype, slicing), else
  np.asarray(x)."""
  if all(hasattr(x, a) for a in ('__len__', 'shape', 'dtype', '__getitem__')):
    return x
  return np.asarray(x)


class MappedRows:
  """The array-like ``fn(x[a:b])`` of an array-like x, computed one slice at a time.

  Used to reshape, cast and standardise inputs lazily: ``fn`` maps a numpy block of x's rows
  to a block of the same number of rows of shape ``shape[1:]``.
  """

  def __init__(self, x, fn: Callable[[np.ndarray], np.ndarray], shape, dtype=np.float32):
    self.x, self.fn = x, fn
    self.shape = (int(x.shape[0]),) + tuple(int(s) for s in shape[1:])
    self.dtype = np.dtype(dtype)

  def __len__(self):
    return self.shape[0]

  def __getitem__(self, s):
    if not isinstance(s, slice) or s.step not in (None, 1):
      raise TypeError(f'MappedRows supports contiguous slices x[a:b] only, got {s!r}')
    return np.asarray(self.fn(np.asarray(self.x[s])), self.dtype)


def iter_slices(x, block_rows: int = BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
  """(start, x[start:start+block_rows] as numpy) over x, in order."""
  for a in range(0, int(x.shape[0]), int(block_rows)):
    yield a, np.asarray(x[a:a + int(block_rows)])


def _rows_ok(chunk: np.ndarray) -> np.ndarray:
  return np.isfinite(chunk.reshape(chunk.shape[0], -1)).all(axis=1)


def check_finite(x, what: str, block_rows: int = BLOCK_ROWS) -> None:
  """Raises ValueError naming the first row with NaN or inf (a streamed pass over x)."""
  for a, chunk in iter_slices(x, block_rows):
    ok = _rows_ok(chunk)
    if not ok.all():
      raise ValueError(f'{what}: row {a + int(np.argmin(ok))} contains NaN or inf')


def streamed_moments(x, what: str, *, per_feature: bool, block_rows: int = BLOCK_ROWS):
  """Mean and standard deviation (ddof 0) of x in float64, in one streamed pass over slices.

  per_feature: over rows, one value per feature of x.reshape(N, -1); otherwise one scalar
  over all elements. Slices are merged with Chan et al.'s pairwise update
  (`fpjax.stats.merge_moments`: no sum-of-squares cancellation). Raises ValueError naming
  the first row with NaN or inf.
  """
  count, mean, m2 = 0, 0.0, 0.0
  for a, chunk in iter_slices(x, block_rows):
    ok = _rows_ok(chunk)
    if not ok.all():
      raise ValueError(f'{what}: row {a + int(np.argmin(ok))} contains NaN or inf')
    c = chunk.reshape(chunk.shape[0], -1).astype(np.float64)
    if not per_feature:
      c = c.reshape(-1, 1)
    nc = c.shape[0]
    mc = c.mean(0)
    m2c = np.square(c - mc).sum(0)
    count, mean, m2 = merge_moments(count, mean, m2, nc, mc, m2c)
  if count == 0:
    raise ValueError(f'{what}: got 0 rows')
  mean, std = np.asarray(mean), np.sqrt(np.asarray(m2) / count)
  return (mean, std) if per_feature else (float(mean[0]), float(std[0]))


def shuffled_minibatches(x, rows: np.ndarray, batch_size: int, rng: np.random.Generator, *,
                         block_rows: int = BLOCK_ROWS, buffer_blocks: int = BUFFER_BLOCKS,
                         ) -> Iterator[np.ndarray]:
  """One epoch of minibatches (as row indices into x, with the rows) through a shuffle buffer.

  The rows 0..N-1 of x are cut into contiguous blocks of ``block_rows``; the blocks are
  visited in a random order, ``buffer_blocks`` at a time (in increasing order within a
  buffer); of each buffer the rows listed in ``rows`` are shuffled and cut into minibatches
  of ``batch_size``; the rows left over (< batch_size) join the next buffer. So every listed
  row is used at most once per epoch, floor(len(rows) / batch_size) minibatches are yielded,
  and when N <= block_rows * buffer_blocks it is one full shuffle of the rows.
  Memory: one buffer array, allocated once per epoch and refilled in place one block read at
  a time, so the host holds the buffer plus one block (not a concatenated copy of the buffer).
  Yields (row indices [b], x rows [b, ...]) (copies: the buffer may be refilled later).
  """
  n = int(x.shape[0])
  block_rows, buffer_blocks, batch_size = int(block_rows), int(buffer_blocks), int(batch_size)
  wanted = np.zeros(n, bool)
  wanted[rows] = True
  nblocks = -(-n // block_rows)
  order = rng.permutation(nblocks)
  buf_x = None
  buf_idx = np.empty(min(n, block_rows * buffer_blocks + batch_size), np.int64)
  held = 0  # rows carried over from the previous buffer, at the front of buf_x / buf_idx
  for g in range(0, nblocks, buffer_blocks):
    filled = held
    for c in np.sort(order[g:g + buffer_blocks]):
      a, b = int(c) * block_rows, min(n, (int(c) + 1) * block_rows)
      sel = np.flatnonzero(wanted[a:b])
      if len(sel) == 0:
        continue
      chunk = np.asarray(x[a:b])
      if buf_x is None:
        buf_x = np.empty((len(buf_idx),) + chunk.shape[1:], chunk.dtype)
      dst = slice(filled, filled + len(sel))
      if len(sel) == b - a:
        buf_x[dst] = chunk
      else:
        np.take(chunk, sel, axis=0, out=buf_x[dst])
      buf_idx[dst] = a + sel
      filled += len(sel)
      del chunk
    if filled == 0:
      continue
    perm = rng.permutation(filled)
    full = filled // batch_size
    for k in range(full):
      p = perm[k * batch_size:(k + 1) * batch_size]
      yield buf_idx[p], buf_x[p]
    rest = perm[full * batch_size:]
    held = len(rest)
    buf_x[:held], buf_idx[:held] = buf_x[rest], buf_idx[rest]


def selected_chunks(x, rows: np.ndarray | None, read_rows: int) -> Iterator[np.ndarray]:
  """x in slices of read_rows (with ``rows``, sorted indices: only those rows, in order)."""
  if rows is None:
    for _, chunk in iter_slices(x, read_rows):
      yield chunk
    return
  rows = np.asarray(rows)
  for a, chunk in iter_slices(x, read_rows):
    lo, hi = np.searchsorted(rows, [a, a + len(chunk)])
    if hi > lo:
      yield chunk[rows[lo:hi] - a]
