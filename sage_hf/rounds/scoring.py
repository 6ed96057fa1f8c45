"""Score step of a SAGE round: per-example loss and teacher agreement of the current student, and pooling.

The real examples' layer-1 vectors never change (the teacher's input layer is frozen), so their pooled
vectors are computed once; their teacher logits come from the cache. Only the student's losses change.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..collator import SageDataCollator
from ..losses import distillation_loss_per_example

POOLINGS = ("mean", "first")


def pool(vectors: torch.Tensor, mask: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """One vector per example: masked mean over real tokens, or the first ([CLS]) token."""
    if how == "first":
        return vectors[:, 0]
    if how != "mean":
        raise ValueError(f"Unknown pooling '{how}': choose one of {', '.join(POOLINGS)}.")
    m = mask.unsqueeze(-1).to(vectors.dtype)
    return (vectors * m).sum(1) / m.sum(1).clamp_min(1.0)


def _batches(features: dict[str, list], indices, batch_size: int, collator: SageDataCollator, desc: str, show: bool):
    for start in tqdm(range(0, len(indices), batch_size), desc=desc, disable=not show, leave=False):
        idx = indices[start:start + batch_size]
        yield idx, collator([{k: v[i] for k, v in features.items()} for i in idx])


@torch.no_grad()
def pooled_layer1(teacher, features: dict[str, list], batch_size: int = 64, how: str = "mean",
                  device=None, show_progress: bool = True) -> np.ndarray:
    """(N, hidden) pooled layer-1 vectors of the real examples (float32)."""
    device = device or next(teacher.parameters()).device
    collator = SageDataCollator()
    out = []
    n = len(features["input_ids"])
    for _, batch in _batches(features, list(range(n)), batch_size, collator, "Pooling layer-1", show_progress):
        batch = {k: v.to(device) for k, v in batch.items()}
        vectors = teacher.layer1(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        out.append(pool(vectors, batch["attention_mask"], how).float().cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def score_examples(student, teacher, features: dict[str, list], teacher_logits: torch.Tensor, indices, *,
                   batch_size: int = 64, loss_kwargs: dict | None = None, device=None,
                   show_progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-example distillation loss and argmax agreement (1/0) of the student on `indices` of the real set."""
    device = device or next(student.parameters()).device
    was_training = student.training
    student.eval()
    collator = SageDataCollator()
    losses, agree = [], []
    for idx, batch in _batches(features, list(indices), batch_size, collator, "Scoring real examples", show_progress):
        batch = {k: v.to(device) for k, v in batch.items()}
        vectors = teacher.layer1(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        logits = student(inputs_embeds=vectors.to(next(student.parameters()).dtype),
                         attention_mask=batch["attention_mask"]).logits.float()
        target = teacher_logits[idx].to(device)
        losses.append(distillation_loss_per_example(logits, target, **(loss_kwargs or {})).cpu())
        if logits.shape[-1] == 1:  # regression: "agrees" when within 0.5 of the teacher's score
            agree.append(((logits - target).abs().squeeze(-1) < 0.5).cpu())
        else:
            agree.append((logits.argmax(-1) == target.argmax(-1)).cpu())
    student.train(was_training)
    return torch.cat(losses).numpy(), torch.cat(agree).numpy()
