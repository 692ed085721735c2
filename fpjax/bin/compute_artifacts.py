r"""Projects generated images onto the real manifold; writes artifacts and fingerprints.

    python -m fpjax.bin.compute_artifacts --workdir=OUT --config.gm=ZOO_WORKDIR \
        [--config.real=mnist5k] [--config.space=rgb] [--config.estimators=nn,knn_mean-k10,input]

Rerun with the same --workdir to resume; see fpjax/artifact_job and fpjax/store/artifact_store.py.
Bad files are skipped and listed in WORKDIR/bad_inputs.jsonl (--config.artifacts.on_bad_input=
fail stops instead). The settings are the keys of fpjax/configs/compute_artifacts.py.
"""
from fpjax import artifact_job
from fpjax.bin import flags as fpjax_flags
from fpjax.errors import UserInputError


def compute_artifacts(config, workdir: str) -> dict:
  """fpjax.artifact_job.compute_artifacts from a compute_artifacts config (looked up at call
  time, so hooks can wrap it)."""
  if not config.gm:
    raise UserInputError('--config.gm is required (a zoo workdir or an image-folder root)')
  return artifact_job.compute_artifacts(
      config.real, config.gm, workdir, space=config.space, encoder=config.encoder,
      estimators=[e for e in config.estimators.split(',') if e], k=config.k,
      checkpoint_every=config.checkpoint_every, basis_dim=config.basis_dim,
      distance_max=config.distance_max, **config.artifacts.to_dict())


def main(config, workdir: str) -> None:
  compute_artifacts(config, workdir)


if __name__ == '__main__':
  fpjax_flags.run(main, 'compute_artifacts')
