"""The binaries' flags, each defined once here, and `run`, their one exit-status path.

    python -m fpjax.bin.<binary> --workdir=OUT [--config=NAME|path.py] [--config.key=value ...]

A binary is `main(config, workdir)` started with `run(main)`: --config (default: the binary's
file in fpjax/configs; NAME: a file there, e.g. --config=tiny) is an ml_collections ConfigDict,
overridden key by key with --config.key=value. The flags of earlier versions (--real, --spaces,
--preset, ...) are shorthands for their config keys (SHORTHANDS); the few with no key of their
own are refused with one line that says what to use (REFUSED).

Exit status of a binary started with `run`:
  0    finished (possibly with bad files skipped: see WORKDIR/bad_inputs.jsonl and the summary)
  2    refused: a bad flag or config value, an unknown real set, an unusable folder, no readable
       file, or a bad file under on_bad_input=fail; one line on stderr, no traceback
  1    an unexpected error (a bug): absl prints the traceback
  143  stopped by SIGTERM (a preemption); artifact jobs checkpoint first: rerun to resume

With none of the three multi-host flags, JAX auto-detects a cluster (Cloud TPU pods, SLURM,
Open MPI, ...) and a plain single-host run stays single-process. On CPU the collectives of
several processes go through gloo.
"""
import logging as py_logging
import os
import signal
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from fpjax import configs
from fpjax import parallel
from fpjax.errors import Preempted
from fpjax.errors import UserInputError

WORKDIR = flags.DEFINE_string("workdir", None, "Output folder; rerun with it to resume or reuse "
                              "what is there (the demo's default: /tmp/fpjax_demo).")
COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None,
    "host:port of process 0's coordinator, e.g. 10.0.0.1:1234 (multi-host; all three flags "
    "or none).")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's id in [0, num_processes).")

DEMO_WORKDIR = "/tmp/fpjax_demo"

# Shorthands: flag -> the config key it sets, per binary (a flag a binary lacks is refused).
_ARTIFACTS = {f: f"artifacts.{f}" for f in
              ("precision", "batch_size", "device_bank_bytes", "num_threads", "on_bad_input")}
_STUDY = dict(_ARTIFACTS, **{f: f for f in (
    "real", "spaces", "splits", "estimators", "estimator_spaces", "attributor_estimators",
    "baselines", "classifiers")}, encoder_steps=("encoder_steps.sl", "encoder_steps.ssl"))
SHORTHANDS = {
    "build_zoo": {f: f for f in ("preset", "real", "seed", "num_samples", "workers")},
    "compute_artifacts": dict(_ARTIFACTS, **{f: f for f in (
        "real", "gm", "space", "encoder", "estimators", "k", "checkpoint_every", "basis_dim",
        "distance_max")}),
    "evaluate": dict(_STUDY, gm="gm", cross="cross", shots="shots"),
    "demo": dict(_STUDY, **{f: f for f in ("zoo", "preset", "cross_preset", "cross_baselines",
                                           "cross_classifiers", "compilation_cache")},
                 cross="cross_reals"),
}
REFUSED = {
    "attributor_epochs": "--attributor_epochs is replaced by --config.cfg.attributor.epochs=E "
                         "with --config.cfg.attributor.milestones='(A, B)' (the epochs where "
                         "the learning rate drops)",
}
_BOOLS = ("compilation_cache",)
_SHORTHAND_FLAGS = {}
for _name in sorted({f for table in SHORTHANDS.values() for f in table} | set(REFUSED)):
  _keys = sorted({k for t in SHORTHANDS.values() if _name in t
                  for k in (t[_name] if isinstance(t[_name], tuple) else (t[_name],))})
  _define = flags.DEFINE_bool if _name in _BOOLS else flags.DEFINE_string
  _SHORTHAND_FLAGS[_name] = _define(
      _name, None, "Earlier flag: sets " + ", ".join(f"--config.{k}" for k in _keys) if _keys
      else f"Earlier flag, refused: {REFUSED.get(_name)}.")


class _QuietOrbax(py_logging.Filter):
  """Drops orbax's INFO lines (several per checkpoint) so progress stays readable."""

  def filter(self, record) -> bool:
    return record.levelno >= py_logging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


def initialize() -> None:
  """Starts jax.distributed from the flags (or auto-detection); call first in main()."""
  if NUM_PROCESSES.value is not None and NUM_PROCESSES.value > 1:
    # CPU processes need a collectives backend to exchange data; GPU/TPU ignore this option.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  parallel.initialize(COORDINATOR_ADDRESS.value, NUM_PROCESSES.value, PROCESS_ID.value)


