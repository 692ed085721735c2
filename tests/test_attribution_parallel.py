"""Probe and attributor (ResNet on pixels, MLP on spectra) give the same predictions on 1 and
on 4 (simulated CPU) devices.

Each device count runs in its own process: the CPU device count must be set before any
JAX operation. The 4-device run also takes the scanned path (3 steps per dispatch, batches
stacked and sharded along their batch axis), the 1-device run the Python loop.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np

SCRIPT = textwrap.dedent('''
    import sys
    import jax
    jax.config.update('jax_num_cpu_devices', int(sys.argv[1]))
    import numpy as np
    from fpjax.attribution import Attributor, LinearProbe
    assert jax.device_count() == int(sys.argv[1])
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 192)
    v = np.eye(3)[y] * 2 + rng.normal(size=(192, 3))
    x = np.concatenate([v, rng.normal(size=(192, 5))], 1).astype(np.float32)
    probe = LinearProbe(epochs=40, batch_size=32, patience=5).fit(x[:128], y[:128])
    img = rng.normal(size=(192, 8, 8, 1)).astype(np.float32) * 0.5
    img[y == 1, :4] += 1.0
    img[y == 2, :, ::2] -= 1.0
    att = Attributor(widths=(4, 8, 8), epochs=3, milestones=(2,), batch_size=32)
    att.fit(img[:128], y[:128])
    spec = Attributor(space='freq', hidden=(16,), epochs=3, milestones=(2,), batch_size=32)
    spec.fit(img[:128], y[:128])
    assert spec.arch_ == 'mlp'
    np.savez(sys.argv[2], probe_pred=probe.predict(x[128:]), probe_p=probe.predict_proba(x[128:]),
             att_pred=att.predict(img[128:]), att_p=att.predict_proba(img[128:]),
             spec_pred=spec.predict(img[128:]), spec_p=spec.predict_proba(img[128:]),
             steps=probe.history_['steps'])
''')


def _run(n, tmp_path, per_dispatch):
  out = tmp_path / f'out{n}.npz'
  env = dict(os.environ)
  env.pop('JAX_NUM_CPU_DEVICES', None)
  env.pop('XLA_FLAGS', None)
  env['JAX_PLATFORMS'] = 'cpu'
  env['FPJAX_STEPS_PER_DISPATCH'] = str(per_dispatch)
  subprocess.run([sys.executable, '-c', SCRIPT, str(n), str(out)], check=True, env=env,
                 cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=300)
  return np.load(out)


def test_one_vs_four_devices(tmp_path):
  one, four = _run(1, tmp_path, 1), _run(4, tmp_path, 3)
  assert int(one['steps']) == int(four['steps'])
  np.testing.assert_array_equal(one['probe_pred'], four['probe_pred'])
  np.testing.assert_allclose(one['probe_p'], four['probe_p'], atol=1e-4)
  np.testing.assert_array_equal(one['att_pred'], four['att_pred'])
  np.testing.assert_allclose(one['att_p'], four['att_p'], atol=1e-3)
  np.testing.assert_array_equal(one['spec_pred'], four['spec_pred'])
  np.testing.assert_allclose(one['spec_p'], four['spec_p'], atol=1e-3)
