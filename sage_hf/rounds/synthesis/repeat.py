"""`repeat`: each synthetic entry is an exact copy of its anchor (the control for every other method).

It up-weights the hard examples the map selected and adds nothing new, so a method that beats plain KD but not
`repeat` wins by re-weighting, not by what it synthesises. The teacher's label is the anchor's cached one.
"""

from __future__ import annotations

import torch

from .base import Column, ProposalContext, SynthesisMethod, layer1_of


class RepeatSynthesis(SynthesisMethod):
    name = "repeat"
    uses_map = False
    labels_from_cache = True

    def columns(self) -> dict[str, Column]:
        return {}

    def propose(self, ctx: ProposalContext) -> dict[str, torch.Tensor]:
        return {}

    def item(self, real: dict[str, list], columns: dict[str, torch.Tensor], i: int) -> dict:
        return {}

    def materialise(self, teacher, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return layer1_of(teacher, batch)
