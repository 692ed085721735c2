"""fpjax: manifold fingerprints of generative models (ManiFPT) in JAX.

The artifact of a generated image is its offset from the nearest real image in an
embedding space; the fingerprint of a model is the distribution of its artifacts.
"""
from fpjax import parallel
from fpjax import stats
from fpjax.manifold import Manifold, Projection
from fpjax.spaces import SPACES, as_float_images, embed
from fpjax.stats import FingerprintStats, fisher_discriminant_ratio
# Modules below build on the core above.
from fpjax import data, zoo, models, attribution, baselines  # noqa: E402
from fpjax import artifact_io, fingerprinting, progress  # noqa: E402
from fpjax import analysis  # noqa: E402
from fpjax.artifact_io import load_array  # noqa: E402
from fpjax.fingerprinting import compute_artifacts  # noqa: E402
from fpjax.attribution import Attributor, LinearProbe  # noqa: E402
from fpjax.baselines import BASELINES  # noqa: E402
from fpjax.models import Encoder, load_encoder, train_encoder  # noqa: E402

__version__ = "0.1.0"
