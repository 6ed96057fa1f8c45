"""A PNG per round: the 2-D map coloured by loss, anchors and synthetic points overlaid."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def round_plot_path(output_dir: str | os.PathLike, round_number: int) -> Path:
    """Where round `round_number`'s map picture goes (read back by the model card)."""
    return Path(output_dir) / "sage_rounds" / f"round_{round_number:02d}.png"


def _xy(points: np.ndarray) -> np.ndarray:
    return points[:, :2] if points.shape[1] >= 2 else np.c_[points[:, 0], np.zeros(len(points))]


def plot_round(coords: np.ndarray, losses: np.ndarray, path: str | os.PathLike, *, anchors: np.ndarray | None = None,
               points: np.ndarray | None = None, title: str = "", axis_label: str = "umap") -> Path:
    """Real examples at their map `coords` coloured by `losses`; `anchors` (indices) and sampled `points` on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xy = _xy(coords)
    fig, ax = plt.subplots(figsize=(6.4, 5.2), dpi=110)
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=losses, s=4, cmap="viridis", alpha=0.7, linewidths=0)
    fig.colorbar(sc, ax=ax, label="per-example distillation loss")
    if anchors is not None:
        a = np.unique(anchors)
        ax.scatter(xy[a, 0], xy[a, 1], s=14, facecolors="none", edgecolors="red", linewidths=0.6, label="anchors")
    if points is not None:
        pxy = _xy(points)
        ax.scatter(pxy[:, 0], pxy[:, 1], s=3, c="black", marker="x", linewidths=0.4, label="synthetic")
    ax.set_title(title or "SAGE round")
    ax.set_xlabel(f"{axis_label} 1")
    ax.set_ylabel(f"{axis_label} 2")
    ax.legend(loc="best", fontsize=7, markerscale=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
