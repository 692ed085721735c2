"""Orchestration: `evaluate` (Tables 1-3, open set, figures, report) and `run_demo` (the main job).

Binaries (`fpjax.bin.evaluate`, `fpjax.bin.demo`) and notebooks call these two functions.
Only process 0 writes files; every process computes (single-process on CPU).
"""
from __future__ import annotations

import dataclasses
import os
import time

from absl import logging
import numpy as np

from fpjax.evals import metrics
from fpjax.evals import protocols
from fpjax.errors import UserInputError
from fpjax import fileio
from fpjax import report as report_lib

# The demo's sizing (issue 10): everything after the zoos is meant to take at most 4.5 minutes
# on 2 quiet CPU cores (timings in the README). Measured in process CPU seconds (2 cores shared
# with other jobs, so wall seconds were meaningless) with every estimator in RGB and SL, all
# nine baselines and Table 2 with both classifiers: 577 in all; encoders 60, artifact stores
# 94, selection 65 (138 probe fits), reported probe fits 24, attributor 73, baselines 100
# (Nataraj19 and Wang20 a third of it), Table 3 and open set 24, Table 2 131. With the
# defaults below: 390 (encoders 66, stores 78, selection 40 (99 fits), probe 14, attributor
# 67, baselines 44, Table 3 and open set 26, Table 2 48). So the demo runs: every estimator
# with the probe in RGB (the paper's space), nn and the input control in FREQ, DCT, SL and SSL
# (each k-neighbour estimator costs a selection fit per candidate, split and space, and its
# artifact arrays); the attributor on the estimator the probe chose per split ('best') and on
# the input control, in every space; seven baselines (not Nataraj19 and Wang20: the two
# slowest, neither the best on this zoo); Table 2 with the probe only and Durall20 and Frank20.
# The probe's l2 is chosen among two candidates and its epochs by early stopping (at most 50,
# patience 5) on the inner split. run_demo's config['demo'] (and the report) say what ran and
# what was left out.
_DEMO_SELECTION = dict(l2=(1e-4, 1e-2), max_epochs=50, patience=5)
DEMO_CONFIG = dict(
    cfg={'attributor': dict(widths=(8, 16, 32), epochs=5, milestones=(3, 4)),
         'selection': _DEMO_SELECTION},
    cross_cfg={'attributor': dict(widths=(8, 16, 32), epochs=5, milestones=(3, 4)),
               'selection': _DEMO_SELECTION},
    # SL: the quick zoo's reference encoder (fpjax.zoo.quality; Preset.encoder_steps), which
    # make_encoders copies instead of training a second SL encoder.
    encoder_steps={'sl': 250, 'ssl': 60},
    attributor_estimators=(protocols.BEST, protocols.CONTROL),
    estimator_spaces=('rgb',),
    baselines=('McClo18', 'Durall20', 'Dzanic20', 'Frank20', 'Marra18', 'Marra19', 'Yu19'),
    cross_baselines=('Durall20', 'Frank20'),
    cross_classifiers=('probe',),
)


@dataclasses.dataclass
class Evaluation:
  rows: list
  workdir: str
  files: dict          # name -> path of everything written
  markdown: str        # tables as markdown (what is printed)


class _DropInfoFrom:
  """logging.Filter: drops INFO records logged from files under the given package folders."""

  def __init__(self, packages):
    self.parts = tuple(f'{os.sep}{p}{os.sep}' for p in packages)

  def filter(self, record) -> bool:
    return record.levelno >= 30 or not any(p in record.pathname for p in self.parts)


def quiet_library_logs(packages=('orbax',)) -> None:
  """Keeps the binaries' output readable: orbax logs several INFO lines per checkpoint."""
  import logging as py_logging
  f = _DropInfoFrom(packages)
  py_logging.getLogger('absl').addFilter(f)
  logging.get_absl_handler().addFilter(f)


def baselines_arg(values):
  """--baselines: ['all'] -> None (all nine), ['none'] -> [], else the names."""
  if list(values) == ['all']:
    return None
  return [] if list(values) == ['none'] else list(values)


