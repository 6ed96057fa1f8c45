"""`swap`: the anchor sentence with a fraction of its words replaced by the teacher's nearest vocabulary neighbours.

`shift` and `interpolate` move whole sequences and their points teach the student no more than their anchors do
(the synthesis probe in docs/results.md); `adversarial` moves off the data manifold. Swapping tokens for their
nearest neighbours in the teacher's own input-embedding table makes new *sentences*, each still a sequence of real
token vectors, so the teacher labels text of the kind it was trained on. This is TinyBERT's augmentation (a large
fraction of words replaced, which distillation prefers) with the teacher's embedding table standing in for GloVe
and a masked LM, applied to the hard anchors the map selects. An entry stores only the replacement ids.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.weak import WeakIdKeyDictionary

from .base import Column, ProposalContext, SynthesisMethod, layer1_of

SWAP = "swap_ids"  # per position: the replacement token id, 0 where the source token is kept


def special_token_ids(features: dict[str, list]) -> set[int]:
    """Ids that frame a sequence ([CLS], [SEP], <s>, </s>, ...): never swapped, never swapped in.

    Read from the data rather than a tokenizer: an id found at the first (or last) position of at least half the
    examples. Separators inside a pair are the same ids as the closing one.
    """
    ids_of = [ids for ids in features["input_ids"] if len(ids)]
    special = set()
    for position in (0, -1):
        values, counts = np.unique([int(ids[position]) for ids in ids_of], return_counts=True)
        special.update(int(v) for v in values[counts * 2 >= len(ids_of)])
    return special


@torch.no_grad()
def nearest_neighbour_ids(embeddings: torch.Tensor, ids: torch.Tensor, k: int, banned: torch.Tensor,
                          chunk: int = 1024) -> torch.Tensor:
    """(len(ids), k): each id's k nearest vocabulary ids by cosine similarity of input embeddings, itself and
    `banned` ids excluded."""
    table = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    out = []
    for start in range(0, len(ids), chunk):
        rows = ids[start:start + chunk]
        sims = table[rows] @ table.T
        sims[:, banned] = -float("inf")
        sims[torch.arange(len(rows)), rows] = -float("inf")
        out.append(sims.topk(k, dim=-1).indices)
    return torch.cat(out) if out else torch.zeros(0, k, dtype=torch.long)


# embedding table -> {(k, banned ids, table version): {token id: its k neighbours}}: the teacher is frozen, so a
# round only searches for the ids no earlier round of the run has seen
_NEIGHBOURS = WeakIdKeyDictionary()  # by identity: a tensor's == is elementwise


def cached_neighbour_ids(weight: torch.Tensor, ids: np.ndarray, k: int, banned: torch.Tensor) -> torch.Tensor:
    """`nearest_neighbour_ids` of `ids`, remembered per embedding table across rounds."""
    key = (k, tuple(banned.tolist()), weight._version)
    store = _NEIGHBOURS.setdefault(weight, {})
    if key not in store:
        store.clear()  # other settings, or the table changed in place
        store[key] = {}
    known = store[key]
    missing = [int(i) for i in ids if int(i) not in known]
    if missing:
        found = nearest_neighbour_ids(weight.detach().cpu(), torch.as_tensor(missing), k, banned)
        known.update(zip(missing, found))
    return torch.stack([known[int(i)] for i in ids]) if len(ids) else torch.zeros(0, k, dtype=torch.long)


class SwapSynthesis(SynthesisMethod):
    name = "swap"
    uses_map = False
    item_keys = (SWAP,)

    def columns(self) -> dict[str, Column]:
        return {SWAP: Column(("tokens",), torch.int32)}

    def propose(self, ctx: ProposalContext) -> dict[str, torch.Tensor]:
        cfg, rng = ctx.config, ctx.rng
        ids_of = ctx.features["input_ids"]
        out = torch.zeros(len(ctx.anchors), max(len(ids) for ids in ids_of), dtype=torch.int32)
        special = special_token_ids(ctx.features)
        rows, positions, old, word = [], [], [], []  # word: one key per replacement drawn
        for row, anchor in enumerate(ctx.anchors):
            ids = np.asarray(ids_of[int(anchor)])
            framing = np.isin(ids, list(special))
            free = np.flatnonzero(~framing)
            if not len(free):
                continue  # nothing but framing tokens: the entry stays a copy of its anchor
            chosen = free[rng.random(len(free)) < cfg.swap_fraction]
            if not len(chosen):  # every entry changes at least one word
                chosen = free[rng.integers(len(free), size=1)]
            shared = cfg.swap_shared_words and framing[1:-1].any()  # a separator inside: a sentence pair
            if shared:  # every occurrence of a chosen word, each replaced alike
                chosen = free[np.isin(ids[free], ids[chosen])]
            rows.extend([row] * len(chosen))
            positions.extend(chosen.tolist())
            old.extend(ids[chosen].tolist())
            word.extend((row, int(i)) if shared else (row, -1 - int(p)) for i, p in zip(ids[chosen], chosen))
        if not rows:
            return {SWAP: out}
        weight = ctx.teacher.model.get_input_embeddings().weight
        banned = torch.tensor(sorted(special | {0, int(ctx.teacher.config.pad_token_id or 0)}), dtype=torch.long)
        unique, inverse = np.unique(np.asarray(old), return_inverse=True)
        neighbours = cached_neighbour_ids(weight, unique, cfg.swap_candidates, banned)
        pick = rng.integers(cfg.swap_candidates, size=len(old))
        _, first, same = np.unique(np.asarray(word), axis=0, return_index=True, return_inverse=True)
        pick = torch.as_tensor(pick[first[same.reshape(-1)]])  # a word's occurrences share its first draw
        new = neighbours[torch.as_tensor(inverse), pick]
        out[torch.as_tensor(rows), torch.as_tensor(positions)] = new.to(torch.int32)
        return {SWAP: out}

    def item(self, real: dict[str, list], columns: dict[str, torch.Tensor], i: int) -> dict:
        return {SWAP: columns[SWAP][i]}

    def materialise(self, teacher, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        swap = batch.get(SWAP)
        if swap is not None:
            ids = batch.get("input_ids")
            if ids is None:
                raise ValueError("synthesis='swap' replaces token ids: the batch must carry 'input_ids'.")
            width = ids.shape[1]  # the batch's padded length may differ from the stored column's
            swap = torch.nn.functional.pad(swap, (0, max(0, width - swap.shape[1])))[:, :width].to(ids.dtype)
            batch = {**batch, "input_ids": torch.where(swap > 0, swap, ids)}
        return layer1_of(teacher, batch)
