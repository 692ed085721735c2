"""Writers: tables.md / tables.json, figures (matplotlib Agg) and report.md.

tables.json = {"version": 1, "config": {...}, "rows": [row, ...], "timings": {...}}; every row
has the keys ROW_FIELDS (`make_row` builds rows; the one definition of a result row): table ('1' | '2' | '3' | 'openset'), method ('ManiFPT' or a
baseline name), space (ManiFPT space or null), classifier ('probe' | 'attributor' | 'own' |
'prototype' | null), dataset, accuracy_mean / accuracy_std (fractions in [0, 1], std over
seeds, ddof 0), accuracies (per seed), num_seeds, fdr (trace(S_B)/trace(S_W)), nmi ({knob: NMI
or null}, Table 3), auroc / few_shot_accuracy / few_shot_new_model_accuracy (open set),
num_train, num_test, seconds.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

from fpjax import artifact_io


ROW_FIELDS = ('table', 'method', 'space', 'classifier', 'dataset', 'accuracy_mean', 'accuracy_std',
              'accuracies', 'num_seeds', 'fdr', 'nmi', 'auroc', 'few_shot_accuracy',
              'few_shot_new_model_accuracy', 'num_train', 'num_test', 'seconds')
# Fields that measure the run, not its result: two runs of the same configuration differ only here.
TIMING_FIELDS = ('seconds',)


def make_row(**fields) -> dict:
  """One machine-readable result row: every ROW_FIELDS key (None where not applicable)."""
  unknown = set(fields) - set(ROW_FIELDS)
  if unknown:
    raise ValueError(f'unknown row fields {sorted(unknown)}; known: {ROW_FIELDS}')
  return {f: fields.get(f) for f in ROW_FIELDS}


def nmi_columns(rows) -> list:
  """Table 3 columns: the knobs in the order the rows name them (the zoo's tags), 'model' last."""
  cols = list(dict.fromkeys(c for r in rows for c in r['nmi'] if c != 'model'))
  return cols + ['model']


def _jsonable(x):
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (np.floating, float)):
    return None if not math.isfinite(float(x)) else float(x)  # JSON has no NaN
  if isinstance(x, np.ndarray):
    return _jsonable(x.tolist())
  return x


def write_json(path: str, rows, config: dict | None = None, timings: dict | None = None) -> dict:
  obj = _jsonable({'version': 1, 'config': config or {}, 'rows': list(rows),
                   'timings': timings or {}})
  for i, r in enumerate(obj['rows']):
    missing = set(ROW_FIELDS) - set(r)
    if missing:
      raise ValueError(f'tables.json row {i} lacks fields {sorted(missing)}')
  artifact_io.save_json(path, obj, sort_keys=False)
  return obj


# ----------------------------------------------------------------------------- markdown tables

def _pct(m, s=None):
  if m is None:
    return '–'
  return f'{100 * m:.1f}' if s is None else f'{100 * m:.1f} ± {100 * s:.1f}'


def _num(x, fmt='{:.3f}'):
  return '–' if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)


def _name(r):
  return f'ManiFPT {r["space"].upper()}' if r['method'] == 'ManiFPT' else r['method']


