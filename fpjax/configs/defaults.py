"""Library-wide defaults, the one place each is written: the modules that use them read them here.

    from fpjax.configs import defaults
    defaults.SELECTION['l2']           # plain data, read by fpjax.evals.classifiers
    defaults.get_config().selection    # the same values as an ml_collections.ConfigDict

The binaries' configs (demo.py, evaluate.py, ...) copy what they expose from here, so a value
changed here changes every preset that does not set its own.
"""
import ml_collections

# The quick SL encoder's training steps: the encoders' quick preset, the zoo's realism reference
# (fpjax.zoo.quality, Preset.encoder_steps) and the demo's SL space use this one value, so the
# demo copies the zoo's reference encoder instead of training it again.
QUICK_SL_STEPS = 250

# The inner-validation selection of the linear probe (fpjax.evals.classifiers): l2 candidates (the
# first is the default), early stopping's epoch budget and patience, and the inner-validation
# share of each split's training part.
SELECTION = dict(l2=(1e-4, 1e-2), max_epochs=100, patience=10, inner_fraction=0.25)

# The classifiers on the artifacts, in the tables' order.
CLASSIFIERS = ('probe', 'attributor')

# The zoo's Adam learning rates per family (fpjax.zoo.train; a preset's `lr` overrides them).
ZOO_LEARNING_RATES = {'gan': 5e-4, 'vae': 2e-3, 'flow': 3e-3, 'diffusion': 2e-3}

# fpjax.attribution.Attributor presets: 'paper' is the paper's ResNet schedule, 'quick' a short
# one for CPUs.
ATTRIBUTOR_PRESETS = {
    'paper': dict(arch='auto', widths=(16, 32, 64), blocks_per_stage=3, hidden=(256,),
                  epochs=180, milestones=(100, 150), batch_size=36, lr=0.1, momentum=0.9,
                  weight_decay=1e-4, optimizer='sgd', b1=0.9, b2=0.999, val_fraction=0.0,
                  patience=None, activation='relu'),
    'quick': dict(arch='auto', widths=(16, 32, 64), blocks_per_stage=1, hidden=(256,),
                  epochs=15, milestones=(8, 12), batch_size=64, lr=0.05, momentum=0.9,
                  weight_decay=1e-4, optimizer='sgd', b1=0.9, b2=0.999, val_fraction=0.0,
                  patience=None, activation='relu'),
}

# fpjax.models.encoders presets: 'quick' keeps each encoder <= 60 s on 4,000 28x28 digits on 2
# CPU cores; 'paper' is the attributor-sized ResNet (widths 16/32/64, 3 blocks) trained longer.
ENCODER_PRESETS = {
    'quick': dict(widths=(8, 16, 32), blocks_per_stage=1, sl_steps=QUICK_SL_STEPS, ssl_steps=120,
                  lr=3e-3, projector=(128, 128), barlow_lambda=5e-3),
    'paper': dict(widths=(16, 32, 64), blocks_per_stage=3, sl_steps=4000, ssl_steps=4000,
                  lr=1e-3, projector=(512, 512), barlow_lambda=5e-3),
}

# The artifact job's settings (fpjax.artifact_job.compute_artifacts) for every binary that may
# compute artifact stores: `config.artifacts` of demo.py, evaluate.py, compute_artifacts.py.
ARTIFACTS = dict(precision='exact', batch_size=256, device_bank_bytes=None, num_threads=4,
                 on_bad_input='skip')


def artifacts_config() -> ml_collections.ConfigDict:
  """config.artifacts: 'exact' certifies every nearest neighbour ('fast' does not); batch_size is
  global (all processes); device_bank_bytes (None: the whole bank) is the largest bank slice per
  device; num_threads decode images per process; on_bad_input 'skip' lists a bad file in
  WORKDIR/bad_inputs.jsonl and goes on, 'fail' stops (exit 2)."""
  c = ml_collections.ConfigDict(dict(ARTIFACTS))
  c.device_bank_bytes = ml_collections.config_dict.placeholder(int)
  return c


def get_config() -> ml_collections.ConfigDict:
  """Every default above as one ConfigDict (for reading; the modules use the constants)."""
  return ml_collections.ConfigDict(dict(
      quick_sl_steps=QUICK_SL_STEPS, selection=SELECTION, classifiers=CLASSIFIERS,
      zoo_learning_rates=ZOO_LEARNING_RATES, attributor_presets=ATTRIBUTOR_PRESETS,
      encoder_presets=ENCODER_PRESETS, artifacts=artifacts_config()))
