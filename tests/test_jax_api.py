"""docs/jax_api.md runs as written: its Python code executes, and its search results equal a
float64 numpy brute force (indices equal, squared distances close)."""
import os
import re

import numpy as np

DOC = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "jax_api.md")


def _code_blocks(path):
  with open(path, encoding="utf-8") as f:
    return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def test_the_page_runs_and_matches_float64_brute_force():
  blocks = _code_blocks(DOC)
  assert blocks, "no python code block in docs/jax_api.md"
  namespace = {"__name__": "jax_api_doc"}
  for block in blocks:
    exec(compile(block, DOC, "exec"), namespace)  # pylint: disable=exec-used
  bank = namespace["bank"].astype(np.float64)
  queries = namespace["queries"].reshape(-1, bank.shape[1]).astype(np.float64)
  d2 = ((queries[:, None, :] - bank[None]) ** 2).sum(-1)
  ref_idx = np.argsort(d2, axis=1, kind="stable")[:, :5]
  idx = np.asarray(namespace["idx"]).reshape(-1, 5)
  sq_dist = np.asarray(namespace["sq_dist"]).reshape(-1, 5)
  np.testing.assert_array_equal(idx, ref_idx)
  np.testing.assert_allclose(sq_dist, np.take_along_axis(d2, ref_idx, 1), rtol=1e-5)
  assert np.asarray(namespace["certified"]).mean() > 0.95
  labels = namespace["labels"].reshape(-1)
  np.testing.assert_array_equal(np.asarray(namespace["fingerprint"]["count"]),
                                np.bincount(labels, minlength=3))