def markdown_tables(rows) -> str:
  """Tables 1, 2, 3 and the open-set table as GitHub markdown (accuracies in %)."""
  out = []
  t1 = [r for r in rows if r['table'] == '1']
  if t1:
    ds = t1[0]['dataset']
    out += [f'### Table 1 — attribution accuracy (%) and FDR on {ds}',
            f'70/30 split per model ({t1[0]["num_train"]} train / {t1[0]["num_test"]} val); '
            f'mean ± std over {t1[0]["num_seeds"]} seeds; FDR = trace(S_B)/trace(S_W) on the '
            'validation features.', '',
            '| method | classifier | accuracy | FDR |', '|---|---|---|---|']
    out += [f'| {_name(r)} | {r["classifier"]} | {_pct(r["accuracy_mean"], r["accuracy_std"])} '
            f'| {_num(r["fdr"], "{:.4g}")} |' for r in t1]
    out.append('')
  t2 = [r for r in rows if r['table'] == '2']
  if t2:
    dss = list(dict.fromkeys(r['dataset'] for r in t2))
    out += ['### Table 2 — cross-dataset accuracy (%), train → test', '',
            '| method | classifier | ' + ' | '.join(dss) + ' |',
            '|---|---|' + '---|' * len(dss)]
    keys = list(dict.fromkeys((r['method'], r['space'], r['classifier']) for r in t2))
    for k in keys:
      cells = []
      for d in dss:
        m = [r for r in t2 if (r['method'], r['space'], r['classifier']) == k and r['dataset'] == d]
        cells.append(_pct(m[0]['accuracy_mean'], m[0]['accuracy_std']) if m else '–')
      r0 = next(r for r in t2 if (r['method'], r['space'], r['classifier']) == k)
      out.append(f'| {_name(r0)} | {k[2]} | ' + ' | '.join(cells) + ' |')
    out.append('')
  t3 = [r for r in rows if r['table'] == '3']
  if t3:
    cols = [c for c in nmi_columns(t3) if any(r['nmi'].get(c) is not None for r in t3)]
    out += ['### Table 3 — NMI between k-means clusters of artifacts and design knobs', '',
            '| space | ' + ' | '.join(cols) + ' |', '|---|' + '---|' * len(cols)]
    for r in t3:
      out.append(f'| {r["space"].upper()} | ' + ' | '.join(_num(r['nmi'].get(c)) for c in cols)
                 + ' |')
    avg = [np.mean([r['nmi'][c] for r in t3 if r['nmi'].get(c) is not None]) for c in cols]
    out.append('| average | ' + ' | '.join(_num(float(a)) for a in avg) + ' |')
    out.append('')
  to = [r for r in rows if r['table'] == 'openset']
  if to:
    out += ['### Open set — leave-one-model-out AUROC and few-shot enrolment '
            '(nearest prototype)', '',
            '| features | AUROC | few-shot accuracy (all models) | few-shot accuracy (new model) |',
            '|---|---|---|---|']
    out += [f'| {_name(r)} | {_num(r["auroc"])} | {_pct(r["few_shot_accuracy"])} | '
            f'{_pct(r["few_shot_new_model_accuracy"])} |' for r in to]
    out.append('')
  return '\n'.join(out)


# ----------------------------------------------------------------------------- figures

def _plt():
  import matplotlib
  matplotlib.use('Agg')  # headless: binaries and tests have no display
  import matplotlib.pyplot as plt
  return plt


