"""The GM zoo: generative models with design-choice knobs, recipes, training and sampling.

recipes.py (the recipe table and presets) -> families/ (one module per family: networks' build,
optimizer, training step, sampler; a registry by name) -> train.py (training with checkpoints,
sampling) -> build.py (a whole zoo on disk) ; quality.py scores samples; models.py holds the
Flax networks.
"""
from fpjax.zoo.build import build_zoo
from fpjax.zoo.build import build_zoos
from fpjax.zoo.build import ZooSpec
from fpjax.zoo.build import load_zoo
from fpjax.zoo.recipes import DEFAULT_ZOO
from fpjax.zoo.recipes import PRESETS
from fpjax.zoo.recipes import Recipe
from fpjax.zoo.recipes import Preset

__all__ = ['build_zoo', 'build_zoos', 'ZooSpec', 'load_zoo', 'DEFAULT_ZOO', 'PRESETS', 'Recipe',
           'Preset']
