"""The GM zoo: generative models with design-choice knobs, recipes, training and sampling."""
from fpjax.zoo.build import build_zoo
from fpjax.zoo.build import build_zoos
from fpjax.zoo.build import ZooSpec
from fpjax.zoo.build import load_zoo
from fpjax.zoo.recipes import DEFAULT_ZOO
from fpjax.zoo.recipes import PRESETS
from fpjax.zoo.recipes import Recipe
from fpjax.zoo.recipes import Preset
