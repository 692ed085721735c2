"""Input pipeline: sharding by process, padding, shuffling, resumable state, global arrays."""
import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from fpjax import data
from fpjax.errors import BadInputError


def _source(n=10):
  images = np.arange(n * 4, dtype=np.uint8).reshape(n, 2, 2, 1)
  return data.ArraySource(images, np.arange(n))


def _labels(pipe):
  out = []
  for b in pipe:
    lab = np.asarray(b['label'])
    valid = np.asarray(b['valid']) if 'valid' in b else np.ones(len(lab), bool)
    out.append(lab[valid].tolist())
  return out


def test_one_epoch_covers_every_element_once_with_padding():
  pipe = data.make_pipeline(_source(10), batch_size=4, drop_remainder=False)
  batches = list(pipe)
  assert len(batches) == len(pipe) == 3
  assert all(b['image'].shape == (4, 2, 2, 1) for b in batches)
  assert sum(_labels(data.make_pipeline(_source(10), batch_size=4, drop_remainder=False)), []) \
      == list(range(10))
  assert np.asarray(batches[-1]['valid']).tolist() == [True, True, False, False]
  assert isinstance(batches[0]['image'], jax.Array)


def test_drop_remainder_and_shuffle_per_epoch():
  pipe = data.make_pipeline(_source(10), batch_size=4, shuffle_seed=3, num_epochs=2)
  got = _labels(pipe)
  assert len(got) == 4  # 2 full batches per epoch
  e1, e2 = sum(got[:2], []), sum(got[2:], [])
  assert len(set(e1)) == 8 and e1 != e2  # new permutation each epoch
  again = _labels(data.make_pipeline(_source(10), batch_size=4, shuffle_seed=3, num_epochs=2))
  assert got == again  # deterministic


@pytest.mark.parametrize('drop', [True, False])
def test_processes_read_disjoint_shards(drop):
  n, pc = 11, 2
  seen = []
  counts = []
  for pi in range(pc):
    pipe = data.Pipeline(_source(n), batch_size=4, drop_remainder=drop, shuffle_seed=1,
                         process_index=pi, process_count=pc)
    # One process only: assemble per-process batches ourselves (no global array across hosts).
    pipe._to_global = lambda local: local  # pylint: disable=protected-access
    labs = _labels(pipe)
    counts.append(len(labs))
    seen += sum(labs, [])
  assert counts[0] == counts[1]  # every process yields the same number of batches
  assert len(seen) == len(set(seen))
  if not drop:
    assert sorted(seen) == list(range(n))


def test_each_process_takes_a_contiguous_block_of_each_global_batch():
  # Global batch b is elements [8b, 8b + 8) of the epoch order; process p takes [8b + 4p, 8b + 4p + 4):
  # the artifact store's chunks are these blocks, so no two processes write the same chunk.
  n, pc = 21, 2
  for pi in range(pc):
    pipe = data.Pipeline(_source(n), batch_size=8, drop_remainder=False, process_index=pi,
                         process_count=pc)
    got = [(b['label'][b['valid']].tolist()) for b in pipe.local_batches()]
    want = [[j for j in range(8 * b + 4 * pi, 8 * b + 4 * pi + 4) if j < n] for b in range(3)]
    assert got == want, (pi, got)
  assert pipe.get_state()['next_batch'] == 3


class _FlakySource:
  """Like an image folder: element 2 and 5 are bad files, returned as data."""
  files = [f'/data/m/{i}.png' for i in range(7)]

  def __len__(self):
    return 7

  def __getitem__(self, i):
    return {'image': np.full((2, 2, 1), i, np.uint8), 'label': np.int32(i), 'row': np.int64(i),
            'error': 'truncated' if i in (2, 5) else ''}


def test_bad_elements_arrive_as_data_or_as_one_named_error():
  batches = list(data.make_pipeline(_FlakySource(), batch_size=4, drop_remainder=False)
                 .local_batches())
  errors = np.concatenate([b['error'] for b in batches])
  assert errors.tolist() == ['', '', 'truncated', '', '', 'truncated', '', '']
  # The global-array iterator has no way to carry them: it names the file, from this thread.
  with pytest.raises(BadInputError) as e:
    list(data.make_pipeline(_FlakySource(), batch_size=4, drop_remainder=False))
  assert (e.value.path, e.value.reason) == ('/data/m/2.png', 'truncated')


def test_state_round_trips_through_json():
  kw = dict(batch_size=2, shuffle_seed=0, num_epochs=2, drop_remainder=False)
  full = _labels(data.make_pipeline(_source(7), **kw))
  pipe = data.make_pipeline(_source(7), **kw)
  it = iter(pipe)
  first = [np.asarray(next(it)['label']).tolist() for _ in range(3)]
  state = json.loads(json.dumps(pipe.get_state()))
  assert state['next_batch'] == 3  # counts delivered batches, not prefetched ones
  resumed = data.make_pipeline(_source(7), **kw)
  resumed.set_state(state)
  rest = _labels(resumed)
  assert first == full[:3]  # the first three batches hold no padding
  assert rest == full[3:]
  bad = dict(state, batch_size=4)
  with pytest.raises(ValueError):  # another batch size: the rows would not line up
    data.make_pipeline(_source(7), **kw).set_state(bad)
  data.make_pipeline(_source(7), **kw).set_state(state)  # the same pipeline's state is taken


def test_bad_arguments():
  with pytest.raises(ValueError):  # 3 elements make no full batch of 4
    data.make_pipeline(_source(3), batch_size=4)
  assert len(data.make_pipeline(_source(3), batch_size=4, drop_remainder=False)) == 1
  with pytest.raises(ValueError):  # a batch of 3 does not split over 2 processes
    data.Pipeline(_source(8), batch_size=3, process_index=0, process_count=2)
  assert data.Pipeline(_source(8), batch_size=4, process_index=0,
                       process_count=2).local_batch_size == 2


def test_global_arrays_sharded_over_data_axis_on_4_devices():
  code = textwrap.dedent('''
    import jax, numpy as np
    from fpjax import data
    mesh = jax.make_mesh((4,), ('data',))
    src = data.ArraySource(np.zeros((16, 2, 2, 1), np.uint8), np.arange(16))
    b = next(iter(data.make_pipeline(src, batch_size=8, mesh=mesh)))
    assert len(b['image'].sharding.device_set) == 4, b['image'].sharding
    assert b['image'].sharding.spec[0] == 'data'
    assert b['label'].addressable_shards[1].data.tolist() == [2, 3]
    print('ok')
  ''')
  env = dict(os.environ, JAX_NUM_CPU_DEVICES='4', JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0 and 'ok' in out.stdout, out.stderr[-2000:]
