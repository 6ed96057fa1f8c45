"""The adversarial perturbation: exact gradients, the per-token bound, padding, determinism."""

from __future__ import annotations

import pytest
import torch

from sage_hf import SageStudentForSequenceClassification, as_teacher
from sage_hf.rounds.perturbation import adversarial_delta, perturbation_objective, project

from testing_utils import tiny_teacher


def _models(dtype=torch.float32):
    teacher = as_teacher(tiny_teacher("bert", num_labels=3, sharpen=4.0, dropout=0.0)).to(dtype)
    torch.manual_seed(1)
    student = SageStudentForSequenceClassification.from_teacher(teacher, init="random").to(dtype).eval()
    ids = torch.randint(5, 90, (3, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    with torch.no_grad():
        vectors = teacher.layer1(ids, mask)
    s = lambda x, m: student(inputs_embeds=x, attention_mask=m).logits  # noqa: E731
    t = lambda x, m: teacher.logits_from_layer1(x, m)  # noqa: E731
    return s, t, teacher, vectors, mask


@pytest.mark.parametrize("through_teacher", [False, True])
def test_objective_gradient_equals_finite_differences(through_teacher):
    s, t, _, vectors, mask = _models(torch.float64)
    with torch.no_grad():
        target = t(vectors, mask)
    teacher = t if through_teacher else None
    delta = (0.01 * torch.randn(vectors.shape, dtype=torch.float64)).requires_grad_(True)
    (grad,) = torch.autograd.grad(perturbation_objective(s, teacher, vectors, mask, delta, 2.0, target).sum(), delta)
    eps = 1e-6
    for b, pos, dim in [(0, 0, 0), (0, 6, 5), (1, 4, 31), (2, 2, 7)]:
        e = torch.zeros_like(delta)
        e[b, pos, dim] = eps
        with torch.no_grad():
            up = perturbation_objective(s, teacher, vectors, mask, delta + e, 2.0, target).sum()
            down = perturbation_objective(s, teacher, vectors, mask, delta - e, 2.0, target).sum()
        assert float(grad[b, pos, dim]) == pytest.approx(float((up - down) / (2 * eps)), rel=1e-5, abs=1e-9)
    # padding positions have exactly zero gradient: they never move
    assert torch.all(grad[1, 5:] == 0) and torch.all(grad[2, 3:] == 0)


def test_bound_respected_padding_untouched_and_divergence_raised():
    s, t, _, vectors, mask = _models()
    with torch.no_grad():
        target = t(vectors, mask)
    rho = 0.2
    delta = adversarial_delta(s, vectors, mask, steps=3, rho=rho, temperature=2.0, teacher_logits=target,
                              generator=torch.Generator().manual_seed(0))
    norms, limits = delta.norm(dim=-1), rho * vectors.norm(dim=-1)
    assert torch.all(norms <= limits * (1 + 1e-5))
    assert torch.all(delta[mask == 0] == 0)
    assert norms[mask == 1].min() > 0.5 * limits[mask == 1].min()  # the steps actually moved every real token
    with torch.no_grad():
        before = perturbation_objective(s, None, vectors, mask, torch.zeros_like(delta), 2.0, target)
        after = perturbation_objective(s, None, vectors, mask, delta, 2.0, target)
    assert torch.all(after > before)


def test_same_seed_same_perturbation_other_seed_other():
    s, t, _, vectors, mask = _models()
    with torch.no_grad():
        target = t(vectors, mask)
    run = lambda seed: adversarial_delta(s, vectors, mask, steps=2, rho=0.1, teacher_logits=target,  # noqa: E731
                                         generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_project_clips_to_the_ball_and_zeros_padding():
    vectors = torch.ones(1, 3, 4)
    mask = torch.tensor([[1, 1, 0]])
    delta = torch.tensor([[[3.0, 0, 0, 0], [0.1, 0, 0, 0], [5.0, 0, 0, 0]]])
    out = project(delta, vectors, mask, rho=0.5)  # ||token|| = 2, radius 1
    assert torch.allclose(out[0, 0], torch.tensor([1.0, 0, 0, 0]))
    assert torch.equal(out[0, 1], delta[0, 1]) and torch.all(out[0, 2] == 0)


def test_bad_arguments():
    s, _, _, vectors, mask = _models()
    with pytest.raises(ValueError, match="steps"):
        adversarial_delta(s, vectors, mask, steps=0, teacher_logits=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="rho"):
        adversarial_delta(s, vectors, mask, rho=0, teacher_logits=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="teacher"):
        adversarial_delta(s, vectors, mask)
