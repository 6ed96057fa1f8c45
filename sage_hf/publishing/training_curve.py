"""The card's training curve: distillation loss, eval metrics and agreement with the teacher against epoch."""

from __future__ import annotations

import logging
from pathlib import Path

from .card_data import HOUSEKEEPING, PRETTY

logger = logging.getLogger(__name__)


def plot_training_curve(log_history: list[dict], path: str | Path, title: str = "") -> Path | None:
    """Loss (left axis) and eval metrics / teacher agreement (right axis) against epoch; None if nothing was logged."""
    train = [(h["epoch"], h["loss"]) for h in log_history if "loss" in h and "epoch" in h]
    eval_loss = [(h["epoch"], h["eval_loss"]) for h in log_history if "eval_loss" in h and "epoch" in h]
    scores: dict[str, list[tuple[float, float]]] = {}
    for h in log_history:
        if "epoch" not in h:
            continue
        for key, value in h.items():
            short = key[len("eval_"):] if key.startswith("eval_") else None
            if short and short not in HOUSEKEEPING and isinstance(value, (int, float)):
                scores.setdefault(f"eval {PRETTY.get(short, short).lower()}", []).append((h["epoch"], value))
        if "sage/agreement" in h:
            scores.setdefault("agreement with teacher (train set)", []).append((h["epoch"], h["sage/agreement"]))
    if not (train or eval_loss or scores):
        logger.warning("No losses or metrics in the log history: the card has no training curve.")
        return None

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    lines = []
    if train:
        lines += ax.plot(*zip(*train, strict=True), marker="o", ms=3, color="tab:blue", label="training loss")
    if eval_loss:
        lines += ax.plot(*zip(*eval_loss, strict=True), marker="s", ms=3, ls="--", color="tab:cyan", label="eval loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("distillation loss")
    if scores:
        right = ax.twinx()
        for i, (label, points) in enumerate(sorted(scores.items())):
            lines += right.plot(*zip(*points, strict=True), marker="^", ms=3, color=f"C{(i + 1) % 10}", label=label)
        right.set_ylabel("metric")
    # Below the axes: inside, it would hide the points of one of the two scales.
    ax.legend(lines, [ln.get_label() for ln in lines], loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2,
              fontsize=7, frameon=False)
    ax.set_title(title or "Training curve")
    ax.grid(alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
