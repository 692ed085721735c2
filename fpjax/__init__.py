"""fpjax: manifold fingerprints of generative models (ManiFPT) in JAX.

The artifact of a generated image is its offset from the nearest real image in an
embedding space; the fingerprint of a model is the distribution of its artifacts.

`import fpjax` loads only the core below (JAX and numpy); the rest of the package (data
pipeline, zoo, models, attribution, baselines, analysis, the artifact job) loads on first use
through a module `__getattr__` (PEP 562), so `fpjax.compute_artifacts` or `fpjax.zoo` work as
before without everyone paying for scikit-learn, grain, flax, optax and orbax at import.
"""
import importlib

from fpjax import parallel
from fpjax import stats
from fpjax.manifold import Manifold, Projection
from fpjax.spaces import SPACES, as_float_images, embed
from fpjax.stats import FingerprintStats, fisher_discriminant_ratio

__version__ = "0.1.0"

# name -> (module, attribute or None for the module itself), loaded on first access.
_LAZY = {
    "data": ("fpjax.data", None),
    "zoo": ("fpjax.zoo", None),
    "models": ("fpjax.models", None),
    "attribution": ("fpjax.attribution", None),
    "baselines": ("fpjax.baselines", None),
    "artifact_io": ("fpjax.artifact_io", None),
    "fingerprinting": ("fpjax.fingerprinting", None),
    "estimators": ("fpjax.estimators", None),
    "progress": ("fpjax.progress", None),
    "analysis": ("fpjax.analysis", None),
    "load_array": ("fpjax.artifact_io", "load_array"),
    "ArtifactStore": ("fpjax.artifact_io", "ArtifactStore"),
    "compute_artifacts": ("fpjax.fingerprinting", "compute_artifacts"),
    "Estimator": ("fpjax.estimators", "Estimator"),
    "Attributor": ("fpjax.attribution", "Attributor"),
    "LinearProbe": ("fpjax.attribution", "LinearProbe"),
    "BASELINES": ("fpjax.baselines", "BASELINES"),
    "Encoder": ("fpjax.models", "Encoder"),
    "load_encoder": ("fpjax.models", "load_encoder"),
    "train_encoder": ("fpjax.models", "train_encoder"),
}

__all__ = ["Manifold", "Projection", "SPACES", "as_float_images", "embed", "FingerprintStats",
           "fisher_discriminant_ratio", "parallel", "stats", *_LAZY]


def __getattr__(name):
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
