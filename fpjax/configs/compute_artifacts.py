"""`python -m fpjax.bin.compute_artifacts`: project generated images onto the real manifold and
write their artifact store (fpjax.artifact_job.compute_artifacts); rerun to resume.

    python -m fpjax.bin.compute_artifacts --workdir=OUT --config.gm=ZOO_OR_FOLDER \
        [--config.real=mnist5k] [--config.space=rgb] [--config.estimators=nn,knn_mean-k10,input]
"""
import ml_collections

from fpjax.configs import defaults


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # Real bank: mnist5k | mnist5k_0to4 | mnist5k_5to9 | digits | tfds:<name>[:<split>] | a
  # .npy/.npz of images [N,H,W,C] | an image folder.
  c.real = 'mnist5k'
  c.gm = ml_collections.config_dict.placeholder(str)  # zoo workdir or image-folder root
  c.space = 'rgb'                      # embedding space; 'sl'/'ssl' need `encoder`
  c.encoder = ml_collections.config_dict.placeholder(str)  # a saved fpjax Encoder
  # Estimator keys (nn, knn_mean-k10, local_pca-k20-m4, kernel-k20-s1, learned, input), names
  # (a name stands for its grid's candidates) or 'all', comma-separated.
  c.estimators = 'nn'
  c.k = ml_collections.config_dict.placeholder(int)  # None: the most the estimators need
  c.checkpoint_every = 20              # batches between checkpoints
  c.basis_dim = 16                     # principal directions for the covariance
  c.distance_max = ml_collections.config_dict.placeholder(float)  # None: from batch 1
  c.artifacts = defaults.artifacts_config()
  return c
