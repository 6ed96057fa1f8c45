"""Choosing among several synthetic candidates per anchor.

A round can make K candidates per anchor (`candidates_per_anchor`); the teacher labels them all and one row per
anchor is kept (`candidate_choice`):

- "hardest": the candidate whose soft-target loss under the current student is largest, so the synthetic part of
  the next epoch holds the examples the student has most to learn from (Glitter, 2203.09391; Minimax-kNN,
  2105.13608). K teacher passes and K student passes over the synthetic set.
- "label_preserving": the first candidate the teacher gives its anchor's label (argmax of the cached logits), else
  the one whose teacher distribution moved least (KL from the anchor's); for a regression score, the candidate whose
  score moved least. Swapping words can turn a paraphrase pair into a non-paraphrase (docs/results.md: the teacher
  calls 20.9% of swapped MRPC pairs paraphrases against 29.5% of their anchors); this keeps augmentation
  label-preserving, as classic augmentation assumes. K teacher passes, no student pass. Measured on MRPC with K=3
  (docs/results.md): no better than one candidate, so the flipped labels were not what cost MRPC its point.
"""

from __future__ import annotations

import torch

from ..losses import kd_loss_per_example
from .buffer import SyntheticSet


def label_keeping_score(anchor_logits: torch.Tensor, candidate_logits: torch.Tensor) -> torch.Tensor:
    """Per row, higher for a candidate that keeps its anchor's teacher label: 0 when the argmax is the anchor's,
    else -(1 + KL(anchor || candidate)); for one output (regression), -(score change)^2."""
    moved = kd_loss_per_example(candidate_logits, anchor_logits)  # KL(anchor || candidate); one output: squared
    if anchor_logits.shape[-1] == 1:
        return -moved
    same = anchor_logits.argmax(-1) == candidate_logits.argmax(-1)
    return torch.where(same, torch.zeros_like(moved), -(1.0 + moved.clamp_min(0.0)))


def keep_best(kept: SyntheticSet | None, kept_score: torch.Tensor | None, candidate: SyntheticSet,
              score: torch.Tensor) -> tuple[SyntheticSet, torch.Tensor]:
    """Row by row, the higher-scoring of `kept` and `candidate` (a tie keeps the earlier), and its score."""
    if kept is None:
        return candidate, score
    if len(kept) != len(candidate) or not torch.equal(kept.source, candidate.source):
        raise ValueError("Candidates of one round must be built on the same anchors, in the same order.")
    better = score > kept_score
    new = candidate.tensors()
    merged = {}
    for name, old in kept.tensors().items():
        rows = better.view(-1, *([1] * (old.dim() - 1)))
        merged[name] = torch.where(rows, new[name], old)
    return SyntheticSet.from_tensors(merged), torch.where(better, score, kept_score)
