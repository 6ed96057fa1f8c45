"""Batches that can mix token ids (real text) and precomputed layer-1 vectors (synthetic examples)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

_TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def _as_tensor(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    return torch.as_tensor(np.asarray(value))


@dataclass
class SageDataCollator:
    """Pads `input_ids`/`token_type_ids` (with the tokenizer's pad id), pads `inputs_embeds` with zeros, builds
    `attention_mask` where missing, and stacks every other field (labels, teacher_logits, example ids, ...).

    Dynamic padding: each batch is padded to its own longest example (times `pad_to_multiple_of`).
    """

    tokenizer: Any = None
    pad_to_multiple_of: int | None = None

    @property
    def pad_token_id(self) -> int:
        pad = getattr(self.tokenizer, "pad_token_id", None)
        return 0 if pad is None else int(pad)

    def _target_length(self, lengths: list[int]) -> int:
        n = max(lengths)
        m = self.pad_to_multiple_of
        return n if not m else ((n + m - 1) // m) * m

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("Cannot collate an empty batch.")
        first = features[0]
        batch: dict[str, torch.Tensor] = {}
        seq_key = "inputs_embeds" if "inputs_embeds" in first else "input_ids" if "input_ids" in first else None
        if seq_key is not None:
            # A second sequence ("<prefix>input_ids", e.g. an interpolation partner) is padded to the same length,
            # so the two can be mixed position by position.
            prefixes = ["", *sorted(k[: -len("input_ids")] for k in first if k.endswith("_input_ids"))]
            seqs = {p: [_as_tensor(f[p + "input_ids" if p else seq_key]) for f in features] for p in prefixes}
            length = self._target_length([len(s) for group in seqs.values() for s in group])
            for prefix, group in seqs.items():
                key = prefix + "input_ids" if prefix else seq_key
                pad_value = 0.0 if key == "inputs_embeds" else self.pad_token_id
                batch[key] = torch.stack([_pad(s, length, pad_value) for s in group])
                mask_key, types_key = prefix + "attention_mask", prefix + "token_type_ids"
                masks = [_as_tensor(f[mask_key]).long() if mask_key in f else torch.ones(len(s), dtype=torch.long)
                         for f, s in zip(features, group)]
                batch[mask_key] = torch.stack([_pad(m, length, 0) for m in masks])
                if types_key in first:
                    batch[types_key] = torch.stack([_pad(_as_tensor(f[types_key]), length, 0) for f in features])
        for key in first:
            if key in batch or key == "inputs_embeds" or key.endswith(_TOKEN_KEYS):
                continue
            name = "labels" if key in ("label", "label_ids") else key
            values = [f[key] for f in features]
            if isinstance(values[0], str):
                continue  # raw text columns cannot be tensors; the model never reads them
            batch[name] = torch.stack([_as_tensor(v) for v in values])
        return batch


def _pad(seq: torch.Tensor, length: int, value) -> torch.Tensor:
    if len(seq) == length:
        return seq
    pad_shape = (length - len(seq),) + tuple(seq.shape[1:])
    return torch.cat([seq, torch.full(pad_shape, value, dtype=seq.dtype)])
