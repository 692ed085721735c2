"""`evaluate(config, workdir)`: Tables 1-3, open set, intervals, figures and report.md of one GM
dataset; the binary `fpjax.bin.evaluate` and notebooks call it (the demo: fpjax.evals.demo).

`config` holds the keys of fpjax/configs/evaluate.py (a ConfigDict or a dict of the keys to
change); `settings` turns it into plain values. Only process 0 writes files; every process
computes (single-process on CPU).
"""
from __future__ import annotations

import dataclasses
import os
import time

from absl import logging
import numpy as np

from fpjax import configs
from fpjax import estimators as est_lib
from fpjax import fileio
from fpjax import parallel
from fpjax import report as report_lib
from fpjax.errors import UserInputError
from fpjax.estimators import CONTROL
from fpjax.evals import encoders as encoders_lib
from fpjax.evals import metrics
from fpjax.evals.classifiers import selection_options
from fpjax.evals.features import open_features
from fpjax.evals.gm_data import load_gm
from fpjax.evals.open_set import openset
from fpjax.evals.splits import (check_num_splits, choices_config, make_splits, split_config,
                                stratified_sample)
from fpjax.evals.table1_accuracy import BEST, diff_rows, table1
from fpjax.evals.table2_cross_dataset import table2
from fpjax.evals.table3_knobs import table3


@dataclasses.dataclass
class Evaluation:
  rows: list
  workdir: str
  files: dict          # name -> path of everything written
  markdown: str        # tables as markdown (what is printed)


def names_of(value) -> list:
  """'a,b' or a sequence -> ['a', 'b']."""
  if isinstance(value, str):
    return [v.strip() for v in value.split(',') if v.strip()]
  return [] if value is None else list(value)


def _all_or_names(value):
  """'all' -> None (every one), 'none' -> [], else the names."""
  names = names_of(value)
  if names == ['all']:
    return None
  return [] if names in (['none'], []) else names


def settings(config, base: str = 'evaluate') -> dict:
  """config (a ConfigDict or dict of the keys of fpjax/configs/<base>.py to change) -> the
  config's plain values: name lists as lists, 'all' -> None, 'none' -> [], Table 2's None
  settings -> Table 1's, encoder_steps and attributor overrides without their None entries."""
  given = config.to_dict() if hasattr(config, 'to_dict') else dict(config)
  s = configs.get_config(base).to_dict()
  unknown = sorted(set(given) - set(s))
  if unknown:
    raise UserInputError(f'config: unknown keys {unknown}; see fpjax/configs/{base}.py')
  s.update(given)
  for key in ('spaces', 'estimators', 'classifiers', 'cross_estimators'):
    s[key] = names_of(s[key])
  for key in ('estimator_spaces', 'attributor_estimators', 'baselines'):
    s[key] = _all_or_names(s[key])
  s['cross_baselines'] = (s['baselines'] if s['cross_baselines'] is None
                          else _all_or_names(s['cross_baselines']))
  s['cross_classifiers'] = (s['classifiers'] if s['cross_classifiers'] is None
                            else names_of(s['cross_classifiers']))
  if 'cross' in s:
    s['cross'] = [tuple(p.split(':', 1)) for p in names_of(s['cross'])]
    if any(len(p) != 2 for p in s['cross']):
      raise UserInputError(f"cross: pairs are TRAIN_GM:TEST_GM, got {given.get('cross')!r}")
  s['encoder_steps'] = {k: v for k, v in dict(s['encoder_steps']).items() if v is not None}
  cfg = dict(s['cfg'])
  cfg['attributor'] = {k: v for k, v in dict(cfg.get('attributor', {})).items()
                       if v is not None}
  s['cfg'] = cfg
  s['splits'] = check_num_splits(s['splits'])
  return s