def _refuse(program: str, message: str) -> None:
  print(f"{program}: error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


def _binary_name(main) -> str:
  module = sys.modules.get(main.__module__)
  spec = getattr(module, "__spec__", None)
  return (spec.name if spec else main.__module__).rsplit(".", 1)[-1]


def _prepare_argv(argv, binary: str) -> list:
  """--config=NAME -> its file in fpjax/configs, moved first (ml_collections reads it before
  its overrides); the demo's boolean --cross/--nocross -> --cross=true/false."""
  out, config = [argv[0]], []
  args = iter(argv[1:])
  for a in args:
    if a in ("--config", "-config"):
      a = f"--config={next(args, '')}"
    if a.startswith(("--config=", "-config=")):
      value = a.split("=", 1)[1]
      if value not in configs.NAMES and not os.path.isfile(value.split(":", 1)[0]):
        _refuse(binary, f"--config={value}: no such config file (a path to a .py file, or a "
                f"name among {', '.join(configs.NAMES)})")
      config = [f"--config={configs.path(value) if value in configs.NAMES else value}"]
    elif binary == "demo" and a in ("--cross", "--nocross"):
      out.append(f"--cross={'true' if a == '--cross' else 'false'}")
    else:
      out.append(a)
  return out[:1] + config + out[1:]


def _convert(config, key: str, value):
  parent, _, leaf = key.rpartition(".")
  holder = config
  for part in filter(None, parent.split(".")):
    holder = holder[part]
  kind = holder.get_type(leaf)
  if isinstance(value, str) and kind is bool:
    if value.lower() not in ("true", "false", "1", "0"):
      raise ValueError(f"not a boolean: {value!r}")
    value = value.lower() in ("true", "1")
  elif isinstance(value, str) and kind in (int, float):
    value = kind(value)
  holder[leaf] = value


def apply_shorthands(config, binary: str) -> None:
  """Sets the config keys of the shorthand flags given; refuses (UserInputError) a flag this
  binary does not take and the REFUSED ones."""
  table = SHORTHANDS[binary]
  for name, holder in _SHORTHAND_FLAGS.items():
    if holder.value is None:
      continue
    value = holder.value
    if name in REFUSED:
      raise UserInputError(REFUSED[name])
    if name not in table:
      raise UserInputError(f"--{name} is not a flag of {binary}; its settings are the keys of "
                           f"fpjax/configs/{binary}.py (--config.KEY=VALUE)")
    if name == "preset" and value not in configs.zoo.PRESETS:
      raise UserInputError(f"flag --preset={value}: value should be one of "
                           f"<{'|'.join(configs.zoo.PRESETS)}>")
    if binary == "demo" and name == "cross":
      if value.lower() not in ("true", "false", "1", "0"):
        raise UserInputError(f"flag --cross={value}: the demo's --cross is true or false")
      if value.lower() in ("false", "0"):
        config.cross_reals = ""
      continue
    keys = table[name] if isinstance(table[name], tuple) else (table[name],)
    for key in keys:
      try:
        _convert(config, key, value)
      except (TypeError, ValueError) as e:
        raise UserInputError(f"flag --{name}={value}: {e}") from e


def _on_sigterm(signum, frame):
  del signum, frame
  raise Preempted("SIGTERM: stopped; rerun with the same --workdir to resume (finished "
                  "artifact stores, encoders and zoos are reused)")


def _compilation_cache(config, workdir: str) -> None:
  if config.get("compilation_cache"):
    jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, "jax_cache"))
    # Every program: the classifiers' small ones compile in well under JAX's 1 s default.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _parse_flags(program):
  def parse(argv):
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:  # unknown flag, bad value
      _refuse(program, f"{e} (see --help)")
  return parse


def run(main, binary: str | None = None) -> None:
  """absl.app.run for `main(config, workdir)` with fpjax's exit statuses (module docstring).

  binary: the config file and shorthand table to use (default: main's module name)."""
  binary = binary or _binary_name(main)
  program = binary
  argv = _prepare_argv(sys.argv, binary)
  try:
    config_flag = config_flags.DEFINE_config_file(
        "config", default=configs.path(binary), sys_argv=argv,
        help_string=f"ConfigDict file (default fpjax/configs/{binary}.py; a NAME among "
                    f"{', '.join(configs.NAMES)}); --config.KEY=VALUE overrides one key.")
  except (AttributeError, KeyError) as e:  # an override of a key the config does not have
    _refuse(program, f"--config: no key {str(e).strip(chr(34))} in the config (the keys of "
            f"the default one: fpjax/configs/{binary}.py)")
  except (flags.Error, OSError, TypeError, ValueError) as e:
    _refuse(program, f"--config: {str(e).strip().splitlines()[0]} (see --help)")
  for name in ("config", "workdir", "coordinator_address", "num_processes", "process_id"):
    # --help lists the main module's key flags: these, not the earlier flags' shorthands.
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])

  def wrapped(args):
    try:
      if len(args) > 1:
        raise UserInputError(f"unexpected arguments {args[1:]} (flags are --name=value)")
      config = config_flag.value
      apply_shorthands(config, binary)
      workdir = WORKDIR.value or (DEMO_WORKDIR if binary == "demo" else None)
      if not workdir:
        raise UserInputError("--workdir is required")
      py_logging.getLogger("absl").addFilter(_QuietOrbax())
      logging.get_absl_handler().addFilter(_QuietOrbax())
      initialize()
      signal.signal(signal.SIGTERM, _on_sigterm)  # artifact jobs install their own meanwhile
      _compilation_cache(config, workdir)
      return main(config, workdir)
    except UserInputError as e:
      _refuse(program, str(e))
    except Preempted as e:
      print(f"{program}: {e}", file=sys.stderr, flush=True)
      sys.exit(143)  # 128 + SIGTERM: the scheduler sees an interrupted job
  app.run(wrapped, argv=argv, flags_parser=_parse_flags(program))
