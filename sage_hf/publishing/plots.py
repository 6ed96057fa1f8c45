"""A PNG per round: the 2-D map coloured by loss, anchors and synthetic points overlaid.

Methods that fit no map (`swap`, `adversarial`, `repeat`) get the examples ranked by loss instead, anchors marked.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def round_plot_path(output_dir: str | os.PathLike, round_number: int) -> Path:
    """Where round `round_number`'s map picture goes (read back by the model card)."""
    return Path(output_dir) / "sage_rounds" / f"round_{round_number:02d}.png"


def _xy(points: np.ndarray) -> np.ndarray:
    return points[:, :2] if points.shape[1] >= 2 else np.c_[points[:, 0], np.zeros(len(points))]


def plot_round(coords: np.ndarray | None, losses: np.ndarray, path: str | os.PathLike, *,
               anchors: np.ndarray | None = None, points: np.ndarray | None = None, title: str = "",
               axis_label: str = "umap") -> Path:
    """Real examples at their map `coords` coloured by `losses`; `anchors` (indices) and sampled `points` on top.

    `coords=None` (no map): each example at (its rank by loss, its loss).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = np.asarray(losses)
    if coords is None:
        rank = np.empty(len(losses))
        rank[np.argsort(-losses, kind="stable")] = np.arange(len(losses))
        xy, labels = np.c_[rank, losses], ("examples by loss (rank, hardest first)", "distillation loss")
    else:
        xy, labels = _xy(coords), (f"{axis_label} 1", f"{axis_label} 2")
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
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.legend(loc="best", fontsize=7, markerscale=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