def _stop(timings: dict, stage: str, wall0: float, cpu0: float) -> None:
  """timings[stage_s] = wall seconds, timings[stage_cpu_s] = this process's CPU seconds (all
  threads) since (wall0, cpu0): on a shared machine the CPU time is the comparable number."""
  timings[f'{stage}_s'] = time.time() - wall0
  timings[f'{stage}_cpu_s'] = time.process_time() - cpu0


def _is_writer() -> bool:
  import jax
  return jax.process_index() == 0


def _check_settings(splits, estimators, attributor_estimators, cross_estimators,
                    estimator_spaces, spaces):
  """(estimator names, Table 2's names), each with the control last; a UserInputError names a
  bad --splits, --estimators, --estimator_spaces or --attributor_estimators."""
  from fpjax import estimators as est_lib
  protocols.check_num_splits(splits)
  for s in estimator_spaces or ():
    if s not in spaces:
      raise UserInputError(f'--estimator_spaces: {s!r} is not among the spaces {list(spaces)}')
  with_control = lambda values: [n for n in est_lib.parse_estimators(list(values))
                                 if n != protocols.CONTROL] + [protocols.CONTROL]
  names = with_control(estimators)
  for n in attributor_estimators or ():
    if n not in names + [protocols.BEST]:
      raise UserInputError(f'--attributor_estimators: {n!r} is not among the estimators '
                           f'{names} (or {protocols.BEST!r})')
  return names, with_control(cross_estimators)


