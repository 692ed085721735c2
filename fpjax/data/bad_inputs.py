"""The bad-input list: skipped user files in WORKDIR/bad_inputs.jsonl, and --on_bad_input."""
from __future__ import annotations

import json
import os
import sys

import tqdm

from fpjax.errors import BadInputError, UserInputError
from fpjax.fileio import atomic_write

BAD_INPUTS = "bad_inputs.jsonl"


class BadInputs:
  """The list of skipped user files, WORKDIR/bad_inputs.jsonl, and the --on_bad_input policy.

  `record` prints one line to stderr and appends one JSON line (path, reason, stage, row) to the
  file at once, so a killed run keeps what it found. With policy 'skip' the caller goes on
  without the file; with 'fail' `record` returns False and the caller stops (after saving what
  is computed) by raising `error()`. Several processes may append to one list: each line is
  one write() to a file opened with O_APPEND.
  """

  POLICIES = ("skip", "fail")

  def __init__(self, workdir: str, policy: str = "skip", *, write: bool = True,
               echo: bool = True, prefix: str = "fpjax"):
    if policy not in self.POLICIES:
      raise UserInputError(f"--on_bad_input={policy!r}: expected one of {self.POLICIES}.")
    self.path = os.path.join(os.path.abspath(workdir), BAD_INPUTS)
    self.policy, self.write, self.echo, self.prefix = policy, write, echo, prefix
    self.found: list[dict] = []  # recorded by this process in this run

  @property
  def skip(self) -> bool:
    return self.policy == "skip"

  def record(self, path: str, reason: str, stage: str, row: int | None = None) -> bool:
    """Lists one bad file; True if the caller should skip it and go on (policy 'skip')."""
    entry = {"path": str(path), "reason": str(reason), "stage": stage}
    if row is not None:
      entry["row"] = int(row)
    self.found.append(entry)
    if self.echo:
      action = "skipped" if self.skip else "stopping at"
      # tqdm.write: a line of its own even while a progress bar is drawn on stderr.
      tqdm.tqdm.write(f"{self.prefix}: {action} bad input ({stage}): {path}: {reason}",
                      file=sys.stderr)
    if self.write:
      os.makedirs(os.path.dirname(self.path), exist_ok=True)
      line = (json.dumps(entry, sort_keys=True) + "\n").encode()
      fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
      try:
        os.write(fd, line)
      finally:
        os.close(fd)
    return self.skip

  def error(self) -> BadInputError:
    """The error that stops a run under --on_bad_input=fail (names the last bad file found)."""
    first = self.found[-1]
    return BadInputError(first["path"], first["reason"] + " (--on_bad_input=fail; use "
                         "--on_bad_input=skip to skip and list bad files)", first["stage"])

  def keep_only(self, keep) -> None:
    """Rewrites the list with the entries for which keep(entry) is true (a resumed run drops
    what it will find again). Call on one process, before the others append."""
    entries = read_bad_inputs(os.path.dirname(self.path))
    kept = [e for e in entries if keep(e)]
    if kept or os.path.exists(self.path):
      text = "".join(json.dumps(e, sort_keys=True) + "\n" for e in kept)
      atomic_write(self.path, lambda f: f.write(text.encode()))


def read_bad_inputs(workdir: str) -> list[dict]:
  """Entries of WORKDIR/bad_inputs.jsonl, without repeats (a torn last line is skipped)."""
  path = os.path.join(workdir, BAD_INPUTS)
  out, seen = [], set()
  if not os.path.exists(path):
    return out
  with open(path) as f:
    for line in f:
      try:
        e = json.loads(line)
      except json.JSONDecodeError:
        continue
      key = (e.get("path"), e.get("stage"), e.get("row"))
      if isinstance(e, dict) and key not in seen:
        seen.add(key)
        out.append(e)
  return out
