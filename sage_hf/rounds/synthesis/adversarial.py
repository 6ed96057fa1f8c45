"""`adversarial`: each anchor moved, token by token, toward where the student disagrees with the teacher most.

A few normalised gradient-ascent steps on the student-teacher divergence with respect to the anchor's layer-1
vectors (see `perturbation.py`), each token kept within `adversarial_radius` x its own norm, padding untouched; the
teacher then labels the result. This is the layer-1 form of adversarial augmentation for distillation (MATE-KD,
AD^2). The per-token perturbation is stored in float16, so the buffer holds entries x longest sequence x hidden.
"""

from __future__ import annotations

import torch

from ...collator import SageDataCollator
from ..perturbation import adversarial_delta
from .base import Column, ProposalContext, SynthesisMethod, layer1_of

DELTA = "delta"


class AdversarialSynthesis(SynthesisMethod):
    name = "adversarial"
    uses_map = False
    item_keys = (DELTA,)

    def columns(self) -> dict[str, Column]:
        return {DELTA: Column(("tokens", "hidden"), torch.float16)}

    def propose(self, ctx: ProposalContext) -> dict[str, torch.Tensor]:
        cfg, student, teacher = ctx.config, ctx.student, ctx.teacher
        length = max(len(ids) for ids in ctx.features["input_ids"])
        out = torch.zeros(len(ctx.anchors), length, teacher.width, dtype=torch.float16)
        generator = torch.Generator().manual_seed(int(ctx.rng.integers(2**62)))
        device = next(student.parameters()).device
        dtype = next(student.parameters()).dtype
        collate = SageDataCollator()

        def student_logits(x, mask):
            return student(inputs_embeds=x.to(dtype), attention_mask=mask).logits.float()

        def teacher_logits(x, mask):
            return teacher.logits_from_layer1(x, mask).float()

        was_training = student.training
        student.eval()  # dropout off: the perturbation follows the student that will be trained, deterministically
        try:
            step = cfg.teacher_batch_size
            for start in range(0, len(ctx.anchors), step):
                rows = ctx.anchors[start:start + step]
                batch = collate([{k: v[int(i)] for k, v in ctx.features.items()} for i in rows])
                batch = {k: v.to(device) for k, v in batch.items()}
                with torch.no_grad():
                    vectors, mask = layer1_of(teacher, batch)
                if cfg.adversarial_through_teacher:
                    target = None
                elif ctx.teacher_logits is not None:  # the clean anchors' labels: from the cache
                    target = ctx.teacher_logits[torch.as_tensor(rows, dtype=torch.long)].to(device)
                else:
                    with torch.no_grad():
                        target = teacher_logits(vectors, mask)
                delta = adversarial_delta(student_logits, vectors.float(), mask, steps=cfg.adversarial_steps,
                                          rho=cfg.adversarial_radius, temperature=cfg.difficulty_temperature,
                                          teacher=teacher_logits if cfg.adversarial_through_teacher else None,
                                          teacher_logits=target, generator=generator)
                out[start:start + len(rows), : delta.shape[1]] = delta.to(torch.float16).cpu()
        finally:
            student.train(was_training)
        return {DELTA: out}

    def item(self, real: dict[str, list], columns: dict[str, torch.Tensor], i: int) -> dict:
        return {DELTA: columns[DELTA][i]}

    def materialise(self, teacher, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        vectors, mask = layer1_of(teacher, batch)
        delta = batch.get(DELTA)
        if delta is not None:
            delta = delta[:, : vectors.shape[1]].to(vectors.dtype)
            vectors = vectors + delta * mask.unsqueeze(-1).to(vectors.dtype)
        return vectors, mask
