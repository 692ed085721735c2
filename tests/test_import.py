"""`import fpjax` loads only the core; the rest loads on first use (PEP 562 __getattr__).

Structural, not timed (benchmarks/import_time.py measures the time): a fresh interpreter imports
fpjax and must not have loaded the heavy optional stacks.
"""
import subprocess
import sys
import textwrap
from fpjax import fileio

HEAVY = ("sklearn", "pandas", "grain", "flax", "optax", "orbax", "tensorflow", "tensorstore")


def _fresh(code: str) -> str:
  out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, timeout=300, env={"JAX_PLATFORMS": "cpu", "PATH": ""})
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


def test_import_loads_only_the_core():
  got = _fresh(f"""
      import sys
      import fpjax
      heavy = {HEAVY!r}
      print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))
      print(sorted(m for m in sys.modules if m.startswith('fpjax.')))
  """).splitlines()
  assert got[0] == "[]", got[0]
  lazy = ("data", "zoo", "models", "attribution", "baselines", "evals", "report", "artifact_job",
          "store", "fileio", "progress", "bin")
  loaded = eval(got[1])  # pylint: disable=eval-used
  assert "fpjax.manifold" in loaded and not [m for m in loaded if m.split(".")[1] in lazy], loaded


def test_lazy_names_resolve_and_are_listed():
  got = _fresh("""
      import sys
      import fpjax
      names = ['data', 'zoo', 'models', 'attribution', 'baselines', 'store', 'fileio',
               'artifact_job', 'progress', 'evals', 'report', 'load_array', 'ArtifactStore',
               'compute_artifacts', 'Attributor', 'LinearProbe', 'BASELINES', 'Encoder',
               'load_encoder', 'train_encoder']
      assert set(names) <= set(dir(fpjax)) and set(names) <= set(fpjax.__all__)
      assert 'flax' not in sys.modules
      from fpjax import compute_artifacts, Encoder  # from-imports go through __getattr__ too
      import fpjax.artifact_job as f
      assert compute_artifacts is f.compute_artifacts
      assert fpjax.load_array is fpjax.fileio.load_array
      assert fpjax.Encoder is fpjax.models.Encoder and Encoder is fpjax.Encoder
      assert 'flax' in sys.modules
      try:
        fpjax.no_such_name
      except AttributeError as e:
        assert "no attribute 'no_such_name'" in str(e)
      else:
        raise AssertionError('no AttributeError')
      try:
        fpjax.analysis
      except AttributeError as e:
        assert 'fpjax.evals' in str(e)  # old names point at the new ones
      else:
        raise AssertionError('no AttributeError')
      for n in fpjax.__all__:
        getattr(fpjax, n)
      print('ok')
  """)
  assert got.strip().endswith("ok")
