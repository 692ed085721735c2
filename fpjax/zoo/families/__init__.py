"""The zoo's families of generative models, one module each (its networks' build, optimizer,
training step and sampler), registered by name: fpjax.zoo.train and fpjax.zoo.build look a
recipe's family up with `get(recipe.family)`.

A new family is a module defining a `base.Family` (FAMILY) and one entry in REGISTRY.
"""
from fpjax.zoo.families import diffusion
from fpjax.zoo.families import flow
from fpjax.zoo.families import gan
from fpjax.zoo.families import vae
from fpjax.zoo.families.base import Family
from fpjax.zoo.families.base import TrainState

__all__ = ['Family', 'TrainState', 'REGISTRY', 'get']

REGISTRY: dict[str, Family] = {f.name: f for f in (gan.FAMILY, vae.FAMILY, flow.FAMILY,
                                                   diffusion.FAMILY)}


def get(name: str) -> Family:
  """The registered family `name`; ValueError naming the known ones otherwise."""
  try:
    return REGISTRY[name]
  except KeyError:
    raise ValueError(f'unknown zoo family {name!r}; expected one of {sorted(REGISTRY)}.') from None
