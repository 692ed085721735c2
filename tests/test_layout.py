"""The package's layering rules, checked on the source (design.md: the layout is the data flow).

Lower layers never import higher ones; the zoo never imports the study; imports sit at module
level except documented lazy imports of heavy optional dependencies; modules stay small enough to
read (a longer one says why in its first lines).
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "fpjax"

# Layer of each top-level part, in data-flow order: a module may import its own layer or lower.
LAYERS = {
    "configs": 0, "errors": 0, "fileio": 0, "parallel": 0, "progress": 0, "progress": 0,
    "data": 1, "spaces": 1, "stats": 1,
    "knn": 2,
    "models": 3, "estimators": 3, "manifold": 3, "aot": 3, "geometry": 3,
    "zoo": 4, "store": 4,
    "artifact_job": 5,
    "attribution": 6, "baselines": 6,
    "report": 7,
    "evals": 8,
    "bin": 9,
}
# The zoo trains generative models; it never reads the study's stores or tables.
ZOO_FORBIDDEN = ("store", "artifact_job", "attribution", "baselines", "report", "evals", "bin")
# Imports allowed inside functions: heavy or optional dependencies loaded on first use.
# (`import fpjax` loads only JAX and numpy: tests/test_import.py.)
LAZY_OK = ("jax.experimental.pallas", "jax.experimental.mosaic", "jax._src.pallas",
           "jax.experimental.topologies", "fpjax.knn.pallas_fused", "fpjax.knn.mosaic_gpu",
           "tensorflow", "tensorflow_datasets", "matplotlib", "tensorboardX", "faiss", "sklearn",
           "scipy", "PIL", "tensorstore", "orbax", "grain", "libtpu", "jax_plugins", "IPython",
           "threadpoolctl", "mlxtend")
MAX_LINES = 500


def _modules():
  return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def _part(dotted: str) -> str | None:
  parts = dotted.split(".")
  if parts[0] != "fpjax" or len(parts) < 2:
    return None
  return parts[1]


def _imports(tree):
  """(dotted module, lineno, inside a function) for every fpjax or lazy-candidate import."""
  out = []

  def visit(node, in_function):
    for child in ast.iter_child_nodes(node):
      inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
      if isinstance(child, ast.Import):
        out.extend((a.name, child.lineno, in_function) for a in child.names)
      elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
        # from fpjax.knn import pallas_fused: the name may be a module; keep the full path
        out.extend((f"{child.module}.{a.name}", child.lineno, in_function)
                   for a in child.names)
      visit(child, inner)

  visit(tree, False)
  return out


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_module_follows_the_layering(path):
  rel = path.relative_to(ROOT.parent).with_suffix("")
  own = rel.parts[1] if len(rel.parts) > 1 else None
  if own == "__init__":
    return  # the package root re-exports lazily
  assert own in LAYERS, f"{rel}: add its part to LAYERS in tests/test_layout.py"
  tree = ast.parse(path.read_text())
  for dotted, line, in_function in _imports(tree):
    part = _part(dotted)
    if in_function:
      assert dotted.startswith(LAZY_OK), f"{rel}:{line}: import of {dotted} inside a function"
    if part is None:
      continue
    assert part in LAYERS, f"{rel}:{line}: {dotted} is not a known part"
    assert LAYERS[part] <= LAYERS[own], (
        f"{rel}:{line}: {own} (layer {LAYERS[own]}) imports {part} (layer {LAYERS[part]})")
    if own == "zoo":
      assert part not in ZOO_FORBIDDEN, f"{rel}:{line}: the zoo imports the study ({dotted})"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_module_is_short_or_says_why(path):
  text = path.read_text()
  n = text.count("\n")
  head = "\n".join(text.splitlines()[:15]).lower()
  assert n <= MAX_LINES or "long module:" in head, f"{path.name}: {n} lines"
