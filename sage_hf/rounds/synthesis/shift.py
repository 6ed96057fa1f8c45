"""`shift` (the paper): the anchor's layer-1 sequence plus (inverted map point - anchor's pooled vector)."""

from __future__ import annotations

import numpy as np
import torch

from .base import Column, ProposalContext, SynthesisMethod, layer1_of


def add_shift(vectors: torch.Tensor, shift: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The shift on every real token (padding stays untouched)."""
    return vectors + shift.to(vectors.dtype).unsqueeze(1) * mask.unsqueeze(-1).to(vectors.dtype)


class ShiftSynthesis(SynthesisMethod):
    name = "shift"
    uses_map = True
    item_keys = ("shift",)

    def columns(self) -> dict[str, Column]:
        return {"shift": Column(("hidden",), torch.float32)}

    def propose(self, ctx: ProposalContext) -> dict[str, torch.Tensor]:
        inverted = ctx.map.inverse(ctx.points.points.astype(np.float32))
        shift = torch.as_tensor(inverted - ctx.pooled[ctx.anchors], dtype=torch.float32)
        return {"shift": shift * ctx.config.shift_scale}

    def item(self, real: dict[str, list], columns: dict[str, torch.Tensor], i: int) -> dict:
        return {"shift": columns["shift"][i]}

    def materialise(self, teacher, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        vectors, mask = layer1_of(teacher, batch)
        if batch.get("shift") is not None:
            vectors = add_shift(vectors, batch["shift"], mask)
        return vectors, mask
