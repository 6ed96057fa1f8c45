"""Per-token gradient ascent on the student-teacher divergence in layer-1 space (the `adversarial` synthesis).

A shifted copy of an anchor (one vector added to every token) stays close to the anchor in the teacher's eyes; a
perturbation that follows the student's own gradient finds, in a few steps, the nearby inputs where the student
disagrees with the teacher most, which is where a distillation example teaches the most (MATE-KD, AD^2, VAT). Each
token moves within a ball whose radius is a fraction `rho` of that token's own norm, so no token strays far from
the data manifold; padding never moves.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Logits = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-example KL(teacher || student) at `temperature`, or squared error for one-output (regression) heads."""
    if student_logits.shape[-1] == 1:
        return (student_logits - teacher_logits).pow(2).squeeze(-1)
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1),
                    log_target=True, reduction="none").sum(-1)


def perturbation_objective(student: Logits, teacher: Logits | None, vectors: torch.Tensor, mask: torch.Tensor,
                           delta: torch.Tensor, temperature: float = 1.0,
                           teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example divergence at `vectors + delta` (delta zeroed on padding).

    With `teacher` given the teacher is re-run on the perturbed input (its gradient flows too); otherwise the target
    is the fixed `teacher_logits` of the clean anchor.
    """
    x = vectors + delta * mask.unsqueeze(-1).to(delta.dtype)
    target = teacher(x, mask) if teacher is not None else teacher_logits
    return divergence(student(x, mask), target, temperature)


def _token_norms(vectors: torch.Tensor) -> torch.Tensor:
    return vectors.norm(dim=-1, keepdim=True)


def project(delta: torch.Tensor, vectors: torch.Tensor, mask: torch.Tensor, rho: float) -> torch.Tensor:
    """Clip every token's perturbation to norm <= rho * ||token||, and zero it on padding."""
    radius = rho * _token_norms(vectors)
    norm = delta.norm(dim=-1, keepdim=True)
    scale = torch.where(norm > radius, radius / norm.clamp_min(1e-12), torch.ones_like(norm))
    return delta * scale * mask.unsqueeze(-1).to(delta.dtype)


def adversarial_delta(student: Logits, vectors: torch.Tensor, mask: torch.Tensor, *, steps: int = 3,
                      rho: float = 0.1, step_size: float | None = None, temperature: float = 1.0,
                      teacher: Logits | None = None, teacher_logits: torch.Tensor | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """`steps` normalised gradient-ascent steps on the divergence, per token, inside the rho-ball of each token.

    Each step moves token t by `step_size * ||x_t||` along its own normalised gradient (default step size
    `rho / steps`, so the steps alone can reach the ball's edge), then projects back into the ball. A tiny random
    start (seeded by `generator`) breaks the tie where the gradient vanishes. Returns delta (same shape as vectors),
    detached; the models' parameters get no gradients.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    if not rho > 0:
        raise ValueError(f"rho must be > 0, got {rho}.")
    if teacher is None and teacher_logits is None:
        raise ValueError("Give the teacher (re-run on perturbed inputs) or the anchors' teacher_logits.")
    size = rho / steps if step_size is None else step_size
    vectors = vectors.detach()
    scale = _token_norms(vectors)
    noise = torch.randn(vectors.shape, generator=generator, dtype=vectors.dtype, device="cpu").to(vectors.device)
    delta = project(1e-3 * rho * scale * noise / noise.norm(dim=-1, keepdim=True).clamp_min(1e-12), vectors, mask, rho)
    for _ in range(steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            objective = perturbation_objective(student, teacher, vectors, mask, delta, temperature, teacher_logits)
            (grad,) = torch.autograd.grad(objective.sum(), delta)
        direction = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        delta = project(delta.detach() + size * scale * direction, vectors, mask, rho)
    return delta.detach()