def plot_confusions(path, confusions: dict, class_names) -> str:
  """confusions: {title: [K, K] counts}; rows normalised to fractions."""
  plt = _plt()
  n = len(confusions)
  cols = min(n, 3)
  rows = int(math.ceil(n / cols))
  k = len(class_names)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols + 1, 4.0 * rows + 1), squeeze=False)
  for ax in axes.flat[n:]:
    ax.axis('off')
  for ax, (title, cm) in zip(axes.flat, confusions.items()):
    frac = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(frac, vmin=0, vmax=1, cmap='viridis')
    ax.set_title(f'{title}\nacc {np.trace(cm) / max(cm.sum(), 1):.2f}', fontsize=9)
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(range(k), fontsize=6)
    ax.set_yticklabels([f'{i} {c[:22]}' for i, c in enumerate(class_names)], fontsize=5)
    ax.set_xlabel('predicted', fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_embeddings(path, features: dict, labels, class_names, *, seed: int = 0) -> str:
  """2-D PCA of each feature set (z-scored), one colour per model."""
  from sklearn.decomposition import PCA
  plt = _plt()
  n = len(features)
  cols = min(n, 3)
  rows = int(math.ceil(n / cols))
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.0 * rows + 0.8), squeeze=False)
  for ax in axes.flat[n:]:
    ax.axis('off')
  cmap = plt.get_cmap('tab20')
  for ax, (title, x) in zip(axes.flat, features.items()):
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    std = x.std(0)
    z = (x - x.mean(0)) / np.where(std > 1e-12, std, 1.0)
    e = PCA(2, random_state=seed).fit_transform(z)
    for c in range(len(class_names)):
      m = np.asarray(labels) == c
      ax.scatter(e[m, 0], e[m, 1], s=3, color=cmap(c % 20), label=class_names[c])
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
  handles, names = axes.flat[0].get_legend_handles_labels()
  fig.legend(handles, names, loc='lower center', ncol=min(5, len(names)), fontsize=6,
             markerscale=3)
  fig.tight_layout(rect=(0, 0.08, 1, 1))
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_mean_artifacts(path, stats: dict, class_names, title: str) -> str:
  """Mean artifact per model (first channel), one symmetric colour scale for all models."""
  plt = _plt()
  mean = np.asarray(stats['mean'])[..., 0]
  k = len(class_names)
  cols = min(k, 5)
  rows = int(math.ceil(k / cols))
  lim = float(np.abs(mean).max()) or 1.0
  fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows + 0.4), squeeze=False)
  for ax in axes.flat:
    ax.axis('off')
  for i, ax in enumerate(axes.flat[:k]):
    ax.imshow(mean[i], cmap='RdBu_r', vmin=-lim, vmax=lim)
    ax.set_title(class_names[i][:26], fontsize=6)
  fig.suptitle(f'{title} (colour range ±{lim:.3g})', fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_spectra(path, stats: dict, class_names, title: str) -> str:
  """Left: radially averaged power spectrum of the artifacts per model; right: 2-D spectra."""
  plt = _plt()
  prof = np.asarray(stats['radial_profile'])
  spec = np.asarray(stats['power_spectrum']).mean(1)  # channel mean, [L, H, W]
  k = len(class_names)
  cols = min(k, 5)
  rows = int(math.ceil(k / cols))
  fig = plt.figure(figsize=(5 + 1.8 * cols, max(4.0, 1.9 * rows)))
  gs = fig.add_gridspec(rows, cols + 3)
  ax = fig.add_subplot(gs[:, :3])
  cmap = plt.get_cmap('tab20')
  for i in range(k):
    ax.semilogy(np.maximum(prof[i], 1e-12), color=cmap(i % 20), lw=1, label=class_names[i][:22])
  ax.set_xlabel('spatial frequency (radius)')
  ax.set_ylabel('mean power of the artifact')
  ax.legend(fontsize=5)
  ax.set_title(title, fontsize=9)
  for i in range(k):
    a = fig.add_subplot(gs[i // cols, 3 + i % cols])
    a.imshow(np.log10(spec[i] + 1e-12), cmap='magma')
    a.set_title(class_names[i][:18], fontsize=5)
    a.axis('off')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


# ----------------------------------------------------------------------------- report.md

def _best(rows):
  rows = [r for r in rows if r.get('accuracy_mean') is not None]
  return max(rows, key=lambda r: r['accuracy_mean']) if rows else None


def _label(r):
  return _name(r) + (f' ({r["classifier"]})' if r['method'] == 'ManiFPT' else '')


def discussion(rows) -> list[str]:
  """Plain statements read off the numbers (no claim the numbers do not support)."""
  out = []
  t1 = [r for r in rows if r['table'] == '1']
  mani = [r for r in t1 if r['method'] == 'ManiFPT']
  base = [r for r in t1 if r['method'] != 'ManiFPT']
  bm, bb = _best(mani), _best(base)
  if bm and bb:
    gap = 100 * (bm['accuracy_mean'] - bb['accuracy_mean'])
    noise = 100 * max(bm['accuracy_std'], bb['accuracy_std'])
    if gap > 2 * noise:
      verdict = (f'ManiFPT is ahead by {gap:.1f} points (more than twice the larger seed std, '
                 f'{noise:.1f}).')
    elif gap < -2 * noise:
      verdict = (f'**A baseline beats ManiFPT** by {-gap:.1f} points (more than twice the larger '
                 f'seed std, {noise:.1f}). Likely reasons (hypotheses, not tested here): the '
                 'models of a small zoo differ in global image statistics (thin-stroked or blurry '
                 'samples from some flows/VAEs, contrast, stroke width) that a CNN on the images '
                 'or colour/spectral statistics pick up directly, while the artifact subtracts '
                 'the nearest real digit; and short training budgets and 28x28 grey images are '
                 'far from the paper\'s setting (diverse high-quality models, 32-256 px colour).')
    else:
      verdict = (f'The two are within noise ({gap:+.1f} points; larger seed std {noise:.1f}).')
    out.append(f'- Table 1: best ManiFPT row {_label(bm)} {100 * bm["accuracy_mean"]:.1f}%, best '
               f'baseline {bb["method"]} {100 * bb["accuracy_mean"]:.1f}%. {verdict}')
  for clf in ('probe', 'attributor'):
    cr = [r for r in mani if r['classifier'] == clf]
    if cr:
      out.append(f'- ManiFPT with the {clf}: ' + ', '.join(
          f'{r["space"].upper()} {100 * r["accuracy_mean"]:.1f}%' for r in cr) + '.')
  worse = [p['space'].upper() for p in mani if p['classifier'] == 'probe' for a in mani
           if a['classifier'] == 'attributor' and a['space'] == p['space']
           and a['accuracy_mean'] < p['accuracy_mean'] - 2 * max(a['accuracy_std'],
                                                                 p['accuracy_std'], 0.005)]
  if worse:
    out.append(f'- The attributor is below the linear probe on {", ".join(worse)}. It normalises '
               'its input with one scalar shift/scale, while the probe z-scores every coordinate; '
               'log-magnitude (FREQ/DCT) artifacts vary in scale by orders of magnitude across '
               'coefficients, so per-coordinate standardisation (or more epochs) is the likely '
               'fix (hypothesis).')
  fd = [r for r in t1 if r['fdr'] is not None]
  if fd:
    top = max(fd, key=lambda r: r['fdr'])
    out.append(f'- Highest FDR: {_label(top)} ({top["fdr"]:.4g}). FDR compares feature spaces of '
               'different dimension and scale only roughly (trace ratio, no whitening); it '
               'need not rank methods like accuracy does.')
  t2 = [r for r in rows if r['table'] == '2']
  if t2:
    for d in dict.fromkeys(r['dataset'] for r in t2):
      rr = [r for r in t2 if r['dataset'] == d]
      b = _best(rr)
      bm2 = _best([r for r in rr if r['method'] == 'ManiFPT'])
      line = f'- Table 2, {d}: best {_label(b)} {100 * b["accuracy_mean"]:.1f}%'
      if bm2 and bm2 is not b:
        line += f'; best ManiFPT row {_label(bm2)} {100 * bm2["accuracy_mean"]:.1f}%'
      out.append(line + '.')
  t3 = [r for r in rows if r['table'] == '3']
  if t3:
    knobs = [c for c in nmi_columns(t3)[:-1] if any(r['nmi'].get(c) is not None for r in t3)]
    avg = {c: float(np.mean([r['nmi'][c] for r in t3 if r['nmi'].get(c) is not None]))
           for c in knobs}
    order = sorted(avg, key=avg.get, reverse=True)
    out.append('- Table 3: average NMI over spaces, highest first: ' + ', '.join(
        f'{c} {avg[c]:.3f}' for c in order) + '. (The paper finds upsampling and loss align '
        'best.) In this zoo the knobs are partly confounded with the family (e.g. the loss '
        'determines the family), so one knob\'s NMI also reflects the others.')
  to = [r for r in rows if r['table'] == 'openset']
  if to:
    b = max(to, key=lambda r: r['auroc'])
    out.append(f'- Open set: best leave-one-model-out AUROC {b["auroc"]:.3f} '
               f'({_name(b)}); few-shot enrolment accuracies are in the last table. Baselines '
               'appear there only when their features need no training (hand-crafted ones, '
               'Marra19): a learned extractor would have seen the left-out model.')
  return out


def report_markdown(rows, gm, config: dict, timings: dict, files: dict, workdir: str) -> str:
  """gm: the evaluated `protocols.GMData`; config['num_images'] counts the rows evaluated."""
  rel = lambda p: os.path.relpath(p, workdir)
  lines = ['# fpjax evaluation report', '',
           f'GM dataset **{gm.name}**: {config["num_images"]} images of {len(gm.class_names)} '
           f'models; real data **{gm.real}** ({gm.bank_size} images = the bank of the '
           'manifold).', '',
           'Models: ' + ', '.join(f'`{c}`' for c in gm.class_names) + '.', '',
           '## Results', '', markdown_tables(rows), '## Discussion', '']
  lines += discussion(rows)
  lines += ['', '## Figures', '']
  captions = {
      'confusion': 'Confusion matrices (validation split, seed 0): ManiFPT linear probe per '
                   'space and the best baseline. Rows = true model (index = order above).',
      'embedding': '2-D PCA of the validation artifacts per space (z-scored), one colour per '
                   'model.',
      'mean_artifact_rgb': 'Mean RGB artifact per model (the artifact store\'s streamed '
                           '`FingerprintStats`), all images.',
      'mean_artifact_freq': 'Mean FREQ artifact per model.',
      'mean_artifact_dct': 'Mean DCT artifact per model.',
      'spectra_rgb': 'Power spectrum of the RGB artifacts per model: radial profile and 2-D '
                     '(log10), from the store\'s `FingerprintStats` (all images).'}
  for key, path in files.items():
    if key in captions:
      lines += [f'### {key}', captions[key], '', f'![{key}]({rel(path)})', '']
  lines += ['## Protocol', '',
            '- Split: 70/30 per model, the same mask for every method; seeds vary the '
            'classifier (initialisation, minibatch order), not the split.',
            '- ManiFPT features: artifacts φ(x) − φ(x*), x* the nearest real image in space φ '
            '(`fpjax.compute_artifacts`, read back from its artifact store '
            f'{config.get("artifact_stores", "")}). SL/SSL encoders are trained on the real '
            'images (no pretrained weights).',
            '- FDR: trace(S_B)/trace(S_W) (`fpjax.stats.fdr_from_moments`) of the validation '
            'features, from per-model moments streamed over the rows (artifacts; baselines: '
            '`.features()` of the seed-0 fit).',
            f'- Table 3: {config.get("table3", {})}.',
            f'- Open set: {config.get("openset", {})}.', '',
            '## Configuration', '', '```', json.dumps(_jsonable(config), indent=1), '```', '',
            '## Timings (seconds)', '', '```', json.dumps(_jsonable(timings), indent=1), '```', '']
  return '\n'.join(lines)
