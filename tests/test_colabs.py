"""Every notebook in colabs/ runs top to bottom in SMALL mode (FPJAX_COLAB_SMALL=1), and computes
what it says: after the notebook's own cells, a check cell (added here, not in the notebook)
prints the values it computed as one JSON line, which the test compares with independent
references (norms of its artifacts, per-model means, counts)."""
import json
import os

import nbformat
import pytest
from nbclient import NotebookClient

COLABS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "colabs")
NOTEBOOKS = ["quickstart.ipynb", "fingerprint_anatomy.ipynb", "your_data_at_scale.ipynb"]
SMALL_MODELS, SMALL_PER_MODEL = 5, {"quickstart.ipynb": 60, "fingerprint_anatomy.ipynb": 60,
                                   "your_data_at_scale.ipynb": 40}

# What each notebook computed, checked against references computed from its own variables.
CHECKS = {
    "quickstart.ipynb": """
flat = artifact.reshape(len(artifact), -1)
CHECK = dict(names=list(names), counts=np.bincount(labels).tolist(),
             accuracy=float(probe.score(artifact[te], labels[te])),
             # the distance to the manifold is the norm of the (nn) artifact
             norm_gap=float(np.max(np.abs(np.linalg.norm(flat, axis=1) - distance))),
             finite=bool(np.isfinite(flat).all()),
             fdr=float(fpjax.fisher_discriminant_ratio(artifact, labels)))
""",
    "fingerprint_anatomy.ipynb": """
whole = np.asarray(p.artifact, np.float64)
CHECK = dict(names=list(names), counts=np.asarray(fp['count']).astype(int).tolist(),
             # the streamed per-model mean against numpy's over the same artifacts
             mean_gap=float(max(np.max(np.abs(np.asarray(fp['mean'][k], np.float64)
                                              - whole[labels == k].mean(0)))
                                for k in range(len(names)))),
             fdr=float(fp['fdr']),
             hist_total=float(np.asarray(fp['distance_hist']).sum()))
""",
    "your_data_at_scale.ipynb": """
CHECK = dict(names=[m['name'] for m in summary['models']],
             counts=[int(m['count']) for m in summary['models']],
             rows=int(store.artifact.shape[0]), labels=np.bincount(store.labels).tolist(),
             metrics=len(open(os.path.join(out, 'metrics.jsonl')).readlines()),
             bad=(len(open(os.path.join(out, 'bad_inputs.jsonl')).readlines())
                  if os.path.exists(os.path.join(out, 'bad_inputs.jsonl')) else 0))
""",
}


def _run(name, tmp_path, monkeypatch) -> dict:
  monkeypatch.setenv("FPJAX_COLAB_SMALL", "1")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  nb = nbformat.read(os.path.join(COLABS, name), as_version=4)
  assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "strip outputs"
  assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells)
  nb.cells.append(nbformat.v4.new_code_cell(
      "import json\n" + CHECKS[name] + "print('CHECK ' + json.dumps(CHECK))"))
  NotebookClient(nb, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  lines = [line for o in nb.cells[-1].outputs if o.get("name") == "stdout"
           for line in o["text"].splitlines() if line.startswith("CHECK ")]
  return json.loads(lines[-1][len("CHECK "):])


@pytest.mark.slow
def test_quickstart_projects_and_attributes(tmp_path, monkeypatch):
  got = _run("quickstart.ipynb", tmp_path, monkeypatch)
  assert len(got["names"]) == SMALL_MODELS
  assert got["counts"] == [SMALL_PER_MODEL["quickstart.ipynb"]] * SMALL_MODELS
  assert got["finite"] and got["norm_gap"] < 1e-3
  assert got["accuracy"] >= 0.4           # 5 toy models: chance is 0.2 (SMALL gets 0.56)
  assert got["fdr"] > 0


@pytest.mark.slow
def test_fingerprint_anatomy_streams_the_per_model_statistics(tmp_path, monkeypatch):
  got = _run("fingerprint_anatomy.ipynb", tmp_path, monkeypatch)
  n = SMALL_PER_MODEL["fingerprint_anatomy.ipynb"]
  assert got["counts"] == [n] * SMALL_MODELS
  assert got["mean_gap"] < 1e-4
  assert got["fdr"] > 0
  assert got["hist_total"] <= SMALL_MODELS * n      # distances beyond the last edge drop out


@pytest.mark.slow
def test_your_data_at_scale_writes_the_artifact_store(tmp_path, monkeypatch):
  got = _run("your_data_at_scale.ipynb", tmp_path, monkeypatch)
  n = SMALL_PER_MODEL["your_data_at_scale.ipynb"]
  assert got["counts"] == [n] * SMALL_MODELS and got["labels"] == [n] * SMALL_MODELS
  assert got["rows"] == SMALL_MODELS * n
  assert got["metrics"] >= 1 and got["bad"] == 0


def test_notebooks_match_generator(tmp_path):
  """The .ipynb files are what colabs/make_notebooks.py writes (edit the script, not the files)."""
  import importlib.util
  spec = importlib.util.spec_from_file_location("make_notebooks",
                                                os.path.join(COLABS, "make_notebooks.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  monkey_here = mod.HERE
  mod.HERE = str(tmp_path)
  try:
    mod.main()
  finally:
    mod.HERE = monkey_here
  for name in NOTEBOOKS:
    with open(os.path.join(COLABS, name)) as a, open(tmp_path / name) as b:
      assert a.read() == b.read(), name
