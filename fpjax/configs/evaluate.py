"""`python -m fpjax.bin.evaluate`: the paper's evaluation of one GM dataset (fpjax.evals.evaluate).

    python -m fpjax.bin.evaluate --workdir=OUT --config.gm=ZOO_OR_FOLDER \
        [--config.spaces=rgb,sl] [--config.estimators=all] [--config.splits=3]

Lists of names are comma-separated strings ('rgb,freq'); 'all' and 'none' where a key says so.
"""
import ml_collections

from fpjax.configs import defaults

_str = lambda: ml_collections.config_dict.placeholder(str)
_int = lambda: ml_collections.config_dict.placeholder(int)


def classifier_config(selection=None, attributor=None,
                      attributor_preset: str = 'quick') -> ml_collections.ConfigDict:
  """config.cfg: the probe's inner-validation selection (keys of defaults.SELECTION), the
  Attributor preset ('quick' | 'paper', defaults.ATTRIBUTOR_PRESETS) and overrides of its
  options (e.g. epochs, milestones, widths; None: the preset's), LinearProbe keyword arguments
  (`probe`)."""
  # Every Attributor option, None (the preset's value) unless given.
  options = {k: ml_collections.config_dict.placeholder(int if v is None else type(v))
             for k, v in defaults.ATTRIBUTOR_PRESETS['quick'].items()}
  options.update(attributor or {})
  return ml_collections.ConfigDict(dict(
      selection=dict(defaults.SELECTION, **(selection or {})),
      attributor_preset=attributor_preset, attributor=options, probe={}))


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.gm = _str()               # zoo workdir (has zoo.json) or image-folder root root/<model>/*.png
  # The real source the models imitate (the manifold's bank): mnist5k | mnist5k_0to4 |
  # mnist5k_5to9 | digits | tfds:<name>[:<split>] | a .npy/.npz of images | an image folder.
  # None: the zoo's own (required for an image folder).
  c.real = _str()
  c.spaces = 'rgb,freq,dct,sl,ssl'     # ManiFPT spaces; 'sl' is skipped without real labels
  c.splits = 3                         # train/validation splits (>= 1), mean ± std over them
  c.split_seed = 0                     # split i uses seed split_seed + i
  # Manifold estimators: 'all' or names among nn, knn_mean, local_pca, kernel, learned (each
  # with its hyperparameters chosen on an inner validation split); the input control is added.
  c.estimators = 'nn'
  c.estimator_spaces = 'all'           # spaces where `estimators` run; the others: nn + control
  # The attributor's estimators: 'all', or names among `estimators`, 'input' and 'best' (per
  # split the estimator the probe chose).
  c.attributor_estimators = 'all'
  c.baselines = 'all'                  # 'all', 'none' or names of fpjax.baselines.BASELINES
  c.classifiers = ','.join(defaults.CLASSIFIERS)
  c.shots = 10                         # few-shot enrolment samples per new model
  c.cross = ''                         # Table 2 pairs TRAIN_GM:TEST_GM,... (zoo workdirs)
  c.cross_estimators = 'nn'            # Table 2's estimators (each at its default candidate)
  c.cross_baselines = _str()           # None: the same as `baselines`
  c.cross_classifiers = _str()         # None: the same as `classifiers`
  # SL/SSL encoder training steps; None: the encoders' quick preset (defaults.ENCODER_PRESETS).
  c.encoder_steps = ml_collections.ConfigDict(dict(sl=_int(), ssl=_int()))
  c.cfg = classifier_config()          # Tables 1 and 2
  c.baseline_cfg = {}                  # baseline name -> constructor keyword arguments
  c.table3_pca_dim = 32
  c.table3_max_rows = 20000            # stratified samples held in RAM
  c.openset_max_per_model = 500
  c.figure_max_rows = 2000
  c.bootstrap_resamples = 2000         # the paired bootstrap of the diff rows
  c.figures = True
  c.print_tables = True
  c.artifacts = defaults.artifacts_config()  # for artifact stores that are missing
  c.compilation_cache = False          # XLA's persistent cache in WORKDIR/jax_cache
  return c