def check_settings(s: dict):
  """(estimator names, Table 2's names), each with the control last; a UserInputError names a
  bad estimators, estimator_spaces or attributor_estimators setting."""
  for sp in s['estimator_spaces'] or ():
    if sp not in s['spaces']:
      raise UserInputError(f'--estimator_spaces: {sp!r} is not among the spaces {s["spaces"]}')
  with_control = lambda values: [n for n in est_lib.parse_estimators(list(values))
                                 if n != CONTROL] + [CONTROL]
  names = with_control(s['estimators'])
  for n in s['attributor_estimators'] or ():
    if n not in names + [BEST]:
      raise UserInputError(f'--attributor_estimators: {n!r} is not among the estimators '
                           f'{names} (or {BEST!r})')
  return names, with_control(s['cross_estimators'])


def record_time(timings: dict, stage: str, wall0: float, cpu0: float) -> None:
  """timings[stage_s] = wall seconds, timings[stage_cpu_s] = this process's CPU seconds (all
  threads) since (wall0, cpu0): on a shared machine the CPU time is the comparable number."""
  timings[f'{stage}_s'] = time.time() - wall0
  timings[f'{stage}_cpu_s'] = time.process_time() - cpu0


def evaluate(config, workdir: str, *, gm=None, cross=None) -> Evaluation:
  """Runs the paper's evaluation on one GM dataset and writes tables, figures and report.md.

  The artifacts come from one store per (GM dataset, real source, space, estimator set),
  written by `fpjax.compute_artifacts` in WORKDIR/artifacts/<gm name>/<space>/<estimators> and
  computed first when missing (a complete store is reused, a partial one resumed); every table
  streams over the stores, so neither all images nor all artifacts are ever in RAM.

  Args:
    config: the keys of fpjax/configs/evaluate.py (gm, real, spaces, splits, estimators, ...;
      their meaning is written there), as a ConfigDict or a dict of the keys to change.
    workdir: output folder (tables.md, tables.json, report.md, figures/, encoders/, artifacts/).
    gm: a GMData instead of config.gm (a zoo workdir or an image-folder root).
    cross: Table 2 pairs (train, test) of paths or GMData instead of config.cross.
  """
  s = settings(config)
  if gm is None and not s['gm']:
    raise UserInputError('--config.gm is required (a zoo workdir or an image-folder root)')
  return run(s, workdir, gm=s['gm'] if gm is None else gm,
             cross=s['cross'] if cross is None else cross)


def run(s: dict, workdir: str, *, gm, cross, timings: dict | None = None,
        extra_config: dict | None = None) -> Evaluation:
  """`evaluate` on settings `s` (`settings(config)`); run_demo adds its timings and config."""
  t_start, c_start = time.time(), time.process_time()
  timings = dict(timings or {})
  names, cross_names = check_settings(s)  # bad settings are refused before anything is computed
  zoo_reference = None
  if isinstance(gm, str):
    zoo_reference = os.path.join(gm, 'reference')  # a zoo's realism reference (fpjax.zoo.quality)
    gm = load_gm(gm, s['real'])
  logging.info('evaluate: %s, %d images of %d models, real %r (%d bank images), spaces %s, '
               'estimators %s, %s splits', gm.name, len(gm.source), len(gm.class_names),
               gm.real, gm.bank_size, s['spaces'], names, s['splits'])
  t, c = time.time(), time.process_time()
  encoders = encoders_lib.make_encoders(s['spaces'], gm.real, workdir=workdir,
                                        encoder_steps=s['encoder_steps'] or None,
                                        zoo_reference=zoo_reference)
  record_time(timings, 'encoders', t, c)
  t, c = time.time(), time.process_time()
  per_space = {sp: (names if s['estimator_spaces'] is None or sp in s['estimator_spaces']
                    else ['nn', CONTROL]) for sp in encoders}
  feats = open_features(gm, encoders, workdir, estimators=per_space,
                        artifact_kwargs=s['artifacts'])
  record_time(timings, 'artifacts', t, c)
  bad = {sp: st.num_bad_rows for sp, st in feats.stores.items() if st.num_bad_rows}
  if bad:
    logging.warning('evaluate: %d bad file(s) of %s skipped (listed in %s)', max(bad.values()),
                    gm.name, ', '.join(os.path.join(st.workdir, 'bad_inputs.jsonl')
                                       for st in feats.stores.values()))
  rows, t1, split_list = _tables(s, workdir, gm, feats, encoders, cross, cross_names, timings)
  md = report_lib.markdown_tables(rows)
  files = {}
  if parallel.is_chief():
    fig_dir = os.path.join(workdir, 'figures')
    os.makedirs(fig_dir, exist_ok=True)
    t, c = time.time(), time.process_time()
    if s['figures']:
      files.update(_figures(feats, t1, fig_dir, s['figure_max_rows'], s['split_seed']))
    record_time(timings, 'figures', t, c)
    record_time(timings, 'evaluate', t_start, c_start)
    config = _run_config(s, gm, feats, encoders, names, cross_names, t1, split_list, rows,
                         max(bad.values(), default=0))
    config.update(extra_config or {})
    files.update(_write(workdir, rows, md, gm, config, timings, files))
  if s['print_tables']:
    print(md, flush=True)
  logging.info('evaluate: done in %.0fs -> %s', time.time() - t_start, workdir)
  return Evaluation(rows, workdir, files, md)


