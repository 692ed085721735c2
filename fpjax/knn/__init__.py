"""The certified k-nearest-neighbour search over a real bank.

Public, functional and traceable (fpjax.knn.index):
    build_index(bank, *, mesh=None, data_axis='data', bank_axis='bank', tile=2048,
                search_dim='auto') -> Index                                   (eager)
    search(index, queries, k, *, search_dtype=bfloat16, config=None)
        -> (sq_distances [N, k] float32, indices [N, k] int32, certified [N] bool)
    gather(index, indices [N, j]) -> rows [N, j, *embedding_shape]
    index_specs(index) -> the in_specs of an Index for a user's jax.shard_map
    MAX_K: the largest k.

The pieces, one idea per module: scan (the sharded kernel: XLA tile scan, re-rank, merge),
bounds (the certificate), reduced (reduced search: host SVD, bank reduction), placement (mesh
axes, where the bank lives), pallas_fused and mosaic_gpu (candidate search kernels), autotune.
"""
from fpjax.knn.index import (MAX_K, Index, build_index, gather, index_specs,  # noqa: F401
                             search)
from fpjax.knn.placement import MeshAxes  # noqa: F401

__all__ = ["MAX_K", "Index", "MeshAxes", "build_index", "gather", "index_specs", "search"]
