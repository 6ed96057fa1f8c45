"""The training set SAGE swaps each epoch: a fixed-length buffer of lazy (source example, method columns) entries.

Trainer builds its dataloader (and the LR schedule from its length) once per `train()` call, so the set cannot
be swapped by assigning `trainer.train_dataset`. The buffer keeps its length and is refilled *in place*; its
tensors live in shared memory so dataloader workers, persistent ones too, read the new entries.

A synthetic entry is lazy: the index of its real source (anchor) example plus the per-entry columns of its
synthesis method (a shift vector, a partner example and a mixing weight, or per-token perturbations); the method
materialises it from layer 1. Memory grows with N x hidden, except for methods that store per-token columns.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..collator import SageDataCollator
from .synthesis import SynthesisMethod

_COLUMN_PREFIX = "columns."


@dataclass
class SyntheticSet:
    """One round's output: per entry, its source real example, teacher logits and the method's columns."""

    source: torch.Tensor  # (m,) long, indices into the real training set
    teacher_logits: torch.Tensor  # (m, num_labels) float32
    synthetic: torch.Tensor  # (m,) bool: False for an untouched real example
    columns: dict[str, torch.Tensor] = field(default_factory=dict)  # the synthesis method's, (m, ...) each

    def __len__(self) -> int:
        return int(self.source.shape[0])

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor by a flat name, in a fixed order (for digests and safetensors files)."""
        flat = {"source": self.source, "teacher_logits": self.teacher_logits, "synthetic": self.synthetic}
        flat.update({f"{_COLUMN_PREFIX}{k}": self.columns[k] for k in sorted(self.columns)})
        return flat

    @classmethod
    def from_tensors(cls, flat: dict[str, torch.Tensor]) -> SyntheticSet:
        columns = {k[len(_COLUMN_PREFIX):]: v for k, v in flat.items() if k.startswith(_COLUMN_PREFIX)}
        return cls(flat["source"], flat["teacher_logits"], flat["synthetic"], columns)

    def digest(self) -> str:
        """Content hash: equal on every rank, and between a resumed and an uninterrupted run."""
        h = hashlib.sha256()
        for t in self.tensors().values():
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    @classmethod
    def real(cls, indices, teacher_logits: torch.Tensor, method: SynthesisMethod,
             sizes: dict[str, int]) -> SyntheticSet:
        indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return cls(indices, teacher_logits[indices].float(), torch.zeros(len(indices), dtype=torch.bool),
                   method.real_columns(indices, sizes))

    @staticmethod
    def concat(a: SyntheticSet, b: SyntheticSet) -> SyntheticSet:
        tail = b.tensors()
        return SyntheticSet.from_tensors({k: torch.cat([v, tail[k]]) for k, v in a.tensors().items()})


def entry_item(real: dict[str, list], entries: SyntheticSet | SageTrainBuffer, method: SynthesisMethod,
               i: int) -> dict:
    """Entry `i` as a training item: its source example's tokens, teacher logits and the method's additions."""
    src = int(entries.source[i])
    item = {name: column[src] for name, column in real.items()}
    item["teacher_logits"] = entries.teacher_logits[i]
    item.update(method.item(real, entries.columns, i))
    return item


def entry_batch(real: dict[str, list], entries: SyntheticSet, method: SynthesisMethod, rows) -> dict:
    """Collated batch (on the CPU) of `entries[rows]`, ready for `method.materialise`."""
    return SageDataCollator()([entry_item(real, entries, method, i) for i in rows])


class SageTrainBuffer(Dataset):
    """A map-style dataset of fixed length whose entries are replaced in place between epochs."""

    def __init__(self, real_features: dict[str, list], labels: list | None, length: int, num_labels: int,
                 method: SynthesisMethod, sizes: dict[str, int]):
        if length < 1:
            raise ValueError(f"The SAGE training buffer needs at least one entry, got length={length}.")
        self.real = real_features  # column -> list of per-example token lists (input_ids, attention_mask, ...)
        self.labels = labels
        self.length = length
        self.method = method
        self.source = torch.zeros(length, dtype=torch.long).share_memory_()
        self.teacher_logits = torch.zeros(length, num_labels).share_memory_()
        self.synthetic = torch.zeros(length, dtype=torch.bool).share_memory_()
        self.columns = {name: col.allocate(length, sizes).share_memory_() for name, col in method.columns().items()}

    def __len__(self) -> int:
        return self.length

    def fill(self, entries: SyntheticSet) -> None:
        if len(entries) != self.length:
            raise ValueError(f"A round produced {len(entries)} entries for a buffer of length {self.length}.")
        if set(entries.columns) != set(self.columns):
            raise ValueError(f"The entries carry columns {sorted(entries.columns)} but the '{self.method.name}' "
                             f"synthesis stores {sorted(self.columns)}.")
        self.source.copy_(entries.source)
        self.teacher_logits.copy_(entries.teacher_logits)
        self.synthetic.copy_(entries.synthetic)
        for name, column in self.columns.items():
            column.copy_(entries.columns[name])

    def contents(self) -> SyntheticSet:
        return SyntheticSet(self.source.clone(), self.teacher_logits.clone(), self.synthetic.clone(),
                            {name: column.clone() for name, column in self.columns.items()})

    def __getitem__(self, i: int) -> dict:
        item = entry_item(self.real, self, self.method, i)
        src, synthetic = int(self.source[i]), bool(self.synthetic[i])
        # Example ids let tests (and users) see what a step trained on: the real index, or -(1 + slot) if synthetic.
        item["example_id"] = torch.tensor(-(1 + i) if synthetic else src)
        if self.labels is not None:
            item["labels"] = torch.tensor(-100 if synthetic else self.labels[src])
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

        buffer = self.buffer
        lengths = buffer.method.lengths(self.real_lengths, buffer.source, buffer.columns).tolist()
        return iter(get_length_grouped_indices(lengths, self.batch_size, generator=self.generator))