def _tables(s: dict, workdir: str, gm, feats, encoders, cross, cross_names, timings: dict):
  """(rows of Tables 1-3, diff, open set and Table 2; table1's result; the splits)."""
  seed = s['split_seed']
  split_list = make_splits(feats.labels, s['splits'], seed=seed,
                           inner_fraction=selection_options(s['cfg'])['inner_fraction'])
  t, c = time.time(), time.process_time()
  t1 = table1(feats, split_list, baselines=s['baselines'], classifiers=s['classifiers'],
              attributor_estimators=s['attributor_estimators'], cfg=s['cfg'],
              baseline_cfg=s['baseline_cfg'])
  record_time(timings, 'table1', t, c)
  for part, (wall, cpu) in t1['cost'].items():
    timings[f'table1_{part}_s'], timings[f'table1_{part}_cpu_s'] = wall, cpu
  timings['table1_selection_fits'] = t1['selection_fits']
  rows = list(t1['rows'])
  t, c = time.time(), time.process_time()
  rows += diff_rows(t1, num_resamples=s['bootstrap_resamples'], seed=seed)
  record_time(timings, 'diff', t, c)
  t, c = time.time(), time.process_time()
  if gm.tags and feats.stores:
    rows += table3(feats, choices=t1['choices'], pca_dim=s['table3_pca_dim'],
                   max_rows=s['table3_max_rows'], seed=seed)
  elif not gm.tags:
    logging.info('Table 3 skipped: %s has no design-knob tags (not a zoo)', gm.name)
  record_time(timings, 'table3', t, c)
  t, c = time.time(), time.process_time()
  if len(gm.class_names) >= 3:
    train0 = np.zeros(feats.num_rows, bool)
    train0[split_list[0].train] = True
    rows += openset(feats, train0, choices=t1['choices'], baselines=s['baselines'],
                    baseline_cfg=s['baseline_cfg'], shots=s['shots'],
                    max_per_model=s['openset_max_per_model'], seed=seed)
  record_time(timings, 'openset', t, c)
  t, c = time.time(), time.process_time()
  for src, tgt in cross:
    # The same encoders on both sides: each side's artifacts in the same embedding.
    sides = [open_features(load_gm(side) if isinstance(side, str) else side, encoders, workdir,
                           estimators=cross_names, artifact_kwargs=s['artifacts'])
             for side in (src, tgt)]
    rows += table2(*sides, split_list, baselines=s['cross_baselines'],
                   classifiers=s['cross_classifiers'], cfg=s['cfg'],
                   baseline_cfg=s['baseline_cfg'])
  record_time(timings, 'table2', t, c)
  return rows, t1, split_list


