"""Progress with rate and ETA, and metrics as JSON lines (and TensorBoard) from process 0.

Long jobs on pods are read through their logs: `Progress` logs one absl INFO line every
`log_every_s` seconds ("12,288/50,000 images (24.6%), 3,410 images/s, ETA 11 s"), and
`MetricWriter` appends {"step": ..., "time": ..., name: value} lines to WORKDIR/metrics.jsonl
(big_vision's convention) and, when tensorboardX is installed, the same scalars to TensorBoard.
Only process 0 writes; the others' writers are no-ops.
"""
from __future__ import annotations

import json
import os
import time

from absl import logging
import jax


def _fmt_seconds(s: float) -> str:
  if s != s or s == float("inf"):
    return "?"
  s = int(round(s))
  h, rem = divmod(s, 3600)
  m, sec = divmod(rem, 60)
  return f"{h}h{m:02d}m{sec:02d}s" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


class Progress:
  """Counts work done; `rate` and `eta` are measured from this run's start (a resumed run's
  earlier work, `initial`, is counted in the fraction but not in the rate)."""

  def __init__(self, total: int, *, unit: str = "images", desc: str = "", initial: int = 0,
               log_every_s: float = 10.0, enabled: bool | None = None):
    self.total, self.unit, self.desc = int(total), unit, desc
    self.done = self.initial = int(initial)
    self.log_every_s = log_every_s
    self.enabled = (jax.process_index() == 0) if enabled is None else enabled
    self.start = self._last_log = time.perf_counter()

  @property
  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  @property
  def rate(self) -> float:
    """Units per second in this run."""
    e = self.elapsed
    return (self.done - self.initial) / e if e > 0 else 0.0

  @property
  def eta(self) -> float:
    r = self.rate
    return (self.total - self.done) / r if r > 0 else float("inf")

  def line(self) -> str:
    pct = 100.0 * self.done / self.total if self.total else 100.0
    return (f"{self.desc}{': ' if self.desc else ''}{self.done:,}/{self.total:,} {self.unit} "
            f"({pct:.1f}%), {self.rate:,.0f} {self.unit}/s, ETA {_fmt_seconds(self.eta)}")

  def update(self, n: int, force: bool = False, note: str = "") -> None:
    """Counts n more units; logs a line (with `note` after it) when one is due."""
    self.done += int(n)
    now = time.perf_counter()
    if self.enabled and (force or now - self._last_log >= self.log_every_s
                         or self.done >= self.total):
      self._last_log = now
      logging.info("%s%s", self.line(), f"  {note}" if note else "")


class MetricWriter:
  """Appends scalars to WORKDIR/metrics.jsonl (and TensorBoard) on process 0 only."""

  def __init__(self, workdir: str, *, enabled: bool | None = None, tensorboard: bool = True):
    self.enabled = (jax.process_index() == 0) if enabled is None else enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      if tensorboard:
        try:
          import tensorboardX  # pylint: disable=g-import-not-at-top
          self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))
        except ImportError:
          pass  # optional: JSON lines are always written

  def write(self, step: int, **scalars) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), "time": time.time()}
    record.update({k: (float(v) if isinstance(v, (int, float)) or hasattr(v, "__float__") else v)
                   for k, v in scalars.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for k, v in scalars.items():
        if isinstance(v, (int, float)):
          self._tb.add_scalar(k, v, step)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def read_metrics(path: str) -> list[dict]:
  """The records of a metrics.jsonl file (a torn last line from a killed run is skipped)."""
  out = []
  with open(path) as f:
    for line in f:
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return out
