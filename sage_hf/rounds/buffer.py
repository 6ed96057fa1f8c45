"""The training set SAGE swaps each epoch: a fixed-length buffer of lazy (source example, shift) entries.

Trainer builds its dataloader (and the LR schedule from its length) once per `train()` call, so the set cannot
be swapped by assigning `trainer.train_dataset`. The buffer keeps its length and is refilled *in place*; its
tensors live in shared memory so dataloader workers, persistent ones too, read the new entries.

A synthetic example is lazy: the index of its real source (anchor) example plus one shift vector, or (with
`synthesis="interpolate"`) a partner example and a mixing weight; the trainer materialises it from layer 1
(`materialise`). Memory grows with N x hidden, not N x seq_len x hidden.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


@dataclass
class SyntheticSet:
    """One round's output: per entry, its source real example, shift (already scaled) and teacher logits."""

    source: torch.Tensor  # (m,) long, indices into the real training set
    shift: torch.Tensor  # (m, hidden) float32; zeros for real examples
    teacher_logits: torch.Tensor  # (m, num_labels) float32
    synthetic: torch.Tensor  # (m,) bool: False for an untouched real example
    partner: torch.Tensor | None = None  # (m,) long: the sequence mixed into the source's (default: itself)
    mix: torch.Tensor | None = None  # (m,) float32: partner's weight, 0 = the source sequence alone

    def __post_init__(self):
        if self.partner is None:  # checkpoints written before interpolation existed have neither
            self.partner = self.source.clone()
        if self.mix is None:
            self.mix = torch.zeros(len(self.source))

    def __len__(self) -> int:
        return int(self.source.shape[0])

    def _fields(self) -> tuple[torch.Tensor, ...]:
        return self.source, self.shift, self.teacher_logits, self.synthetic, self.partner, self.mix

    def digest(self) -> str:
        """Content hash: equal on every rank, and between a resumed and an uninterrupted run."""
        h = hashlib.sha256()
        for t in self._fields():
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    @classmethod
    def real(cls, indices, teacher_logits: torch.Tensor, hidden: int) -> "SyntheticSet":
        indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return cls(indices, torch.zeros(len(indices), hidden), teacher_logits[indices].float(),
                   torch.zeros(len(indices), dtype=torch.bool))

    @staticmethod
    def concat(a: "SyntheticSet", b: "SyntheticSet") -> "SyntheticSet":
        return SyntheticSet(*(torch.cat([x, y]) for x, y in zip(a._fields(), b._fields())))


class SageTrainBuffer(Dataset):
    """A map-style dataset of fixed length whose entries are replaced in place between epochs."""

    def __init__(self, real_features: dict[str, list], labels: list | None, length: int, hidden: int, num_labels: int,
                 pairs: bool = False):
        if length < 1:
            raise ValueError(f"The SAGE training buffer needs at least one entry, got length={length}.")
        self.real = real_features  # column -> list of per-example token lists (input_ids, attention_mask, ...)
        self.labels = labels
        self.length = length
        self.source = torch.zeros(length, dtype=torch.long).share_memory_()
        self.shift = torch.zeros(length, hidden).share_memory_()
        self.teacher_logits = torch.zeros(length, num_labels).share_memory_()
        self.synthetic = torch.zeros(length, dtype=torch.bool).share_memory_()
        self.pairs = pairs  # items carry their partner's tokens and mixing weight (synthesis="interpolate")
        self.partner = torch.zeros(length, dtype=torch.long).share_memory_()
        self.mix = torch.zeros(length).share_memory_()
        self.generation = torch.zeros(1, dtype=torch.long).share_memory_()  # bumped by every fill

    def __len__(self) -> int:
        return self.length

    def fill(self, entries: SyntheticSet) -> None:
        if len(entries) != self.length:
            raise ValueError(f"A round produced {len(entries)} entries for a buffer of length {self.length}.")
        self.source.copy_(entries.source)
        self.shift.copy_(entries.shift)
        self.teacher_logits.copy_(entries.teacher_logits)
        self.synthetic.copy_(entries.synthetic)
        self.partner.copy_(entries.partner)
        self.mix.copy_(entries.mix)
        self.generation += 1

    def contents(self) -> SyntheticSet:
        return SyntheticSet(self.source.clone(), self.shift.clone(), self.teacher_logits.clone(), self.synthetic.clone(),
                            self.partner.clone(), self.mix.clone())

    def __getitem__(self, i: int) -> dict:
        src = int(self.source[i])
        item = {name: column[src] for name, column in self.real.items()}
        item["shift"] = self.shift[i]
        item["teacher_logits"] = self.teacher_logits[i]
        if self.pairs:
            partner = int(self.partner[i])
            item.update({f"partner_{name}": column[partner] for name, column in self.real.items()})
            item["mix"] = self.mix[i]
        # Example ids let tests (and users) see what a step trained on: the real index, or -(1 + slot) if synthetic.
        item["example_id"] = torch.tensor(-(1 + i) if bool(self.synthetic[i]) else src)
        if self.labels is not None:
            label = self.labels[src] if not bool(self.synthetic[i]) else -100
            item["labels"] = torch.tensor(label)
        return item