def _run_config(s: dict, gm, feats, encoders, names, cross_names, t1, split_list, rows,
                bad_files: int) -> dict:
  """tables.json's config: what ran and how, in the words the report prints. (One dict literal
  of the protocol's descriptions: longer than 80 lines and clearer in one piece.)"""
  sel = selection_options(s['cfg'])
  seed, att = s['split_seed'], s['attributor_estimators']
  return dict(
      gm=gm.name, real=gm.real, models=gm.class_names, num_images=feats.num_rows,
      bad_files_skipped=bad_files, spaces=list(encoders),
      skipped_spaces=[sp for sp in s['spaces'] if sp not in encoders], estimators=names,
      estimators_per_space={sp: feats.names(sp) for sp in feats.stores},
      estimator_keys={sp: list(st.estimators) for sp, st in feats.stores.items()},
      attributor_estimators=names if att is None else list(att),
      baselines=s['baselines'], classifiers=list(s['classifiers']),
      splits=split_config(split_list),
      split=(f'{len(split_list)} splits, 70/30 per model; split i uses seed {seed} + i for its '
             'mask, its inner split and its classifiers'),
      selection=dict(
          protocol=('on each split\'s training part only: the probe is fit on the inner-train '
                    f'rows ({1 - sel["inner_fraction"]:.0%} per model) with early stopping on '
                    'the inner-validation rows (lowest inner-validation loss, at most '
                    f'{sel["max_epochs"]} epochs, patience {sel["patience"]}) and scored by its '
                    'inner-validation accuracy at that epoch; coordinate-wise: estimator key '
                    '(fpjax.estimators.grid), then l2; ties keep the default (first) '
                    'candidate; the reported fit uses the chosen key, l2 and epoch count on the '
                    'whole training part, no early stopping; the attributor uses the key the '
                    'probe chose'),
          l2=list(sel['l2']), max_epochs=sel['max_epochs'], patience=sel['patience'],
          choices=choices_config(t1['choices'])),
      diff=('paired bootstrap 95 % percentile interval (metrics.paired_bootstrap, '
            f'{s["bootstrap_resamples"]} resamples) on every split\'s validation rows: the best '
            'ManiFPT row vs the best baseline (best = highest mean accuracy of Table 1), the '
            'best ManiFPT row vs the best row of another estimator, per space and classifier '
            'the best estimator vs the runner-up, each estimator vs its input control (same '
            'space and classifier)'),
      shots=s['shots'],
      cross=[f'{r}' for r in dict.fromkeys(r['dataset'] for r in rows if r['table'] == '2')],
      cross_estimators=cross_names, cfg=s['cfg'], baseline_cfg=s['baseline_cfg'],
      encoder_steps=s['encoder_steps'] or None,
      artifact_stores='WORKDIR/artifacts/<gm>/<space>/<estimators>, written by '
                      'fpjax.compute_artifacts',
      table2=('all of one zoo trains, all of the other tests; each estimator at its default '
              'candidate, the probe at the first l2 candidate with early stopping on an inner '
              'split of the training zoo; one fit per split\'s classifier seed'),
      table3=dict(
          rows=f'stratified sample of at most {s["table3_max_rows"]} rows (seed {seed})',
          estimator_key='per estimator, the key split 0\'s inner validation chose',
          features=f'artifacts z-scored per coordinate, PCA to {s["table3_pca_dim"]} dims',
          clustering='k-means (n_init=10), k = number of distinct knob values; models tagged '
                     "'n/a' left out per knob",
          nmi='sklearn normalized_mutual_info_score (arithmetic)'),
      openset=dict(
          rows=(f'stratified sample of at most {s["openset_max_per_model"]} rows per model '
                f'(seed {seed})'),
          estimator_key='per estimator, the key split 0\'s inner validation chose',
          protocols='fpjax.attribution.openset nearest prototype; enrolment = the split-0 '
                    'train rows of the sample'))


def _write(workdir: str, rows, md: str, gm, config: dict, timings: dict, files: dict) -> dict:
  """Writes tables.json, tables.md and report.md; returns their paths by name."""
  out = {name: os.path.join(workdir, name) for name in ('tables.json', 'tables.md', 'report.md')}
  report_lib.write_json(out['tables.json'], rows, config, timings)
  report = report_lib.report_markdown(rows, gm, config, timings, dict(files, **out), workdir)
  for name, text in (('tables.md', md + '\n'), ('report.md', report)):
    fileio.atomic_write(out[name], lambda f, text=text: f.write(text.encode('utf-8')))
  return out


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
    sample = val[stratified_sample(y_va, max(1, max_rows // k), seed)]
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


