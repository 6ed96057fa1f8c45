"""Per-example distillation losses.

Kept per example (no reduction) because the same numbers are the "difficulty" that drives SAGE's
augmentation, and because the trainer normalises by the example count of the whole accumulated batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KD_LOSSES = ("kl", "mse")


def kd_loss_per_example(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0, kind: str = "kl"
) -> torch.Tensor:
    """Soft-target loss, shape (batch,).

    "kl": KL(teacher_T || student_T) * T^2 (Hinton et al.; the T^2 keeps gradient size independent of T).
    "mse": mean squared error on raw logits. A single-output (regression) head always uses MSE on the score.
    """
    student_logits = student_logits.float()
    teacher_logits = teacher_logits.float().to(student_logits.device)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"teacher_logits have shape {tuple(teacher_logits.shape)} but the student's logits have shape "
            f"{tuple(student_logits.shape)}: the class counts (num_labels) must match."
        )
    if kind == "mse" or student_logits.shape[-1] == 1:
        return (student_logits - teacher_logits).pow(2).mean(-1)
    if kind != "kl":
        raise ValueError(f"Unknown kd_loss '{kind}': choose one of {KD_LOSSES}.")
    t_logp = F.log_softmax(teacher_logits / temperature, dim=-1)
    s_logp = F.log_softmax(student_logits / temperature, dim=-1)
    return (t_logp.exp() * (t_logp - s_logp)).sum(-1) * temperature**2


def hard_loss_per_example(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gold-label loss, shape (batch,): cross-entropy, or MSE for regression; 0 where the label is -100."""
    if student_logits.shape[-1] == 1:
        return (student_logits.float().squeeze(-1) - labels.float()).pow(2) * labels.ne(-100)
    labels = labels.long()
    return F.cross_entropy(student_logits.float(), labels.clamp_min(0), reduction="none") * labels.ne(-100)


def distillation_loss_per_example(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    kind: str = "kl",
    alpha_kd: float = 1.0,
    alpha_hard: float = 0.0,
) -> torch.Tensor:
    """alpha_kd * soft loss + alpha_hard * gold-label loss (only where gold labels exist)."""
    loss = alpha_kd * kd_loss_per_example(student_logits, teacher_logits, temperature, kind)
    if alpha_hard and labels is not None:
        loss = loss + alpha_hard * hard_loss_per_example(student_logits, labels)
    return loss
