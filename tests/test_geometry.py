"""Riemannian geometry against geometry that is known: a flat metric (the identity decoder)
and the unit sphere (a stereographic chart), finite gradients, honest convergence flags, the
same results on 1 and 8 devices, and the VAE whose decoder defines the metric."""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fpjax import geometry
from fpjax.geometry import (CentreConfig, Decoder, GeodesicConfig, centre_of_mass,
                            count_unconverged, curve_energy, curve_length, geodesics,
                            identity_decoder, log_map, metric_tensor, riemannian_artifacts,
                            straight_line, train_vae)

geodesics_jit = jax.jit(geodesics, static_argnames='config')
centre_jit = jax.jit(centre_of_mass, static_argnames='config')


def stereographic(params, z):
  """Inverse stereographic projection from the north pole: R^2 -> unit sphere, 0 -> south."""
  del params
  r2 = jnp.sum(z * z, axis=-1, keepdims=True)
  return jnp.concatenate([2.0 * z, r2 - 1.0], axis=-1) / (1.0 + r2)


SPHERE = Decoder(params=(), mean_fn=stereographic)


def _on_sphere(z):
  z = np.asarray(z, np.float64)
  r2 = np.sum(z * z, -1, keepdims=True)
  return np.concatenate([2 * z, r2 - 1], -1) / (1 + r2)


def _great_circle(p, q):
  return 2.0 * np.arcsin(np.clip(np.linalg.norm(p - q, axis=-1) / 2.0, 0.0, 1.0))


def _karcher_mean_on_sphere(points):
  """Float64 reference: Riemannian gradient descent with the sphere's exact exp and log."""
  m = points.mean(0) / np.linalg.norm(points.mean(0))
  for _ in range(500):
    cos = np.clip(points @ m, -1, 1)
    u = points - cos[:, None] * m
    norm = np.linalg.norm(u, axis=1, keepdims=True)
    v = np.mean(np.arccos(cos)[:, None] * u / np.maximum(norm, 1e-300), 0)
    nv = np.linalg.norm(v)
    if nv < 1e-15:
      break
    m = np.cos(nv) * m + np.sin(nv) * v / nv
  return m


def _pairs(rng, n, scale):
  return (rng.normal(size=(n, 2)).astype(np.float32) * scale,
          rng.normal(size=(n, 2)).astype(np.float32) * scale)


def test_flat_metric_geodesics_are_euclidean(rng):
  a = rng.normal(size=(12, 3)).astype(np.float32)
  b = rng.normal(size=(12, 3)).astype(np.float32)
  geo = geodesics_jit(identity_decoder(), a, b, GeodesicConfig())
  assert np.all(np.asarray(geo.converged))
  euclid = np.linalg.norm(a.astype(np.float64) - b, axis=1)
  np.testing.assert_allclose(np.asarray(geo.length), euclid, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(geo.energy), euclid ** 2, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(log_map(geo.curve)), b - a, atol=1e-4)
  # A warm start off the line (init) ends on the same geodesic.
  init = jax.vmap(lambda p, q: straight_line(p, q, 8))(a, b) + 0.3
  warm = geodesics_jit(identity_decoder(), a, b, GeodesicConfig(), init)
  assert np.all(np.asarray(warm.converged)) and np.all(np.asarray(warm.steps) > 1)
  np.testing.assert_allclose(np.asarray(warm.curve), np.asarray(geo.curve), atol=1e-4)
  np.testing.assert_allclose(np.asarray(metric_tensor(identity_decoder(), jnp.asarray(a[0]))),
                             np.eye(3), atol=1e-7)


def test_flat_metric_centre_is_the_knn_mean(rng):
  n, k, d = 10, 5, 3
  nbrs = rng.normal(size=(n, k, d)).astype(np.float32)
  # From a corner (the first neighbour), not from the mean it should find.
  for i in range(3):
    c = centre_jit(identity_decoder(), jnp.asarray(nbrs[i]), CentreConfig(),
                   init=jnp.asarray(nbrs[i, 0]))
    assert bool(c.converged) and int(c.steps) > 1
    np.testing.assert_allclose(np.asarray(c.centre), nbrs[i].astype(np.float64).mean(0),
                               atol=1e-4)
  queries = rng.normal(size=(n, d)).astype(np.float32)
  zq = queries + 0.1
  out = riemannian_artifacts(identity_decoder(), queries, nbrs, zq)
  assert count_unconverged(out) == 0
  mean = nbrs.astype(np.float64).mean(1)
  np.testing.assert_allclose(np.asarray(out.artifact), queries - mean, atol=1e-4)
  np.testing.assert_allclose(np.asarray(out.log_map), zq - mean, atol=1e-4)
  np.testing.assert_allclose(np.asarray(out.distance), np.linalg.norm(zq - mean, axis=1),
                             rtol=1e-4)


