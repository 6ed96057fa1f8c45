"""Batches that carry synthetic examples beside real ones (synthesis_mode='mix'), instead of in place of them.

In augment mode an epoch is n real + m synthetic entries at the usual batch size, so at a fixed step budget every
synthetic example takes the place of a real one: on MRPC default SAGE passes over the real pairs 3 times where
plain KD passes 6.3 times, and loses. Here an epoch is one pass over the real set in batches of the usual size, and
each batch also carries its share of the round's synthetic entries (about m / n per real example), as AD² and
MATE-KD train on clean and perturbed examples side by side: at the same optimiser steps the student sees every
real example as often as plain KD does, and the synthetic ones on top, at about (n + m) / n times the compute.
Measured on MRPC (3 seeds): no better than augment mode, and below KD (README, Results); hence not the default.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Sampler


class MixedBatchSampler(Sampler):
    """Batches of `batch_size` real buffer entries (`[0, n_real)`) plus an even share of the synthetic ones.

    Every entry is drawn once per epoch; the last real batch may be short, and synthetic shares differ by at most
    one. Orders come from torch's global generator (seeded by the Trainer, restored on resume, equal on every rank)
    and are re-drawn at each epoch start, after the round has refilled the buffer. Given `real_lengths` (the
    engine's token counts of the real examples), real and synthetic entries are each length-grouped, as
    transformers' LengthGroupedSampler does.
    """

    def __init__(self, buffer, n_real: int, batch_size: int, real_lengths: torch.Tensor | None = None):
        if not 0 < n_real <= len(buffer):
            raise ValueError(f"n_real must be in [1, {len(buffer)}], got {n_real}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.buffer = buffer
        self.n_real = n_real
        # Not `batch_size`: accelerate's BatchSamplerShard reads that name as every batch's length and, with
        # batches longer than it, shards them unevenly across ranks (one rank trains on while the other waits).
        self.real_batch_size = batch_size
        self.real_lengths = real_lengths

    def __len__(self) -> int:
        return math.ceil(self.n_real / self.real_batch_size)

    def _order(self, start: int, stop: int, group: int) -> list[int]:
        if stop <= start:
            return []
        if self.real_lengths is None:
            return (torch.randperm(stop - start) + start).tolist()
        from transformers.trainer_pt_utils import get_length_grouped_indices

        buffer = self.buffer
        lengths = buffer.method.lengths(self.real_lengths, buffer.source, buffer.columns)[start:stop].tolist()
        return [start + i for i in get_length_grouped_indices(lengths, max(group, 1))]

    def __iter__(self):
        n_batches = len(self)
        n_synthetic = len(self.buffer) - self.n_real
        size = self.real_batch_size
        real = self._order(0, self.n_real, size)
        synthetic = self._order(self.n_real, len(self.buffer), math.ceil(n_synthetic / n_batches))
        cuts = [round(j * n_synthetic / n_batches) for j in range(n_batches + 1)]
        for j in range(n_batches):
            yield real[j * size:(j + 1) * size] + synthetic[cuts[j]:cuts[j + 1]]