class BufferLengthGroupedSampler(Sampler):
    """Length grouping (dynamic padding with little waste) by the lengths of the buffer's *current* entries.

    transformers' LengthGroupedSampler reads lengths once, but a round changes which real sequence each entry is
    built on; the lengths are re-read at the start of every epoch, after the round has refilled the buffer.
    """

    def __init__(self, batch_size: int, buffer: SageTrainBuffer, generator=None):
        self.batch_size = batch_size
        self.buffer = buffer
        self.generator = generator
        self.real_lengths = torch.tensor([len(ids) for ids in buffer.real["input_ids"]])

    def __len__(self) -> int:
        return len(self.buffer)

    def __iter__(self):
        from transformers.trainer_pt_utils import get_length_grouped_indices

        lengths = self.real_lengths[self.buffer.source]
        if self.buffer.pairs:  # a mixed entry is as long as the longer of its two sequences
            lengths = torch.maximum(lengths, self.real_lengths[self.buffer.partner])
        lengths = lengths.tolist()
        return iter(get_length_grouped_indices(lengths, self.batch_size, generator=self.generator))


# ---- from lazy entries to layer-1 sequences ------------------------------------------------------------------
def add_shift(vectors: torch.Tensor, shift: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Anchor's layer-1 sequence + shift on every real token (padding stays untouched)."""
    return vectors + shift.to(vectors.dtype).unsqueeze(1) * mask.unsqueeze(-1).to(vectors.dtype)


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


@torch.no_grad()
def materialise(teacher, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer-1 vectors and attention mask of a batch of real, shifted or interpolated examples."""
    mask = batch.get("attention_mask")
    if batch.get("inputs_embeds") is not None:
        vectors = batch["inputs_embeds"]
    elif batch.get("input_ids") is not None:
        vectors = teacher.layer1(batch["input_ids"], mask, batch.get("token_type_ids"))
    else:
        raise ValueError(f"A batch must carry 'input_ids' or 'inputs_embeds'; this one has {sorted(batch)}.")
    if mask is None:
        mask = torch.ones(vectors.shape[:2], dtype=torch.long, device=vectors.device)
    if batch.get("shift") is not None:  # lazy synthetic example: anchor's layer-1 sequence + shift
        vectors = add_shift(vectors, batch["shift"], mask)
    if batch.get("mix") is not None:
        p_mask = batch["partner_attention_mask"]
        partner = teacher.layer1(batch["partner_input_ids"], p_mask, batch.get("partner_token_type_ids"))
        vectors, mask = interpolate(vectors, mask, partner, p_mask, batch["mix"])
    return vectors, mask
