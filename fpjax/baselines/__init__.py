"""Re-implemented prior attribution methods (Table 1 baselines), one module per family.

Each class: ``__init__(seed=0, **cfg)`` (defaults are the cheap 'quick' settings),
``.fit(images, labels)``, ``.predict(images)``, ``.features(images) -> [N, D]``;
images uint8 [N, H, W, C] (or float in [0, 1]).
"""
from fpjax.baselines.durall20 import Durall20
from fpjax.baselines.dzanic20 import Dzanic20
from fpjax.baselines.frank20 import Frank20
from fpjax.baselines.marra18 import Marra18
from fpjax.baselines.marra19 import Marra19
from fpjax.baselines.mcclo18 import McClo18
from fpjax.baselines.nataraj19 import Nataraj19
from fpjax.baselines.wang20 import Wang20
from fpjax.baselines.yu19 import Yu19

BASELINES = {
    'McClo18': McClo18, 'Nataraj19': Nataraj19, 'Durall20': Durall20, 'Dzanic20': Dzanic20,
    'Frank20': Frank20, 'Wang20': Wang20, 'Marra18': Marra18, 'Marra19': Marra19, 'Yu19': Yu19,
}

__all__ = ['BASELINES'] + list(BASELINES)
