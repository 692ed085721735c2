"""Progress bars (tqdm, the one progress mechanism) and metrics as JSON lines from process 0.

Long jobs on pods are read through their logs: `Progress` is a tqdm bar on stderr, refreshed at
most every `log_every_s` seconds, that shows on process 0 only and takes a note per update
(`update(1, note='rgb nn: 91.2%')`). `MetricWriter` appends {"step": ..., "time": ..., name:
value} lines to WORKDIR/metrics.jsonl (big_vision's convention) and, when tensorboardX is
installed, the same scalars to TensorBoard. Only process 0 writes; the others' writers are no-ops.
"""
from __future__ import annotations

import json
import os
import time

import tqdm

from fpjax import parallel


class Progress(tqdm.tqdm):
  """A tqdm bar with fpjax's defaults: `done` units so far, `rate` in units per second of this
  run (a resumed run's earlier work, `initial`, counts in the fraction but not in the rate)."""

  def __init__(self, total: int, *, unit: str = "images", desc: str = "", initial: int = 0,
               log_every_s: float = 10.0, enabled: bool | None = None):
    enabled = parallel.is_chief() if enabled is None else enabled
    super().__init__(total=int(total), unit=unit, desc=desc, initial=int(initial),
                     mininterval=log_every_s, smoothing=0.0, disable=not enabled)
    self.done = self.initial = int(initial)
    self._t0 = time.perf_counter()

  @property
  def rate(self) -> float:
    """Units per second in this run."""
    elapsed = time.perf_counter() - self._t0
    return (self.done - self.initial) / elapsed if elapsed > 0 else 0.0

  def update(self, n: int = 1, note: str = "") -> None:  # pylint: disable=arguments-renamed
    """Counts n more units; `note` is shown after the bar."""
    self.done += int(n)
    if note:
      self.set_postfix_str(note, refresh=False)
    super().update(int(n))
    if self.done >= self.total:
      self.close()


class MetricWriter:
  """Appends scalars to WORKDIR/metrics.jsonl (and TensorBoard) on process 0 only."""

  def __init__(self, workdir: str, *, enabled: bool | None = None, tensorboard: bool = True):
    self.enabled = parallel.is_chief() if enabled is None else enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      if tensorboard:
        try:
          import tensorboardX  # pylint: disable=g-import-not-at-top  (optional dependency)
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
