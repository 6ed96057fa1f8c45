"""`interpolate`: the sampler's anchor -> neighbour position applied to whole sequences, token by token.

(1 - t) anchor + t neighbour on the layer-1 sequences, with `t` the sampled point's position between the two
on the map; no vector inversion is needed.
"""

from __future__ import annotations

import torch

from .base import Column, ProposalContext, SynthesisMethod, layer1_of

PARTNER = "partner_"  # prefix of the second sequence's token columns; the collator pads both to one length


def interpolate(vectors: torch.Tensor, mask: torch.Tensor, partner: torch.Tensor, partner_mask: torch.Tensor,
                mix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(1 - mix) anchor + mix partner, position by position; the mixed sequence covers both sequences' tokens.

    Both sequences are padded to one length by the collator, so a position real in only one of them mixes a
    token with the other's padding vector (as mixup on padded embeddings does). `mix == 0` gives the anchor.
    """
    w = mix.to(vectors.dtype).view(-1, 1, 1)
    mixed = (1 - w) * vectors + w * partner
    has_partner = (mix > 0).view(-1, 1)
    return mixed, torch.where(has_partner, torch.maximum(mask, partner_mask), mask)


class InterpolateSynthesis(SynthesisMethod):
    name = "interpolate"
    uses_map = True
    item_keys = (f"{PARTNER}input_ids", f"{PARTNER}attention_mask", f"{PARTNER}token_type_ids", "mix")

    def columns(self) -> dict[str, Column]:
        return {"partner": Column((), torch.long), "mix": Column((), torch.float32)}

    def real_columns(self, source: torch.Tensor, sizes: dict[str, int]) -> dict[str, torch.Tensor]:
        # A real entry is its own partner: the batch then pads to its own length.
        return {"partner": source.clone(), "mix": torch.zeros(len(source))}

    def propose(self, ctx: ProposalContext) -> dict[str, torch.Tensor]:
        return {"partner": torch.as_tensor(ctx.points.neighbour_idx, dtype=torch.long),
                "mix": torch.as_tensor(ctx.points.t, dtype=torch.float32)}

    def item(self, real: dict[str, list], columns: dict[str, torch.Tensor], i: int) -> dict:
        partner = int(columns["partner"][i])
        return {**{f"{PARTNER}{name}": column[partner] for name, column in real.items()}, "mix": columns["mix"][i]}

    def lengths(self, real_lengths: torch.Tensor, source: torch.Tensor, columns: dict[str, torch.Tensor]):
        return torch.maximum(real_lengths[source], real_lengths[columns["partner"]])

    def materialise(self, teacher, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        vectors, mask = layer1_of(teacher, batch)
        if batch.get("mix") is not None:
            p_mask = batch[f"{PARTNER}attention_mask"]
            partner = teacher.layer1(batch[f"{PARTNER}input_ids"], p_mask, batch.get(f"{PARTNER}token_type_ids"))
            vectors, mask = interpolate(vectors, mask, partner, p_mask, batch["mix"])
        return vectors, mask
