"""Score step of a SAGE round: per-example loss and teacher agreement of the current student, and pooling.

The real examples' layer-1 vectors never change (the teacher's input layer is frozen), so their pooled
vectors are computed once; their teacher logits come from the cache. Only the student's losses change.
Passes run in inference mode on batches of similar length (less padding); results come back in input order.
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


def difficulty_and_agreement(logits: torch.Tensor, target: torch.Tensor,
                             loss_kwargs: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row difficulty (distillation loss) and agreement with the teacher (regression: within 0.5)."""
    logits, target = logits.detach().float(), target.detach().float()
    losses = distillation_loss_per_example(logits, target, **(loss_kwargs or {}))
    if logits.shape[-1] == 1:
        return losses, (logits - target).abs().squeeze(-1) < 0.5
    return losses, logits.argmax(-1) == target.argmax(-1)


def by_length(lengths, batch_size: int) -> list[np.ndarray]:
    """Positions 0..len(lengths)-1 in batches of `batch_size`, longest first, so each batch pads little."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def _batches(features: dict[str, list], indices, batch_size: int, collator: SageDataCollator, desc: str, show: bool):
    """(positions in `indices`, collated batch) in length-sorted batches."""
    indices = np.asarray(indices, dtype=np.int64)
    lengths = [len(features["input_ids"][i]) for i in indices]
    for pos in tqdm(by_length(lengths, batch_size), desc=desc, disable=not show, leave=False):
        yield pos, collator([{k: v[i] for k, v in features.items()} for i in indices[pos]])


def pooled_layer1(teacher, features: dict[str, list], batch_size: int = 64, how: str = "mean",
                  device=None, show_progress: bool = True) -> np.ndarray:
    """(N, hidden) pooled layer-1 vectors of the real examples (float32)."""
    device = device or next(teacher.parameters()).device
    n = len(features["input_ids"])
    out = np.empty((n, teacher.width), dtype=np.float32)
    for pos, batch in _batches(features, range(n), batch_size, SageDataCollator(), "Pooling layer-1", show_progress):
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.inference_mode():
            vectors = teacher.layer1(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
            out[pos] = pool(vectors, batch["attention_mask"], how).float().cpu().numpy()
    return out


def score_examples(student, teacher, features: dict[str, list], teacher_logits: torch.Tensor, indices, *,
                   batch_size: int = 64, loss_kwargs: dict | None = None, device=None,
                   show_progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-example distillation loss and argmax agreement (1/0) of the student on `indices` of the real set."""
    device = device or next(student.parameters()).device
    dtype = next(student.parameters()).dtype
    indices = np.asarray(indices, dtype=np.int64)
    losses, agree = np.empty(len(indices), dtype=np.float32), np.empty(len(indices), dtype=bool)
    was_training = student.training
    student.eval()
    for pos, batch in _batches(features, indices, batch_size, SageDataCollator(), "Scoring real examples",
                               show_progress):
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.inference_mode():
            vectors = teacher.layer1(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
            logits = student(inputs_embeds=vectors.to(dtype), attention_mask=batch["attention_mask"]).logits.float()
            loss, hit = difficulty_and_agreement(logits, teacher_logits[indices[pos]].to(device), loss_kwargs)
            losses[pos], agree[pos] = loss.cpu().numpy(), hit.cpu().numpy()
    student.train(was_training)
    return losses, agree


class TrainingPassScores:
    """Difficulty and agreement of each real example as the training pass met it during the current epoch.

    In synthesis_mode='augment' every real example is trained on once per epoch, so the next round can pick its
    anchors from these and skip the separate scoring pass. They are not the same numbers: each row is scored by the
    student of its own optimiser step, with dropout on. Measured with benchmarks/bench_round_cost.py
    --compare_anchors (MiniLM teacher with a random sharpened head, 500 SST-2 sentences, 2-layer student, 3 epochs,
    top-20% pools): the anchor sets of rounds 2 and 3 have Jaccard 0.27 and 0.30 with a separate pass's (0.33 and
    0.37 with dropout off, so most of the gap is the student moving during the epoch; two random pools: 0.11).
    score_pass='always' keeps the separate pass.
    """

    TENSORS = ("losses", "agree", "seen")

    def __init__(self, n_real: int, loss_kwargs: dict):
        self.n_real = n_real
        self.loss_kwargs = loss_kwargs
        self._pending: list[tuple[torch.Tensor, ...]] = []
        self.reset()

    def reset(self) -> None:
        """Forget the epoch (called after every step, which consumed or ignored it)."""
        self._pending.clear()
        self.losses = np.full(self.n_real, np.nan, dtype=np.float32)
        self.agree = np.zeros(self.n_real, dtype=bool)
        self.seen = np.zeros(self.n_real, dtype=bool)

    def observe(self, example_ids: torch.Tensor, logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
        """Record a training batch; synthetic rows (negative ids) are dropped later, without a device sync here."""
        losses, agree = difficulty_and_agreement(logits, teacher_logits, self.loss_kwargs)
        self._pending.append((example_ids.detach(), losses, agree))

    def _flush(self) -> None:
        for ids, losses, agree in self._pending:
            ids = ids.cpu().numpy()
            real = (ids >= 0) & (ids < self.n_real)
            self.losses[ids[real]] = losses.cpu().numpy()[real]
            self.agree[ids[real]] = agree.cpu().numpy()[real]
            self.seen[ids[real]] = True
        self._pending.clear()

    def merge(self, accelerator=None) -> None:
        """Every rank ends with the union of the ranks' observations (a collective call in distributed runs)."""
        self._flush()
        if accelerator is None or accelerator.num_processes < 2:
            return
        from accelerate.utils import gather_object

        for idx, losses, agree in gather_object([(np.flatnonzero(self.seen), self.losses[self.seen],
                                                  self.agree[self.seen])]):
            self.losses[idx], self.agree[idx], self.seen[idx] = losses, agree, True

    def complete(self, accelerator=None) -> tuple[np.ndarray, np.ndarray] | None:
        """(losses, agreement) of every real example, or None when some were not trained on this epoch."""
        self.merge(accelerator)
        return (self.losses.copy(), self.agree.copy()) if self.seen.all() else None

    def tensors(self) -> dict[str, torch.Tensor]:
        self._flush()
        return {name: torch.from_numpy(getattr(self, name).copy()) for name in self.TENSORS}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.reset()
        if all(name in tensors for name in self.TENSORS):
            for name in self.TENSORS:
                getattr(self, name)[:] = tensors[name].numpy()
