"""report.md: what was evaluated, what the demo ran, the tables, the zoo's realism, the
discussion, the figures, the protocol, the configuration and the timings."""
from __future__ import annotations

import json
import math
import os

import numpy as np

from fpjax.report.discussion import discussion
from fpjax.report.rows import jsonable
from fpjax.report.tables import markdown_tables, pct


def _bullets(obj, indent: str = '') -> list:
  """A config value as markdown bullets: dicts nest, lists of scalars join on one line."""
  out = []
  for k, v in obj.items():
    if isinstance(v, dict) and v:
      out += [f'{indent}- {k}:'] + _bullets(v, indent + '  ')
    elif isinstance(v, (list, tuple)) and all(not isinstance(x, (dict, list, tuple)) for x in v):
      out.append(f'{indent}- {k}: ' + (', '.join(f'`{x}`' for x in v) or '(none)'))
    else:
      out.append(f'{indent}- {k}: `{json.dumps(jsonable(v))}`')
  return out


# zoo.json fields of the realism measures (fpjax/zoo/quality.py): per model under 'quality',
# the reference figures of real digits and uniform noise under 'reference'.
REALISM_COLUMNS = (('distance_ratio', 'distance to real / noise\'s', '{:.2f}'),
                   ('recognisable', 'recognisable', 'pct'),
                   ('recognisable_vs_real', 'recognisable / real digits\'', 'pct'),
                   ('frechet_distance', 'Fréchet distance (SL)', '{:.3g}'),
                   ('diversity', 'diversity', '{:.2f}'))


def _realism(q: dict, field: str):
  """A realism field of a zoo.json 'quality' dict, None when the zoo does not have it."""
  v = q.get(field)
  if field == 'distance_ratio' and v is None and q.get('noise_to_manifold'):
    # A zoo built before the ratio was stored keeps both distances: the same ratio.
    v = q.get('sample_to_manifold', math.nan) / q['noise_to_manifold']
  return v if v is not None and math.isfinite(v) else None


def _realism_cell(q: dict, field: str, fmt: str) -> str:
  v = _realism(q, field)
  return '—' if v is None else pct(v) + ' %' if fmt == 'pct' else fmt.format(v)


def zoo_realism(zoo: dict) -> list:
  """Markdown lines: per model of a zoo (zoo.json) how real its samples look; fields a zoo
  does not have are shown as '—'."""
  reference = zoo.get('reference') or {}
  head = '| model | family | ' + ' | '.join(c[1] for c in REALISM_COLUMNS) + ' |'
  out = ['Distance to real / noise\'s: mean distance of a sample to its nearest real training '
         'digit, as a fraction of the same for uniform noise. Recognisable: share of samples '
         'the zoo\'s calibrated digit classifier assigns to a digit with probability ≥ 0.9, '
         'and that share as a fraction of held-out real digits\'. Fréchet distance between '
         'the samples\' and the held-out real digits\' features in the SL encoder\'s space. '
         'Diversity: mean pairwise distance of the samples / that of real digits.', '',
         head, '|---|---|' + '---|' * len(REALISM_COLUMNS)]
  # The zoo's reference figures: what real digits (held out; for the Fréchet distance, real
  # digits as many as a model's samples) and uniform noise score.
  for name, ref in (('real digits', reference.get('real_test')),
                    ('uniform noise', reference.get('noise'))):
    if isinstance(ref, dict):
      out.append(f'| *{name}* | | ' + ' | '.join(_realism_cell(ref, *c[::2])
                                                 for c in REALISM_COLUMNS) + ' |')
  models = zoo.get('models', [])
  for m in models:
    q = m.get('quality') or {}
    out.append(f'| {m.get("name", "?")} | {m.get("family", "—")} | ' + ' | '.join(
        _realism_cell(q, f, fmt) for f, _, fmt in REALISM_COLUMNS) + ' |')
  out.append('')
  for field, fact in (('recognisable_vs_real', lambda v: v < 0.5),
                      ('distance_ratio', lambda v: v > 0.5)):
    vals = {m.get('name'): _realism(m.get('quality') or {}, field) for m in models}
    vals = {k: v for k, v in vals.items() if v is not None}
    if not vals:
      continue
    odd = ', '.join(k for k, v in vals.items() if fact(v)) or 'none'
    median = float(np.median(list(vals.values())))
    out.append(f'- Median model: recognisable at {pct(median)} % of real digits\' rate; '
               f'below 50 %: {odd}.' if field == 'recognisable_vs_real' else
               f'- Median model: distance to real {median:.2f} of noise\'s; above 0.5: {odd}.')
  out.append('')
  return out


