"""Choosing among several synthetic candidates per anchor: keep the one the student finds hardest.

A round can make K candidates per anchor (`candidates_per_anchor`); the teacher labels them all and the row whose
soft-target loss under the current student is largest is kept, so the synthetic part of the next epoch holds the
examples the student has most to learn from (Glitter, 2203.09391; Minimax-kNN, 2105.13608). Labelling costs K
teacher passes and choosing K student passes over the synthetic set.
"""

from __future__ import annotations

import torch

from .buffer import SyntheticSet


def keep_harder(kept: SyntheticSet | None, kept_difficulty: torch.Tensor | None, candidate: SyntheticSet,
                difficulty: torch.Tensor) -> tuple[SyntheticSet, torch.Tensor]:
    """Row by row, the harder of `kept` and `candidate` (a tie keeps the earlier), and its difficulty."""
    if kept is None:
        return candidate, difficulty
    if len(kept) != len(candidate) or not torch.equal(kept.source, candidate.source):
        raise ValueError("Candidates of one round must be built on the same anchors, in the same order.")
    harder = difficulty > kept_difficulty
    new = candidate.tensors()
    merged = {}
    for name, old in kept.tensors().items():
        rows = harder.view(-1, *([1] * (old.dim() - 1)))
        merged[name] = torch.where(rows, new[name], old)
    return SyntheticSet.from_tensors(merged), torch.where(harder, difficulty, kept_difficulty)
