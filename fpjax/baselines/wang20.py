"""Wang20 ("CNN-generated images are surprisingly easy to spot"): ResNet on images with blur and
JPEG augmentation.

Training batches are augmented on the host: with probability ``p_blur`` a Gaussian blur
(sigma ~ U(0, max_sigma)), with probability ``p_jpeg`` a JPEG round trip through Pillow
(quality ~ U(30, 100)), as in the paper's Blur+JPEG(0.5) setting. Simplification: the
paper fine-tunes an ImageNet ResNet-50; here fpjax's CIFAR-style ResNet is trained from
scratch (quick: widths 8/16/32, 1 block per stage).
"""
import io

import numpy as np
from PIL import Image, ImageFilter

from fpjax.baselines._common import CNNBaseline


def blur_jpeg(batch: np.ndarray, rng: np.random.Generator, p_blur=0.5, p_jpeg=0.5,
              max_sigma=1.5) -> np.ndarray:
  """float [B,H,W,C] in [0,1] -> augmented float batch (host side, Pillow)."""
  out = np.empty_like(batch)
  for i, im in enumerate(batch):
    u8 = np.clip(np.round(im * 255.0), 0, 255).astype(np.uint8)
    pil = Image.fromarray(u8[..., 0] if u8.shape[-1] == 1 else u8)
    if rng.random() < p_blur:
      pil = pil.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0, max_sigma))))
    if rng.random() < p_jpeg:
      buf = io.BytesIO()
      pil.save(buf, format='JPEG', quality=int(rng.integers(30, 101)))
      pil = Image.open(io.BytesIO(buf.getvalue()))
      pil.load()
    a = np.asarray(pil, np.float32) / 255.0
    out[i] = a.reshape(im.shape)
  return out


class Wang20(CNNBaseline):
  QUICK = dict(arch='resnet', widths=(8, 16, 32), blocks_per_stage=1, lr=0.05, epochs=4,
               milestones=(3,), batch_size=64, p_blur=0.5, p_jpeg=0.5, max_sigma=1.5)

  def __init__(self, seed=0, **cfg):
    super().__init__(seed, **cfg)
    self.aug = {k: self.cfg.pop(k) for k in ('p_blur', 'p_jpeg', 'max_sigma')}

  def _augment(self):
    return lambda batch, rng: blur_jpeg(batch, rng, **self.aug)
