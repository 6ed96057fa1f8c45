"""A PNG per round: the 2-D map coloured by loss, anchors and synthetic points overlaid."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_round(engine, losses: np.ndarray, path: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    coords = engine.coords
    xy = coords[:, :2] if coords.shape[1] >= 2 else np.c_[coords[:, 0], np.zeros(len(coords))]
    fig, ax = plt.subplots(figsize=(6.4, 5.2), dpi=110)
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=losses, s=4, cmap="viridis", alpha=0.7, linewidths=0)
    fig.colorbar(sc, ax=ax, label="per-example distillation loss")
    if engine.last_anchors is not None:
        a = np.unique(engine.last_anchors)
        ax.scatter(xy[a, 0], xy[a, 1], s=14, facecolors="none", edgecolors="red", linewidths=0.6, label="anchors")
    if engine.last_points is not None:
        p = engine.last_points
        pxy = p[:, :2] if p.shape[1] >= 2 else np.c_[p[:, 0], np.zeros(len(p))]
        ax.scatter(pxy[:, 0], pxy[:, 1], s=3, c="black", marker="x", linewidths=0.4, label="synthetic")
    ax.set_title(title or "SAGE round")
    ax.set_xlabel(f"{engine.settings.name} 1")
    ax.set_ylabel(f"{engine.settings.name} 2")
    ax.legend(loc="best", fontsize=7, markerscale=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