def _zoo_section(gm) -> list:
  if not getattr(gm, 'tags', None):
    return []
  path = os.path.join(gm.path, 'zoo.json')
  try:
    with open(path, encoding='utf-8') as f:
      zoo = json.load(f)
  except (OSError, ValueError) as e:
    return ['## Zoo realism', '', f'{path} could not be read: {e}', '']
  return ['## Zoo realism', '', f'From {path} (preset `{zoo.get("preset", "?")}`, real data '
          f'`{zoo.get("real", "?")}`).', ''] + zoo_realism(zoo)


def report_markdown(rows, gm, config: dict, timings: dict, files: dict, workdir: str) -> str:
  """gm: the evaluated `fpjax.evals.GMData`; config['num_images'] counts the rows evaluated;
  config['demo'] (a dict, optional) says what the demo chose to run."""
  rel = lambda p: os.path.relpath(p, workdir)
  lines = ['# fpjax evaluation report', '',
           f'GM dataset **{gm.name}**: {config["num_images"]} images of {len(gm.class_names)} '
           f'models; real data **{gm.real}** ({gm.bank_size} images = the bank of the '
           'manifold).', '',
           'Models: ' + ', '.join(f'`{c}`' for c in gm.class_names) + '.', '']
  demo = config.get('demo')
  if demo:
    lines += ['## What the demo ran', '']
    if isinstance(demo, dict):
      # run_demo's 'ran' / 'left_out' sentences as lists; the other settings as bullets.
      lines += [f'- {x}' for x in demo.get('ran', ())]
      if demo.get('left_out'):
        lines += ['', 'Left out to fit the demo\'s time budget (the flags that run them):', '']
        lines += [f'- {x}' for x in demo['left_out']]
      rest = {k: v for k, v in demo.items() if k not in ('ran', 'left_out')}
      lines += ([''] if rest and demo.get('ran') else []) + _bullets(rest)
    else:
      lines.append(f'{demo}')
    lines.append('')
  captions = {
      'confusion': 'Confusion matrices (validation images of the first split): ManiFPT linear '
                   'probe per space and the best baseline. Rows = true model (index = order '
                   'above).',
      'embedding': '2-D PCA of the validation artifacts per space (z-scored), one colour per '
                   'model.',
      'mean_artifact_rgb': 'Mean RGB artifact per model (the artifact store\'s streamed '
                           '`FingerprintStats`), all images.',
      'mean_artifact_freq': 'Mean FREQ artifact per model.',
      'mean_artifact_dct': 'Mean DCT artifact per model.',
      'spectra_rgb': 'Power spectrum of the RGB artifacts per model: radial profile and 2-D '
                     '(log10), from the store\'s `FingerprintStats` (all images).'}
  lines += ['## Results', '', markdown_tables(rows)]
  lines += _zoo_section(gm)
  lines += ['## Discussion', '']
  lines += discussion(rows)
  lines.append('')
  if any(key in captions for key in files):
    lines += ['## Figures', '']
  for key, path in files.items():
    if key in captions:
      lines += [f'### {key}', captions[key], '', f'![{key}]({rel(path)})', '']
  selection = config.get('selection')
  selection = selection.get('protocol') if isinstance(selection, dict) else selection
  lines += ['## Protocol', '',
            '- Splits: ' + str(config.get('split') or 'several train/validation splits, every '
                               'method on the same ones, each with its own classifier seed')
            + '; rows give mean ± std over the splits.',
            '- Selection of the estimator\'s hyperparameters and the probe\'s l2: '
            + str(selection or 'on an inner validation split of each training part') + '; '
            'never on the reported validation images.',
            '- ManiFPT features: artifacts φ(x) − p(x), p(x) the manifold estimator\'s point '
            '(`nn`: the nearest real image in space φ, as in the paper; `fpjax.estimators`), '
            'computed by `fpjax.compute_artifacts` and read back from its artifact store '
            f'{config.get("artifact_stores", "")}; `input` rows use φ(x) itself. SL/SSL '
            'encoders are trained on the real images (no pretrained weights).',
            '- Intervals: ' + str(config.get('diff') or 'paired bootstrap 95 % percentile '
                                  'intervals (`fpjax.evals.metrics.paired_bootstrap`)')
            + '; each split\'s validation images are resampled with replacement, the same '
            'images for both rows; significant = the interval excludes 0.',
            '- FDR: trace(S_B)/trace(S_W) (`fpjax.stats.fdr_from_moments`) of the validation '
            'features, from per-model moments streamed over the rows.',
            f'- Table 3: {config.get("table3", {})}.',
            f'- Open set: {config.get("openset", {})}.', '',
            '## Configuration', '', '```', json.dumps(jsonable(config), indent=1), '```', '',
            '## Timings (seconds)', '', '```', json.dumps(jsonable(timings), indent=1), '```', '']
  return '\n'.join(lines)
