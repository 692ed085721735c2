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

from fpjax.analysis import metrics
from fpjax.analysis import protocols
from fpjax.analysis import report as report_lib

# The demo's sizing: the whole run, zoo build included, fits 15 minutes on 2 CPU cores
# (timings in the helper-eval notes). Classifier seeds vary the classifier's initialisation and
# minibatch order; the 70/30 split is fixed (split_seed) so every method sees the same images.
DEMO_CONFIG = dict(
    cfg={'attributor': dict(widths=(8, 16, 32), epochs=5, milestones=(3, 4))},
    cross_cfg={'attributor': dict(widths=(8, 16, 32), epochs=5, milestones=(3, 4))},
    encoder_steps={'sl': 150, 'ssl': 60},
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


def _is_writer() -> bool:
  import jax
  return jax.process_index() == 0


def evaluate(gm, real=None, workdir: str = '/tmp/fpjax_eval', *, spaces=protocols.MANIFPT_SPACES,
             seeds=3, baselines=None, classifiers=protocols.CLASSIFIERS, cross=(),
             cross_baselines=None, shots: int = 10, encoder_steps: dict | None = None,
             cfg: dict | None = None, cross_cfg: dict | None = None,
             baseline_cfg: dict | None = None, split_seed: int = 0, table3_pca_dim: int = 32,
             table3_max_rows: int = 20000, openset_max_per_model: int = 500,
             figure_max_rows: int = 2000, artifact_kwargs: dict | None = None,
             figures: bool = True, print_tables: bool = True, extra_config: dict | None = None,
             timings: dict | None = None) -> Evaluation:
  """Runs the paper's evaluation on one GM dataset and writes tables, figures and report.md.

  The artifacts come from one store per (GM dataset, real source, space), written by
  `fpjax.compute_artifacts` in WORKDIR/artifacts/<gm name>/<space> and computed first when
  missing (a complete store is reused, a partial one resumed); every table streams over the
  stores, so neither all images nor all artifacts are ever in RAM.

  Args:
    gm: zoo workdir (has zoo.json), image-folder root `root/<model>/*.png`, or a GMData.
    real: any real source of `fpjax.compute_artifacts` (embedded name, 'tfds:<name>[:<split>]',
      .npy/.npz of images, image folder); a zoo's own by default.
    workdir: output folder (tables.md, tables.json, report.md, figures/, encoders/, artifacts/).
    spaces: ManiFPT spaces among `protocols.MANIFPT_SPACES`; 'sl' is skipped (one warning) when
      the real source has no labels.
    seeds: number of classifier seeds (int) or a list of seeds; >= 3 for mean ± std.
    baselines: names in `fpjax.baselines.BASELINES` (None: all nine); they read the images of
      the stores' rows in slices.
    classifiers: 'probe' and/or 'attributor' on the artifacts.
    cross: pairs (train_gm, test_gm) for Table 2 (paths or GMData; zoos bring their real).
    cross_baselines: baselines for Table 2 (None: the same as Table 1).
    shots: enrolment samples per new model in the few-shot protocol.
    encoder_steps: {'sl': steps, 'ssl': steps} for the SL/SSL encoders (default: their preset).
    cfg / cross_cfg: {'probe': LinearProbe kwargs, 'attributor': Attributor overrides,
      'attributor_preset': 'quick'|'paper'} for Table 1 / Table 2.
    baseline_cfg: {baseline name: constructor kwargs}.
    table3_max_rows / openset_max_per_model / figure_max_rows: sizes of the stratified
      samples Table 3, the open set and the embedding figure hold in RAM.
    artifact_kwargs: keyword arguments of `fpjax.compute_artifacts` for missing stores
      (precision, batch_size, device_bank_bytes, num_threads, ...).
  """
  t_start = time.time()
  timings = dict(timings or {})
  seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
  if not seeds:
    from fpjax.artifact_io import UserInputError
    raise UserInputError('seeds: need at least one seed')
  if isinstance(gm, str):
    gm = protocols.load_gm(gm, real)
  writer = _is_writer()
  fig_dir = os.path.join(workdir, 'figures')
  if writer:
    os.makedirs(fig_dir, exist_ok=True)
  logging.info('evaluate: %s, %d images of %d models, real %r (%d bank images), spaces %s, '
               'seeds %s', gm.name, len(gm.source), len(gm.class_names), gm.real, gm.bank_size,
               list(spaces), seeds)

  t = time.time()
  encoders = protocols.make_encoders(spaces, gm.real, workdir=workdir,
                                     encoder_steps=encoder_steps)
  timings['encoders_s'] = time.time() - t
  t = time.time()
  feats = protocols.open_features(gm, encoders, workdir, artifact_kwargs=artifact_kwargs)
  timings['artifacts_s'] = time.time() - t
  bad = {s: st.num_bad_rows for s, st in feats.stores.items() if st.num_bad_rows}
  if bad:
    logging.warning('evaluate: %d bad file(s) of %s skipped (listed in %s)', max(bad.values()),
                    gm.name, ', '.join(os.path.join(st.workdir, 'bad_inputs.jsonl')
                                       for st in feats.stores.values()))

  t = time.time()
  t1 = protocols.table1(feats, seeds=seeds, baselines=baselines, classifiers=classifiers,
                        split_seed=split_seed, cfg=cfg, baseline_cfg=baseline_cfg)
  timings['table1_s'] = time.time() - t
  rows = list(t1['rows'])

  t = time.time()
  if gm.tags and feats.stores:
    rows += protocols.table3(feats, pca_dim=table3_pca_dim, max_rows=table3_max_rows,
                             seed=split_seed)
  elif not gm.tags:
    logging.info('Table 3 skipped: %s has no design-knob tags (not a zoo)', gm.name)
  timings['table3_s'] = time.time() - t

  t = time.time()
  if len(gm.class_names) >= 3:
    rows += protocols.openset(feats, t1['train_mask'], baselines=baselines,
                              baseline_cfg=baseline_cfg, shots=shots,
                              max_per_model=openset_max_per_model, seed=split_seed)
  timings['openset_s'] = time.time() - t

  t = time.time()
  cross_b = baselines if cross_baselines is None else cross_baselines
  for src, tgt in cross:
    sides = []
    for side in (src, tgt):
      side = protocols.load_gm(side) if isinstance(side, str) else side
      # The same encoders on both sides: each side's artifacts in the same embedding.
      sides.append(protocols.open_features(side, encoders, workdir,
                                           artifact_kwargs=artifact_kwargs))
    rows += protocols.table2(*sides, seeds=seeds,
                             baselines=list(cross_b) if cross_b is not None else None,
                             classifiers=classifiers, cfg=cross_cfg if cross_cfg else cfg,
                             baseline_cfg=baseline_cfg)
  timings['table2_s'] = time.time() - t

  md = report_lib.markdown_tables(rows)
  files = {}
  if writer:
    t = time.time()
    if figures:
      files.update(_figures(feats, t1, fig_dir, figure_max_rows, split_seed))
    timings['figures_s'] = time.time() - t
    timings['evaluate_s'] = time.time() - t_start
    skipped = [s for s in spaces if s not in encoders]
    config = dict(gm=gm.name, real=gm.real, models=gm.class_names, num_images=feats.num_rows,
                  bad_files_skipped=max(bad.values(), default=0),
                  spaces=list(encoders), skipped_spaces=skipped, seeds=seeds,
                  baselines=baselines, classifiers=list(classifiers),
                  split='70/30 per model, split_seed=%d' % split_seed, shots=shots,
                  cross=[f'{r}' for r in dict.fromkeys(r['dataset'] for r in rows
                                                       if r['table'] == '2')],
                  cfg=cfg, cross_cfg=cross_cfg, baseline_cfg=baseline_cfg,
                  encoder_steps=encoder_steps,
                  artifact_stores='WORKDIR/artifacts/<gm>/<space>, written by '
                                  'fpjax.compute_artifacts',
                  table3=dict(
                      rows=f'stratified sample of at most {table3_max_rows} rows (seed '
                           f'{split_seed})',
                      features='artifacts z-scored per coordinate, PCA to %d dims' % table3_pca_dim,
                      clustering='k-means (n_init=10), k = number of distinct knob values; '
                                 "models tagged 'n/a' left out per knob",
                      nmi='sklearn normalized_mutual_info_score (arithmetic)'),
                  openset=dict(
                      rows=f'stratified sample of at most {openset_max_per_model} rows per model '
                           f'(seed {split_seed})',
                      protocols='fpjax.attribution.openset nearest prototype; enrolment = the '
                                'Table 1 train rows of the sample'),
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
  from fpjax import artifact_io
  files = {}
  names = feats.gm.class_names
  k = len(names)
  val = np.flatnonzero(~t1['train_mask'])
  y_va = feats.labels[val]
  conf = {}
  for (method, space, clf), pred in t1['predictions'].items():
    if method == 'ManiFPT' and clf == 'probe':
      conf[f'ManiFPT {space.upper()} probe'] = metrics.confusion_matrix(y_va, pred, k)
  base = [r for r in t1['rows'] if r['method'] != 'ManiFPT']
  if base:
    best = max(base, key=lambda r: r['accuracy_mean'])
    conf[f'{best["method"]} (best baseline)'] = metrics.confusion_matrix(
        y_va, t1['predictions'][(best['method'], None, 'own')], k)
  if conf:
    files['confusion'] = report_lib.plot_confusions(
        os.path.join(fig_dir, 'confusion.png'), conf, names)
  if feats.stores:
    # A bounded stratified sample of the validation rows: the figure needs no more.
    sample = val[protocols.stratified_sample(y_va, max(1, max_rows // k), seed)]
    files['embedding'] = report_lib.plot_embeddings(
        os.path.join(fig_dir, 'embedding_pca.png'),
        {f'{s.upper()} artifacts (val)': feats.artifacts(s)[sample] for s in feats.stores},
        feats.labels[sample], names)
  for s, store in feats.stores.items():
    if len(store.embedding_shape) != 3 or s not in ('rgb', 'freq', 'dct'):
      continue
    # The store's FingerprintStats, streamed over every row when the store was written.
    st = artifact_io.load_array(store.stats_path)
    files[f'mean_artifact_{s}'] = report_lib.plot_mean_artifacts(
        os.path.join(fig_dir, f'mean_artifact_{s}.png'), st, names,
        f'mean {s.upper()} artifact per model')
    if s == 'rgb':
      files['spectra_rgb'] = report_lib.plot_spectra(
          os.path.join(fig_dir, 'spectra_rgb.png'), st, names,
          'power spectrum of RGB artifacts per model')
  return files


def run_demo(workdir: str = '/tmp/fpjax_demo', *, preset: str = 'quick', real: str = 'mnist5k',
             cross_preset: str = 'cross', cross_num_samples: int | None = None,
             cross_reals=('mnist5k_0to4', 'mnist5k_5to9'), spaces=protocols.MANIFPT_SPACES,
             seeds: int = 3, baselines=None, cross_baselines=('Durall20', 'Frank20', 'Wang20'),
             classifiers=protocols.CLASSIFIERS, cfg: dict | None = None,
             cross_cfg: dict | None = None, encoder_steps: dict | None = None,
             artifact_kwargs: dict | None = None) -> Evaluation:
  """The main job: build (or reuse) the zoos, then the whole evaluation, printed and written.

  WORKDIR/zoo (preset `preset` on `real`) is the Table 1/3 dataset;
  WORKDIR/zoo_<cross_preset>_<r> for each r of `cross_reals` are the Table 2 datasets,
  evaluated in both directions.
  `cross_num_samples` (None: the preset's) sets the samples per model of those zoos.
  A zoo already complete in its folder is reused (build_zoo is a no-op then).
  """
  from fpjax import zoo as zoo_lib
  timings = {}
  t = time.time()
  zoo_dir = os.path.join(workdir, 'zoo')
  zoo_lib.build_zoo(zoo_dir, preset=preset, real=real)
  timings['zoo_s'] = time.time() - t
  cross_dirs = []
  for r in cross_reals:
    t = time.time()
    d = os.path.join(workdir, f'zoo_{cross_preset}_{r}')
    zoo_lib.build_zoo(d, preset=cross_preset, real=r, num_samples=cross_num_samples)
    timings[f'zoo_{cross_preset}_{r}_s'] = time.time() - t
    cross_dirs.append(d)
  cross = []
  if len(cross_dirs) == 2:
    a, b = (protocols.load_gm(d) for d in cross_dirs)
    cross = [(a, b), (b, a)]
  return evaluate(zoo_dir, real, workdir, spaces=spaces, seeds=seeds, baselines=baselines,
                  classifiers=classifiers, cross=cross, cross_baselines=cross_baselines,
                  cfg=DEMO_CONFIG['cfg'] if cfg is None else cfg,
                  cross_cfg=DEMO_CONFIG['cross_cfg'] if cross_cfg is None else cross_cfg,
                  encoder_steps=DEMO_CONFIG['encoder_steps'] if encoder_steps is None
                  else encoder_steps, artifact_kwargs=artifact_kwargs, timings=timings,
                  extra_config=dict(demo=dict(preset=preset, cross_preset=cross_preset,
                                              cross_num_samples=cross_num_samples)))