def test_sphere_metric_and_great_circle_distances(rng):
  z = jnp.asarray([0.3, -0.4])
  np.testing.assert_allclose(np.asarray(metric_tensor(SPHERE, z)),
                             4.0 / (1.0 + 0.25) ** 2 * np.eye(2), rtol=1e-5, atol=1e-6)
  a, b = _pairs(rng, 16, 0.8)
  truth = _great_circle(_on_sphere(a), _on_sphere(b))
  assert truth.max() > 1.5  # some long arcs, where the straight chart line is far off
  for points, rtol in ((8, 6e-3), (24, 1e-3)):
    # The decoded polygon of S = T + 1 chords falls short of the arc by at most
    # theta^2 / (24 S^2) relatively: 3.6e-3 at T = 8 for theta = 2.5, 4.2e-4 at T = 24.
    geo = geodesics_jit(SPHERE, a, b, GeodesicConfig(num_points=points, max_steps=400))
    assert np.all(np.asarray(geo.converged))
    np.testing.assert_allclose(np.asarray(geo.length), truth, rtol=rtol)
  # Straight lines in the chart are not geodesics: the solver did shorten them.
  line = jax.vmap(lambda p, q: curve_length(SPHERE, p, q, straight_line(p, q, 24)))(a, b)
  assert np.max(np.asarray(line) - truth) > 1e-2


def test_sphere_centre_of_symmetric_points_is_the_pole():
  angles = np.arange(5) * 2 * np.pi / 5 + 0.3
  for radius in (0.3, 0.9):
    nbrs = radius * np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)
    c = centre_jit(SPHERE, jnp.asarray(nbrs), CentreConfig(), init=jnp.asarray([0.2, -0.15]))
    assert bool(c.converged)
    # 1e-3 in the chart is 2e-3 rad on the sphere near the pole.
    np.testing.assert_allclose(np.asarray(c.centre), [0.0, 0.0], atol=1e-3)
    np.testing.assert_allclose(np.asarray(c.distances), np.full(5, np.asarray(c.distances)[0]),
                               rtol=1e-3)


def test_sphere_centre_matches_the_karcher_mean(rng):
  for _ in range(3):
    nbrs = (rng.normal(size=(5, 2)) * 0.5 + rng.normal(size=2) * 0.5).astype(np.float32)
    c = centre_jit(SPHERE, jnp.asarray(nbrs), CentreConfig())
    assert bool(c.converged) and float(c.stationarity) < 5e-3
    ref = _karcher_mean_on_sphere(_on_sphere(nbrs))
    assert _great_circle(_on_sphere(np.asarray(c.centre)), ref) < 3e-3


def _mlp_decoder(rng, latent, dim, with_std):
  params = {'w1': jnp.asarray(rng.normal(size=(latent, 16)), jnp.float32),
            'w2': jnp.asarray(rng.normal(size=(16, dim)) / 4, jnp.float32)}
  return Decoder(params=params, mean_fn=_mlp_mean, std_fn=_mlp_std if with_std else None)


def _mlp_mean(p, z):
  return jnp.tanh(z @ p['w1']) @ p['w2']


def _mlp_std(p, z):
  return 0.1 + jnp.sum(z * z, axis=-1, keepdims=True) * jnp.ones(p['w2'].shape[1])


def test_gradients_are_finite(rng):
  dec = _mlp_decoder(rng, 3, 7, with_std=True)
  z0, z1 = jnp.asarray(rng.normal(size=3), jnp.float32), jnp.asarray(rng.normal(size=3),
                                                                     jnp.float32)
  for a, b in ((z0, z1), (z0, z0)):  # coincident ends: zero energy, zero-length segments
    inner = straight_line(a, b, 8)
    for fn in (curve_energy, curve_length):
      grads = jax.grad(fn, argnums=(1, 2, 3))(dec, a, b, inner)
      assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
    grads = jax.grad(lambda p: curve_energy(dec.__class__(p, None, None, dec.mean_fn,
                                                          dec.std_fn), a, b, inner))(dec.params)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))
  # The variance term adds to the metric: G = J_mu^T J_mu + J_sigma^T J_sigma.
  no_std = Decoder(params=dec.params, mean_fn=_mlp_mean)
  extra = np.asarray(metric_tensor(dec, z0) - metric_tensor(no_std, z0))
  jac = np.asarray(jax.jacfwd(lambda z: _mlp_std(dec.params, z))(z0))
  np.testing.assert_allclose(extra, jac.T @ jac, rtol=1e-4, atol=1e-5)


