"""build_zoos: several zoos from one pool of worker processes, yielded as each completes."""
import json
import multiprocessing
import os
import shutil
import threading

import numpy as np
from PIL import Image
import pytest

from fpjax import zoo
from fpjax.errors import UserInputError
from fpjax.data import load_real
from fpjax.zoo import build as zoo_build
from fpjax.zoo import quality, recipes

# One GAN of a few steps on the 8x8 digits: compiling dominates.
MINI = recipes.replace_preset(
    recipes.PRESETS['tiny'], name='mini1', recipes=('gan_tconv_bn_relu_ns',),
    steps={'gan': 20}, chunk=20, num_samples=8, classifier_steps=20, encoder_steps=20)


def test_zoos_of_one_pool_equal_zoos_built_one_by_one(tmp_path, monkeypatch):
  # Two zoos that differ in training length; the realism reference (the same for both: same
  # real data, seed and sizes) is trained once here and found in each workdir, as on resume.
  longer = recipes.replace_preset(MINI, name='mini2', steps={'gan': 40})
  monkeypatch.setitem(recipes.PRESETS, 'mini1', MINI)
  monkeypatch.setitem(recipes.PRESETS, 'mini2', longer)
  specs = [zoo.ZooSpec(str(tmp_path / 'pool' / name), name, 'digits')
           for name in ('mini1', 'mini2')]
  quality.QualityReference(load_real('digits'), str(tmp_path / 'reference'), seed=0,
                           classifier_steps=20, encoder_steps=20, num_samples=8)
  for spec in specs:
    shutil.copytree(tmp_path / 'reference', os.path.join(spec.workdir, 'reference'))
  with zoo.build_zoos(specs, progress=False, workers=2) as builds:
    first = next(builds)
    # The first zoo is complete (and on disk) while the second may still train.
    assert os.path.exists(os.path.join(specs[0].workdir, 'zoo.json'))
    second = next(builds)
    with pytest.raises(StopIteration):
      next(builds)
  for spec, meta in ((specs[0], first), (specs[1], second)):
    with open(os.path.join(spec.workdir, 'zoo.json')) as f:
      assert json.load(f) == meta
  # The second zoo (trained while the first was in use) is what this process trains alone.
  [mine] = zoo_build._train_and_sample(recipes.recipes_for(longer), longer, 'digits', 0, 8,
                                       str(tmp_path / 'alone'))
  [entry] = second['models']
  assert mine['final_loss'] == entry['final_loss'] and mine['steps'] == entry['steps'] == 40
  for i, want in enumerate(mine['samples']):
    got = np.asarray(Image.open(os.path.join(specs[1].workdir, 'images', entry['name'],
                                             f'{i:06d}.png')))
    np.testing.assert_array_equal(got, want[..., 0])
  # Different training, different models.
  assert first['models'][0]['final_loss'] != second['models'][0]['final_loss']
  # Complete zoos: building them again trains nothing and returns the same zoo.json.
  with zoo.build_zoos(specs, progress=False, workers=2) as builds:
    assert list(builds) == [first, second]


def test_every_spec_is_checked_before_anything_is_written(tmp_path, monkeypatch):
  monkeypatch.setitem(recipes.PRESETS, 'mini1', MINI)
  good = zoo.ZooSpec(str(tmp_path / 'good'), 'mini1', 'digits')
  # Each refusal names the value at fault.
  for specs, workers, culprit in (
      ([good, zoo.ZooSpec(str(tmp_path / 'bad'), 'huge', 'digits')], None, "'huge'"),
      ([good, zoo.ZooSpec(str(tmp_path / 'bad'), 'mini1', 'digits', num_samples=0)], None,
       'got 0'),
      ([good], 0, 'got 0'),
      ([good, zoo.ZooSpec(good.workdir, 'mini1', 'digits', seed=1)], None, good.workdir)):
    with pytest.raises(UserInputError) as e:
      zoo.build_zoos(specs, workers=workers)
    assert culprit in str(e.value)
  assert not os.path.exists(good.workdir)
  # Closing before iterating trains nothing and leaves no zoo behind.
  zoo.build_zoos([good], progress=False, workers=1).close()
  assert not os.path.exists(os.path.join(good.workdir, 'zoo.json'))
  assert os.listdir(os.path.join(good.workdir, 'models')) == []


class PauseAfterFirstChunk:
  """build_zoos' after_chunk hook: after a training's first checkpoint, tells the test and
  blocks that training until its worker is terminated (a training that never ends by itself)."""

  def __init__(self, paused):
    self.paused = paused

  def __call__(self, steps):
    del steps
    self.paused.release()
    threading.Event().wait()


def test_closing_early_stops_the_running_trainings_and_keeps_their_checkpoints(tmp_path,
                                                                              monkeypatch):
  # Two trainings, each held at its first checkpoint (step 100 of 100000): closing (an error,
  # Ctrl-C) must stop them rather than wait, and keep what they checkpointed.
  long = recipes.replace_preset(MINI, name='long',
                                recipes=('gan_tconv_bn_relu_ns', 'vae_tconv_bn_relu'),
                                steps={'gan': 100000, 'vae': 100000}, chunk=100,
                                gan_pretrain_steps=0)
  monkeypatch.setitem(recipes.PRESETS, 'long', long)
  spec = zoo.ZooSpec(str(tmp_path), 'long', 'digits')
  paused = multiprocessing.get_context('spawn').Semaphore(0)
  builds = zoo.build_zoos([spec], progress=False, workers=2,
                          after_chunk=PauseAfterFirstChunk(paused))
  for _ in range(2):  # both workers hold (a generous bound: a hang fails, a slow machine waits)
    assert paused.acquire(timeout=1800)
  builds.close()
  assert multiprocessing.active_children() == []
  for name in long.recipes:
    ckpt = os.path.join(spec.workdir, 'checkpoints', name)
    assert [int(d) for d in os.listdir(ckpt) if d.isdigit()] == [100], name
  assert not os.path.exists(os.path.join(spec.workdir, 'zoo.json'))
