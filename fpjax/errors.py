"""The user-facing error classes.

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
  """One user file that cannot be used; `path` and `reason` (the message is 'path: reason')."""

  def __init__(self, path: str, reason: str, stage: str = "decode"):
    super().__init__(f"{path}: {reason}")
    self.path, self.reason, self.stage = path, reason, stage