def test_small_budgets_are_flagged_and_counted(rng):
  a, b = _pairs(rng, 8, 0.8)
  geo = geodesics_jit(SPHERE, a, b, GeodesicConfig(max_steps=1))
  assert not np.any(np.asarray(geo.converged))
  nbrs = (rng.normal(size=(6, 5, 2)) * 0.5).astype(np.float32)
  zq = nbrs.mean(1) + 0.3
  queries = np.asarray(stereographic(None, jnp.asarray(zq)))
  starved = CentreConfig(geodesic=GeodesicConfig(max_steps=1), max_steps=1)
  out = riemannian_artifacts(SPHERE, queries, nbrs, zq, config=starved)
  assert count_unconverged(out) == 6 and not np.any(np.asarray(out.centre_converged))
  out = riemannian_artifacts(SPHERE, queries, nbrs, zq)
  assert count_unconverged(out) == 0
  with pytest.raises(ValueError):
    riemannian_artifacts(SPHERE, queries, nbrs[:, :, :1], zq)


_EIGHT_DEVICES = textwrap.dedent('''
  import os, sys
  os.environ["JAX_NUM_CPU_DEVICES"] = "8"
  import jax
  jax.config.update("jax_num_cpu_devices", 8)
  import numpy as np
  sys.path.insert(0, os.path.dirname(os.path.abspath({test!r})))
  import test_geometry as t
  from fpjax import parallel
  from fpjax.geometry import CentreConfig, GeodesicConfig, riemannian_artifacts
  assert jax.device_count() == 8
  rng = np.random.default_rng(0)
  dec = t._mlp_decoder(rng, 2, 5, with_std=True)
  nbrs = (rng.normal(size=(13, 4, 2)) * 0.5).astype(np.float32)
  zq = nbrs.mean(1) + 0.2
  queries = rng.normal(size=(13, 5)).astype(np.float32)
  # Tighter than the defaults, so that "equal up to the solver's tolerance" means something.
  config = CentreConfig(GeodesicConfig(rtol=1e-6, gtol=1e-4, max_steps=400), max_steps=400)
  one = riemannian_artifacts(dec, queries, nbrs, zq, config=config)
  for mesh in (parallel.make_mesh(data=8, bank=1), parallel.make_mesh(data=2, bank=4)):
    got = riemannian_artifacts(dec, queries, nbrs, zq, config=config, mesh=mesh)
    assert len(got.artifact.sharding.device_set) == 8
    np.testing.assert_array_equal(np.asarray(got.converged), np.asarray(one.converged))
    # Another batch shape per device rounds differently and L-BFGS carries that to its
    # tolerance (rtol 1e-6 in energy: ~1e-5 in position), so equal up to that, not bitwise.
    for field in ("artifact", "log_map", "centre", "distance"):
      np.testing.assert_allclose(np.asarray(getattr(got, field)),
                                 np.asarray(getattr(one, field)), rtol=1e-4, atol=2e-4,
                                 err_msg=field)
  print("OK", int(np.sum(np.asarray(one.converged))))
''')


def test_eight_devices_match_one():
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', _EIGHT_DEVICES.format(test=__file__)],
                       capture_output=True, text=True, env=env, timeout=600)
  assert out.returncode == 0, out.stdout + out.stderr
  assert out.stdout.startswith('OK') and int(out.stdout.split()[1]) > 0


def test_vae_is_deterministic_and_its_variance_grows_off_the_data(rng):
  # Data on a curve in R^48: a 1-D manifold the VAE can learn in a few hundred steps (with
  # few coordinates the KL term wins over unit-noise reconstruction and the codes collapse).
  t = rng.uniform(-1, 1, size=(400, 1))
  basis = rng.normal(size=(3, 48))
  bank = (np.concatenate([np.sin(2 * t), np.cos(2 * t), t], 1) @ basis).astype(np.float32)
  kw = dict(latent_dim=2, steps=250, seed=3, num_centres=8, batch_size=64)
  vae = train_vae(bank, **kw)
  again = train_vae(bank, **kw)
  np.testing.assert_array_equal(vae.encode(bank[:20]), again.encode(bank[:20]))
  codes = vae.encode(bank)
  assert codes.shape == (400, 2) and vae.decoder.std_fn is not None
  recon = np.asarray(vae.decode(codes))
  assert np.mean((recon - bank) ** 2) < 0.05 * np.mean((bank - bank.mean(0)) ** 2)
  std = lambda z: np.asarray(vae.decoder.std_fn(vae.decoder.params, jnp.asarray(z))).mean(-1)
  far = codes.mean(0) + 20 * codes.std(0)
  assert std(far[None])[0] > 3 * np.median(std(codes))
  flat = train_vae(bank, variance=False, **kw)
  assert flat.decoder.std_fn is None
  out = riemannian_artifacts(vae.decoder, bank[:4] + 0.1, codes[:4, None].repeat(3, 1),
                             codes[:4])
  assert np.all(np.isfinite(np.asarray(out.artifact))) and out.artifact.shape == (4, 48)
  assert geometry.TrainedVAE is type(vae)
