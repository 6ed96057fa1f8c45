"""Read a synthetic example: the nearest vocabulary token to each of its layer-1 vectors, position by position.

This answers the paper's open question of what synthetic points "are": each position's vector is compared with
what the teacher's input layer gives for every vocabulary token at that position (and segment).
"""

from __future__ import annotations

import torch

from ..models.teacher import position_offset
from .buffer import entry_batch


@torch.no_grad()
def nearest_tokens(teacher, vectors: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                   chunk: int = 8192) -> list[int]:
    """Token id whose input-layer vector at the same position is nearest (L2) to each row of `vectors` (seq, H)."""
    if teacher.interface_layer != 0:
        raise ValueError("Decoding needs the input-layer interface (interface_layer=0).")
    base = teacher.base
    emb = base.embeddings
    project = getattr(base, "embeddings_project", None)
    vocab = emb.word_embeddings.num_embeddings
    device = vectors.device
    offset = position_offset(teacher.config)
    out = []
    for pos in range(vectors.shape[0]):
        best, best_d = 0, float("inf")
        for start in range(0, vocab, chunk):
            ids = torch.arange(start, min(vocab, start + chunk), device=device).unsqueeze(1)
            kw = {"position_ids": torch.full_like(ids, pos + offset)}
            if teacher.spec.token_types:
                tt = 0 if token_type_ids is None else int(token_type_ids[pos])
                kw["token_type_ids"] = torch.full_like(ids, tt)
            cand = emb(input_ids=ids, **kw)
            if project is not None:
                cand = project(cand)
            d = (cand[:, 0] - vectors[pos]).pow(2).sum(-1)
            i = int(d.argmin())
            if float(d[i]) < best_d:
                best, best_d = start + i, float(d[i])
        out.append(best)
    return out


def _token_types(batch: dict) -> list[int] | None:
    """Segment of each position of a one-entry batch: the first of its sequences that has a real token there."""
    groups = [k[: -len("input_ids")] for k in batch if k.endswith("input_ids")]
    if "token_type_ids" not in batch:
        return None
    types = []
    for pos in range(batch["attention_mask"].shape[1]):
        owner = next((p for p in groups if int(batch[p + "attention_mask"][0, pos])), "")
        types.append(int(batch.get(owner + "token_type_ids", batch["token_type_ids"])[0, pos]))
    return types


@torch.no_grad()
def decode_synthetic(teacher, tokenizer, features: dict[str, list], entries, method, count: int = 3) -> list[str]:
    """'anchor text => decoded synthetic text' for the first `count` synthetic `entries` (a `SyntheticSet`)."""
    device = next(teacher.parameters()).device
    lines = []
    for slot in torch.nonzero(entries.synthetic).flatten()[:count].tolist():
        batch = entry_batch(features, entries, method, [slot])
        vectors, mask = method.materialise(teacher, {k: v.to(device) for k, v in batch.items()})
        keep = mask[0].bool()  # an interpolated entry covers the longer of its two sequences
        types = _token_types(batch)
        ids = nearest_tokens(teacher, vectors[0][keep], None if types is None else
                             [t for t, k in zip(types, keep.tolist()) if k])
        anchor = tokenizer.decode(features["input_ids"][int(entries.source[slot])], skip_special_tokens=True)
        lines.append(f"{anchor!r} => {tokenizer.decode(ids, skip_special_tokens=True)!r}")
    return lines
