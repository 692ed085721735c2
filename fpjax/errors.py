"""The user-facing error classes, and the exit status a binary gives each.

  UserInputError        input fpjax refuses (flag value, file, folder, dataset name)    exit 2
    BadInputError       one user file that cannot be used (`path`, `reason`, `stage`)  exit 2
    ConfigMismatchError a work directory holds a run of another configuration          exit 2
    StoreError          an artifact store that cannot be read (`path`: the file at fault) exit 2
  Preempted             SIGTERM: the job checkpointed its work; rerun to resume        exit 143

Binaries turn a UserInputError into one line on stderr and exit status 2; anything else is a
bug and keeps its traceback (exit 1).
"""
from __future__ import annotations


class UserInputError(ValueError):
  """Input from the user that fpjax refuses (a bad flag value, file, folder or dataset name).

  Binaries turn it into one line on stderr and exit status 2 (fpjax.bin.flags.run); anything
  else is a bug and keeps its traceback (exit 1).
  """


class BadInputError(UserInputError):
  """One user file that cannot be used; `path` and `reason` (the message is 'path: reason').

  `stage` says where it was met: 'list' (listing a folder), 'decode' (reading an image),
  'real' (an image of a real-bank folder), 'load' (reading an array file).
  """

  def __init__(self, path: str, reason: str, stage: str = "decode"):
    super().__init__(f"{path}: {reason}")
    self.path, self.reason, self.stage = path, reason, stage


class ConfigMismatchError(UserInputError):
  """`workdir` holds a run (finished or checkpointed) made with another configuration; resuming
  it would mix two runs: use another work directory."""

  def __init__(self, message: str, workdir: str):
    super().__init__(message)
    self.workdir = workdir


class StoreError(UserInputError):
  """An artifact store that cannot be read: unfinished, of another format, or inconsistent.
  `path` is the file or folder at fault."""

  def __init__(self, message: str, path: str):
    super().__init__(message)
    self.path = path


class Preempted(RuntimeError):
  """Raised after a SIGTERM once the state is checkpointed; rerun with the same work directory
  to resume. Binaries exit with status 143 (128 + SIGTERM) so a scheduler sees an interrupted
  job. `workdir` and `batches_done` say where the work stands."""

  def __init__(self, message: str, workdir: str = "", batches_done: int = 0):
    super().__init__(message)
    self.workdir, self.batches_done = workdir, batches_done