def evaluate(gm, real=None, workdir: str = '/tmp/fpjax_eval', *, spaces=protocols.MANIFPT_SPACES,
             splits: int = 3, estimators=('nn',), estimator_spaces=None,
             attributor_estimators=None, baselines=None,
             classifiers=protocols.CLASSIFIERS, cross=(), cross_estimators=('nn',),
             cross_baselines=None, cross_classifiers=None, shots: int = 10,
             encoder_steps: dict | None = None,
             cfg: dict | None = None, cross_cfg: dict | None = None,
             baseline_cfg: dict | None = None, split_seed: int = 0, table3_pca_dim: int = 32,
             table3_max_rows: int = 20000, openset_max_per_model: int = 500,
             figure_max_rows: int = 2000, bootstrap_resamples: int = 2000,
             artifact_kwargs: dict | None = None, figures: bool = True,
             print_tables: bool = True, extra_config: dict | None = None,
             timings: dict | None = None) -> Evaluation:
  """Runs the paper's evaluation on one GM dataset and writes tables, figures and report.md.

  The artifacts come from one store per (GM dataset, real source, space, estimator set),
  written by `fpjax.compute_artifacts` in WORKDIR/artifacts/<gm name>/<space>/<estimators> and
  computed first when missing (a complete store is reused, a partial one resumed); every table
  streams over the stores, so neither all images nor all artifacts are ever in RAM. The
  protocol (splits, inner-validation selection, intervals) is in `fpjax.evals.protocols`.

  Args:
    gm: zoo workdir (has zoo.json), image-folder root `root/<model>/*.png`, or a GMData.
    real: any real source of `fpjax.compute_artifacts` (embedded name, 'tfds:<name>[:<split>]',
      .npy/.npz of images, image folder); a zoo's own by default.
    workdir: output folder (tables.md, tables.json, report.md, figures/, encoders/, artifacts/).
    spaces: ManiFPT spaces among `protocols.MANIFPT_SPACES`; 'sl' is skipped (one warning) when
      the real source has no labels.
    splits: number (>= 1) of train/validation splits, each with its own split and classifier
      seed (split_seed + i); tables give mean ± std over them.
    estimators: manifold estimator names (`fpjax.estimators.ESTIMATORS`, or
      `fpjax.estimators.parse_estimators(['all'])`); the input control is always added.
    estimator_spaces: the spaces `estimators` run in (None: every space); the others run nn
      and the control.
    attributor_estimators: the estimators the attributor runs on (None: all, with the control);
      'best' = per split the one the probe chose on the inner validation.
    baselines: names in `fpjax.baselines.BASELINES` (None: all nine); they read the images of
      the stores' rows in slices.
    classifiers: 'probe' and/or 'attributor' on the artifacts.
    cross: pairs (train_gm, test_gm) for Table 2 (paths or GMData; zoos bring their real).
    cross_estimators: Table 2's estimators (each at its default candidate) and the control.
    cross_baselines: baselines for Table 2 (None: the same as Table 1).
    cross_classifiers: Table 2's classifiers on the artifacts (None: `classifiers`).
    shots: enrolment samples per new model in the few-shot protocol.
    encoder_steps: {'sl': steps, 'ssl': steps} for the SL/SSL encoders (default: their preset).
    cfg / cross_cfg: {'probe': LinearProbe kwargs (not l2, epochs), 'selection': {'l2': (...),
      'max_epochs': e, 'patience': p, 'inner_fraction': f} (default protocols.SELECTION),
      'attributor': Attributor overrides, 'attributor_preset': 'quick'|'paper'} for Table 1 /
      Table 2.
    baseline_cfg: {baseline name: constructor kwargs}.
    table3_max_rows / openset_max_per_model / figure_max_rows: sizes of the stratified
      samples Table 3, the open set and the embedding figure hold in RAM.
    bootstrap_resamples: resamples of the paired bootstrap of the diff rows.
    artifact_kwargs: keyword arguments of `fpjax.compute_artifacts` for missing stores
      (precision, batch_size, device_bank_bytes, num_threads, ...).
  """
  t_start, c_start = time.time(), time.process_time()
  timings = dict(timings or {})
  cfg = cfg or {}
  # Bad settings are refused before anything is computed.
  names, cross_names = _check_settings(splits, estimators, attributor_estimators,
                                       cross_estimators, estimator_spaces, spaces)
  zoo_reference = None
  if isinstance(gm, str):
    zoo_reference = os.path.join(gm, 'reference')  # a zoo's realism reference (fpjax.zoo.quality)
    gm = protocols.load_gm(gm, real)
  writer = _is_writer()
  fig_dir = os.path.join(workdir, 'figures')
  logging.info('evaluate: %s, %d images of %d models, real %r (%d bank images), spaces %s, '
               'estimators %s, %s splits', gm.name, len(gm.source), len(gm.class_names),
               gm.real, gm.bank_size, list(spaces), names, splits)

  t, c = time.time(), time.process_time()
  encoders = protocols.make_encoders(spaces, gm.real, workdir=workdir,
                                     encoder_steps=encoder_steps, zoo_reference=zoo_reference)
  _stop(timings, 'encoders', t, c)
  t, c = time.time(), time.process_time()
  per_space = {s: (names if estimator_spaces is None or s in estimator_spaces
                   else ['nn', protocols.CONTROL]) for s in encoders}
  feats = protocols.open_features(gm, encoders, workdir, estimators=per_space,
                                  artifact_kwargs=artifact_kwargs)
  _stop(timings, 'artifacts', t, c)
  split_list = protocols.make_splits(feats.labels, splits, seed=split_seed,
                                     inner_fraction=protocols._selection(cfg)['inner_fraction'])
  if writer:
    os.makedirs(fig_dir, exist_ok=True)
  bad = {s: st.num_bad_rows for s, st in feats.stores.items() if st.num_bad_rows}
  if bad:
    logging.warning('evaluate: %d bad file(s) of %s skipped (listed in %s)', max(bad.values()),
                    gm.name, ', '.join(os.path.join(st.workdir, 'bad_inputs.jsonl')
                                       for st in feats.stores.values()))

  t, c = time.time(), time.process_time()
  t1 = protocols.table1(feats, split_list, baselines=baselines, classifiers=classifiers,
                        attributor_estimators=attributor_estimators, cfg=cfg,
                        baseline_cfg=baseline_cfg)
  _stop(timings, 'table1', t, c)
  for part, (wall, cpu) in t1['cost'].items():
    timings[f'table1_{part}_s'], timings[f'table1_{part}_cpu_s'] = wall, cpu
  timings['table1_selection_fits'] = t1['selection_fits']
  rows = list(t1['rows'])
  t, c = time.time(), time.process_time()
  rows += protocols.diff_rows(t1, num_resamples=bootstrap_resamples, seed=split_seed)
  _stop(timings, 'diff', t, c)

  t, c = time.time(), time.process_time()
  if gm.tags and feats.stores:
    rows += protocols.table3(feats, choices=t1['choices'], pca_dim=table3_pca_dim,
                             max_rows=table3_max_rows, seed=split_seed)
  elif not gm.tags:
    logging.info('Table 3 skipped: %s has no design-knob tags (not a zoo)', gm.name)
  _stop(timings, 'table3', t, c)

  t, c = time.time(), time.process_time()
  if len(gm.class_names) >= 3:
    train0 = np.zeros(feats.num_rows, bool)
    train0[split_list[0].train] = True
    rows += protocols.openset(feats, train0, choices=t1['choices'], baselines=baselines,
                              baseline_cfg=baseline_cfg, shots=shots,
                              max_per_model=openset_max_per_model, seed=split_seed)
  _stop(timings, 'openset', t, c)

  t, c = time.time(), time.process_time()
  cross_b = baselines if cross_baselines is None else cross_baselines
  for src, tgt in cross:
    sides = []
    for side in (src, tgt):
      side = protocols.load_gm(side) if isinstance(side, str) else side
      # The same encoders on both sides: each side's artifacts in the same embedding.
      sides.append(protocols.open_features(side, encoders, workdir, estimators=cross_names,
                                           artifact_kwargs=artifact_kwargs))
    rows += protocols.table2(*sides, split_list,
                             baselines=list(cross_b) if cross_b is not None else None,
                             classifiers=classifiers if cross_classifiers is None
                             else cross_classifiers, cfg=cross_cfg if cross_cfg else cfg,
                             baseline_cfg=baseline_cfg)
  _stop(timings, 'table2', t, c)

  md = report_lib.markdown_tables(rows)
  files = {}
  if writer:
    t, c = time.time(), time.process_time()
    if figures:
      files.update(_figures(feats, t1, fig_dir, figure_max_rows, split_seed))
    _stop(timings, 'figures', t, c)
    _stop(timings, 'evaluate', t_start, c_start)
    skipped = [s for s in spaces if s not in encoders]
    sel = protocols._selection(cfg)
    config = dict(gm=gm.name, real=gm.real, models=gm.class_names, num_images=feats.num_rows,
                  bad_files_skipped=max(bad.values(), default=0),
                  spaces=list(encoders), skipped_spaces=skipped, estimators=names,
                  estimators_per_space={s: feats.names(s) for s in feats.stores},
                  estimator_keys={s: list(st.estimators) for s, st in feats.stores.items()},
                  attributor_estimators=(names if attributor_estimators is None
                                         else list(attributor_estimators)),
                  baselines=baselines, classifiers=list(classifiers),
                  splits=protocols.split_config(split_list),
                  split=(f'{len(split_list)} splits, 70/30 per model; split i uses seed '
                         f'{split_seed} + i for its mask, its inner split and its classifiers'),
                  selection=dict(
                      protocol=('on each split\'s training part only: the probe is fit on the '
                                f'inner-train rows ({1 - sel["inner_fraction"]:.0%} per model) '
                                'with early stopping on the inner-validation rows (lowest '
                                f'inner-validation loss, at most {sel["max_epochs"]} epochs, '
                                f'patience {sel["patience"]}) and scored by its inner-validation '
                                'accuracy at that epoch; coordinate-wise: estimator key '
                                '(fpjax.estimators.grid), then l2; ties keep the default (first) '
                                'candidate; the reported fit uses the chosen key, l2 and epoch '
                                'count on the whole training part, no early stopping; the '
                                'attributor uses the key the probe chose'),
                      l2=list(sel['l2']), max_epochs=sel['max_epochs'],
                      patience=sel['patience'],
                      choices=protocols.choices_config(t1['choices'])),
                  diff=('paired bootstrap 95 % percentile interval (metrics.paired_bootstrap, '
                        f'{bootstrap_resamples} resamples) on every split\'s validation rows: '
                        'the best ManiFPT row vs the best baseline (best = highest mean '
                        'accuracy of Table 1), the best ManiFPT row vs the best row of another '
                        'estimator, per space and classifier the best estimator vs the '
                        'runner-up, each estimator vs its input control (same space and '
                        'classifier)'),
                  shots=shots,
                  cross=[f'{r}' for r in dict.fromkeys(r['dataset'] for r in rows
                                                       if r['table'] == '2')],
                  cross_estimators=cross_names,
                  cfg=cfg, cross_cfg=cross_cfg, baseline_cfg=baseline_cfg,
                  encoder_steps=encoder_steps,
                  artifact_stores='WORKDIR/artifacts/<gm>/<space>/<estimators>, written by '
                                  'fpjax.compute_artifacts',
                  table2=('all of one zoo trains, all of the other tests; each estimator at its '
                          'default candidate, the probe at the first l2 candidate with early '
                          'stopping on an inner split of the training zoo; one fit per '
                          'split\'s classifier seed'),
                  table3=dict(
                      rows=f'stratified sample of at most {table3_max_rows} rows (seed '
                           f'{split_seed})',
                      estimator_key='per estimator, the key split 0\'s inner validation chose',
                      features='artifacts z-scored per coordinate, PCA to %d dims' % table3_pca_dim,
                      clustering='k-means (n_init=10), k = number of distinct knob values; '
                                 "models tagged 'n/a' left out per knob",
                      nmi='sklearn normalized_mutual_info_score (arithmetic)'),
                  openset=dict(
                      rows=f'stratified sample of at most {openset_max_per_model} rows per model '
                           f'(seed {split_seed})',
                      estimator_key='per estimator, the key split 0\'s inner validation chose',
                      protocols='fpjax.attribution.openset nearest prototype; enrolment = the '
                                'split-0 train rows of the sample'),
                  **(extra_config or {}))
    files['tables.json'] = os.path.join(workdir, 'tables.json')
    report_lib.write_json(files['tables.json'], rows, config, timings)
    files['tables.md'] = os.path.join(workdir, 'tables.md')
    with open(files['tables.md'], 'w', encoding='utf-8') as f:
      f.write(md + '\n')
    files['report.md'] = os.path.join(workdir, 'report.md')
    with open(files['report.md'], 'w', encoding='utf-8') as f:
      f.write(report_lib.report_markdown(rows, gm, config, timings, files, workdir))
  if print_tables:
    print(md, flush=True)
  logging.info('evaluate: done in %.0fs -> %s', time.time() - t_start, workdir)
  return Evaluation(rows, workdir, files, md)


