"""Module checkpoints: <path>/config.json (everything needed to rebuild the module) and
<path>/state (an orbax StandardCheckpointer of the nnx state plus extra arrays)."""
from __future__ import annotations

import json
import os
from typing import Callable

from flax import nnx
import jax
import numpy as np
import orbax.checkpoint as ocp

from fpjax import parallel


def save_checkpoint(path: str, model: nnx.Module, config: dict,
                    extra: dict[str, np.ndarray] | None = None) -> None:
  path = os.path.abspath(os.fspath(path))
  os.makedirs(path, exist_ok=True)
  tree = {'model': nnx.state(model),
          'extra': {k: np.asarray(v) for k, v in (extra or {}).items()}}
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.join(path, 'state'), tree, force=True)
    ckptr.wait_until_finished()
  if parallel.is_chief():
    with open(os.path.join(path, 'config.json'), 'w') as f:
      json.dump(config, f, indent=1, sort_keys=True)


def read_config(path: str) -> dict:
  cfg = os.path.join(os.path.abspath(os.fspath(path)), 'config.json')
  if not os.path.exists(cfg):
    raise ValueError(f'{cfg}: no config.json; not a checkpoint written by fpjax')
  with open(cfg) as f:
    return json.load(f)


def load_checkpoint(path: str, build_fn: Callable[[], nnx.Module],
                    extra_like: dict[str, jax.ShapeDtypeStruct] | None = None):
  """Restores a module built by ``build_fn`` (shapes only, no init cost) and the extra arrays."""
  path = os.path.abspath(os.fspath(path))
  abstract = nnx.eval_shape(build_fn)
  graphdef, abstract_state = nnx.split(abstract)
  target = {'model': abstract_state, 'extra': dict(extra_like or {})}
  with ocp.StandardCheckpointer() as ckptr:
    restored = ckptr.restore(os.path.join(path, 'state'), target)
  model = nnx.merge(graphdef, restored['model'])
  extra = {k: np.asarray(v) for k, v in restored['extra'].items()}
  return model, extra
