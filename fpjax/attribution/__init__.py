"""Attribution on fingerprints: linear probe, the paper's ResNet attributor, open-set / few-shot.

Eager (host numpy in and out; training and prediction run jitted steps on the device mesh).
"""
from fpjax.attribution import openset
from fpjax.attribution.attributor import Attributor
from fpjax.attribution.openset import (PrototypeClassifier, few_shot_accuracy,
                                       leave_one_model_out_auroc, prototypes)
from fpjax.attribution.probe import LinearProbe

__all__ = ['Attributor', 'LinearProbe', 'PrototypeClassifier', 'few_shot_accuracy',
           'leave_one_model_out_auroc', 'openset', 'prototypes']
