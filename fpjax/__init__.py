"""fpjax: manifold fingerprints of generative models (ManiFPT) in JAX."""
from fpjax import parallel
from fpjax import stats
from fpjax.spaces import SPACES, as_float_images, embed
from fpjax.manifold import Manifold, Projection

__version__ = "0.1.0"
