"""Figures of the report (matplotlib, Agg backend: binaries and tests have no display),
imported on first use: a run without figures never loads matplotlib."""
from __future__ import annotations

import math

import numpy as np


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