def _figures(feats, t1, fig_dir, max_rows: int, seed: int) -> dict:
  """Figures of split 0: confusion matrices (the probe on each space's first estimator, the
  best baseline), the embedding of the validation artifacts, mean artifacts and spectra."""
  files = {}
  names = feats.gm.class_names
  k = len(names)
  val = t1['splits'][0].val
  y_va = feats.labels[val]
  conf = {}
  for r in t1['rows']:
    if (r['space'] is not None and r['classifier'] == 'probe'
        and r['estimator'] == feats.names(r['space'])[0]):
      label = report_lib.row_label(r)
      conf[label] = metrics.confusion_matrix(y_va, t1['predictions'][label][0], k)
  base = [r for r in t1['rows'] if r['space'] is None]
  if base:
    best = max(base, key=lambda r: r['accuracy_mean'])
    conf[f'{best["method"]} (best baseline)'] = metrics.confusion_matrix(
        y_va, t1['predictions'][report_lib.row_label(best)][0], k)
  if conf:
    files['confusion'] = report_lib.plot_confusions(
        os.path.join(fig_dir, 'confusion.png'), conf, names)
  if feats.stores:
    # A bounded stratified sample of the validation rows: the figure needs no more.
    sample = val[protocols.stratified_sample(y_va, max(1, max_rows // k), seed)]
    files['embedding'] = report_lib.plot_embeddings(
        os.path.join(fig_dir, 'embedding_pca.png'),
        {f'{s.upper()} {feats.names(s)[0]} artifacts (val)':
         feats.artifacts(s, feats.keys(feats.names(s)[0])[0])[sample] for s in feats.stores},
        feats.labels[sample], names)
  for s, store in feats.stores.items():
    if len(store.embedding_shape) != 3 or s not in ('rgb', 'freq', 'dct'):
      continue
    # The store's FingerprintStats of its first estimator, streamed over every row when the
    # store was written.
    st = fileio.load_array(store.stats_path)
    files[f'mean_artifact_{s}'] = report_lib.plot_mean_artifacts(
        os.path.join(fig_dir, f'mean_artifact_{s}.png'), st, names,
        f'mean {s.upper()} {store.estimators[0]} artifact per model')
    if s == 'rgb':
      files['spectra_rgb'] = report_lib.plot_spectra(
          os.path.join(fig_dir, 'spectra_rgb.png'), st, names,
          f'power spectrum of RGB {store.estimators[0]} artifacts per model')
  return files


def run_demo(workdir: str = '/tmp/fpjax_demo', *, preset: str = 'quick', real: str = 'mnist5k',
             cross_preset: str = 'cross', cross_num_samples: int | None = None,
             cross_reals=('mnist5k_0to4', 'mnist5k_5to9'), spaces=protocols.MANIFPT_SPACES,
             splits: int = 3, estimators=('all',),
             estimator_spaces=DEMO_CONFIG['estimator_spaces'],
             attributor_estimators=DEMO_CONFIG['attributor_estimators'],
             cross_estimators=('nn',), baselines=DEMO_CONFIG['baselines'],
             cross_baselines=DEMO_CONFIG['cross_baselines'],
             cross_classifiers=DEMO_CONFIG['cross_classifiers'],
             classifiers=protocols.CLASSIFIERS, cfg: dict | None = None,
             cross_cfg: dict | None = None, encoder_steps: dict | None = None,
             zoo: str | None = None, artifact_kwargs: dict | None = None) -> Evaluation:
  """The main job: build (or reuse) the zoos, then the whole evaluation, printed and written.

  WORKDIR/zoo (preset `preset` on `real`) is the Table 1/3 dataset (`zoo`: another zoo
  workdir to evaluate instead, reused as it is); WORKDIR/zoo_<cross_preset>_<r> for each r of
  `cross_reals` are the Table 2 datasets, evaluated in both directions.
  `cross_num_samples` (None: the preset's) sets the samples per model of those zoos.
  A zoo already complete in its folder is reused (build_zoo is a no-op then). By default every
  estimator runs with the probe and the attributor runs on DEMO_CONFIG's
  attributor_estimators (None: on every estimator); tables.json's config['demo'] records what
  ran. The other arguments are `evaluate`'s.
  """
  from fpjax import zoo as zoo_lib
  # Bad settings are refused before the zoo is built.
  _check_settings(splits, estimators, attributor_estimators, cross_estimators, estimator_spaces,
                  spaces)
  timings = {}
  t, c = time.time(), time.process_time()
  zoo_dir = zoo or os.path.join(workdir, 'zoo')
  cross_dirs = [os.path.join(workdir, f'zoo_{cross_preset}_{r}') for r in cross_reals]
  # One pool of workers trains every zoo: while Table 1 runs on the first, the workers go on
  # training Table 2's (2 cores stay busy; each zoo alone would leave them idle in turns).
  zoos = zoo_lib.build_zoos(
      ([] if zoo else [zoo_lib.ZooSpec(zoo_dir, preset, real)])
      + [zoo_lib.ZooSpec(d, cross_preset, r, num_samples=cross_num_samples)
         for d, r in zip(cross_dirs, cross_reals)])
  if zoo is None:
    next(zoos)
  _stop(timings, 'zoo', t, c)

  def cross_pairs():  # Table 2's pairs, once their zoos are complete
    t = time.time()
    for _ in cross_dirs:
      next(zoos)
    logging.info('run_demo: the Table 2 zoos were ready %.0f s after Table 2 asked for them',
                 time.time() - t)
    a, b = (protocols.load_gm(d) for d in cross_dirs)
    yield a, b
    yield b, a

  has_cross = len(cross_dirs) == 2
  cfg = DEMO_CONFIG['cfg'] if cfg is None else cfg
  try:
    return evaluate(zoo_dir, None if zoo else real, workdir, spaces=spaces, splits=splits,
                    estimators=estimators, estimator_spaces=estimator_spaces,
                    attributor_estimators=attributor_estimators, baselines=baselines,
                    classifiers=classifiers, cross=cross_pairs() if has_cross else [],
                    cross_estimators=cross_estimators,
                    cross_baselines=cross_baselines, cross_classifiers=cross_classifiers, cfg=cfg,
                    cross_cfg=DEMO_CONFIG['cross_cfg'] if cross_cfg is None else cross_cfg,
                    encoder_steps=DEMO_CONFIG['encoder_steps'] if encoder_steps is None
                    else encoder_steps, artifact_kwargs=artifact_kwargs, timings=timings,
                    extra_config=dict(demo=dict(
                        preset=preset, zoo=zoo, cross_preset=cross_preset,
                        cross_num_samples=cross_num_samples,
                        **demo_coverage(spaces, estimators, estimator_spaces, classifiers,
                                        attributor_estimators, baselines, cross_estimators,
                                        cross_baselines, cross_classifiers, has_cross))))
  finally:
    zoos.close()  # the pool ends (jobs not started are cancelled)


def demo_coverage(spaces, estimators, estimator_spaces, classifiers, attributor_estimators,
                  baselines, cross_estimators, cross_baselines, cross_classifiers,
                  cross: bool) -> dict:
  """{'ran': [...], 'left_out': [...]}: what the demo's settings run of the full evaluation
  (every estimator with both classifiers in every space, every baseline, Table 2 with both
  classifiers), in words, for config['demo'] and the report."""
  from fpjax import estimators as est_lib
  from fpjax.baselines import BASELINES
  names = [n for n in est_lib.parse_estimators(list(estimators)) if n != protocols.CONTROL]
  est_spaces = list(spaces) if estimator_spaces is None else [s for s in spaces
                                                               if s in estimator_spaces]
  rest = [s for s in spaces if s not in est_spaces]
  up = lambda ss: ', '.join(s.upper() for s in ss)
  ran, left = [], []
  if 'probe' in classifiers:
    ran.append(f'Table 1, the linear probe: the estimators {", ".join(names)} and the input '
               f'control in {up(est_spaces)}' + (f'; nn and the input control in {up(rest)}'
                                                  if rest else '') + '.')
    other = [n for n in names if n != 'nn']
    if rest and other:
      left.append(f'Table 1: the estimators {", ".join(other)} in {up(rest)} (run them with '
                  f'--estimator_spaces={",".join(spaces)}).')
  if 'attributor' in classifiers:
    att = ('every estimator and the input control' if attributor_estimators is None else
           ', '.join("the probe's choice per split ('best')" if n == protocols.BEST else
                     'the input control' if n == protocols.CONTROL else n
                     for n in attributor_estimators))
    ran.append(f'Table 1, the attributor: {att}, in every space.')
    if attributor_estimators is not None:
      left.append('Table 1: the attributor on the other estimators one by one (run them with '
                  '--attributor_estimators=all).')
  all_b = list(BASELINES)
  run_b = all_b if baselines is None else list(baselines)
  ran.append('Baselines: ' + (', '.join(run_b) or 'none') + '.')
  if len(run_b) < len(all_b):
    left.append('Baselines ' + ', '.join(b for b in all_b if b not in run_b)
                + ' (run them with --baselines=all).')
  if cross:
    cc = list(classifiers if cross_classifiers is None else cross_classifiers)
    ran.append(f'Table 2: the {" and the ".join(cc)} on {", ".join(cross_estimators)} and the '
               'input control in every space; baselines '
               + (', '.join(all_b if cross_baselines is None else cross_baselines) or 'none')
               + '.')
    if cross_classifiers is not None and set(classifiers) - set(cc):
      left.append('Table 2: the ' + ', '.join(sorted(set(classifiers) - set(cc)))
                  + ' (run it with --cross_classifiers='
                  + ','.join(dict.fromkeys(list(cc) + list(classifiers))) + ').')
  return dict(ran=ran, left_out=left)
