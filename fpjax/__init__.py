"""fpjax: manifold fingerprints of generative models (ManiFPT) in JAX.

The artifact of a generated image is its offset from the nearest real image in an
embedding space; the fingerprint of a model is the distribution of its artifacts.

`import fpjax` loads only the core below (JAX and numpy); the rest of the package (data
pipeline, zoo, models, attribution, baselines, analysis, the artifact job) loads on first use
through a module `__getattr__` (PEP 562), so `fpjax.compute_artifacts` or `fpjax.zoo` work as
before without everyone paying for scikit-learn, grain, flax, optax and orbax at import.
"""
import importlib

from fpjax import knn
from fpjax import parallel
from fpjax import stats
from fpjax.manifold import Manifold, Projection
from fpjax.spaces import SPACES, as_float_images, embed
from fpjax.stats import FingerprintStats, fisher_discriminant_ratio

__version__ = "0.2.0"

# name -> (module, attribute or None for the module itself), loaded on first access.
_LAZY = {
    "data": ("fpjax.data", None),
    "zoo": ("fpjax.zoo", None),
    "models": ("fpjax.models", None),
    "attribution": ("fpjax.attribution", None),
    "baselines": ("fpjax.baselines", None),
    "configs": ("fpjax.configs", None),
    "errors": ("fpjax.errors", None),
    "fileio": ("fpjax.fileio", None),
    "store": ("fpjax.store", None),
    "artifact_job": ("fpjax.artifact_job", None),
    "estimators": ("fpjax.estimators", None),
    "progress": ("fpjax.progress", None),
    "evals": ("fpjax.evals", None),
    "report": ("fpjax.report", None),
    "load_array": ("fpjax.fileio", "load_array"),
    "ArtifactStore": ("fpjax.store", "ArtifactStore"),
    "compute_artifacts": ("fpjax.artifact_job", "compute_artifacts"),
    "Estimator": ("fpjax.estimators", "Estimator"),
    "Attributor": ("fpjax.attribution", "Attributor"),
    "LinearProbe": ("fpjax.attribution", "LinearProbe"),
    "BASELINES": ("fpjax.baselines", "BASELINES"),
    "Encoder": ("fpjax.models", "Encoder"),
    "load_encoder": ("fpjax.models", "load_encoder"),
    "train_encoder": ("fpjax.models", "train_encoder"),
}

__all__ = ["Manifold", "Projection", "SPACES", "as_float_images", "embed", "FingerprintStats",
           "fisher_discriminant_ratio", "knn", "parallel", "stats", *_LAZY]


# Names of the layout before the redesign (0.1): refused with what to use instead.
_MOVED = {
    "analysis": "fpjax.evals (tables, splits, evaluate) and fpjax.report (the writers)",
    "artifact_io": "fpjax.store (the artifact store), fpjax.fileio (safe readers, atomic "
                   "writes) and fpjax.errors",
    "fingerprinting": "fpjax.artifact_job",
    "pallas_search": "fpjax.knn.pallas_fused",
    "mosaic_gpu_search": "fpjax.knn.mosaic_gpu",
    "autotune": "fpjax.knn.autotune",
}


def __getattr__(name):
  if name in _MOVED:
    raise AttributeError(f"fpjax.{name} was renamed in fpjax 0.2: use {_MOVED[name]}.")
  try:
    module, attr = _LAZY[name]
  except KeyError:
    raise AttributeError(f"module 'fpjax' has no attribute {name!r}") from None
  value = importlib.import_module(module)
  if attr is not None:
    value = getattr(value, attr)
  globals()[name] = value  # later lookups skip __getattr__
  return value


def __dir__():
  return sorted(set(globals()) | set(__all__))
