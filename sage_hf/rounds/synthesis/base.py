"""What a synthesis method is: how a sampled map point becomes a layer-1 sequence the teacher can label.

A synthetic entry stays lazy (its real source example plus a few per-entry columns), so the buffer grows with
N x hidden, not N x seq_len x hidden; `materialise` builds the layer-1 vectors of a collated batch when it is
trained on or labelled.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

if TYPE_CHECKING:
    from ..config import RoundConfig
    from ..sampling import SampledPoints


@dataclass(frozen=True)
class Column:
    """A per-entry column a method stores in the buffer: its per-entry shape, by size or by name.

    Named sizes come from the data: "hidden" is the layer-1 width, "tokens" the longest real sequence.
    """

    shape: tuple[int | str, ...]
    dtype: torch.dtype

    def allocate(self, length: int, sizes: dict[str, int]) -> torch.Tensor:
        shape = tuple(sizes[d] if isinstance(d, str) else d for d in self.shape)
        return torch.zeros((length, *shape), dtype=self.dtype)


@dataclass
class ProposalContext:
    """Everything a method may read to propose this round's entries (one per anchor)."""

    anchors: np.ndarray  # (m,) indices of the real source examples
    points: SampledPoints | None  # the sampled map points, one per anchor (None: the method uses no map)
    map: Any  # the fitted reducer: embedding_, inverse(Y), neighbors(Y, k); None when the method uses no map
    pooled: np.ndarray | None  # (n, hidden) pooled layer-1 vectors of the real examples; None as `map`
    teacher: Any
    student: Any
    features: dict[str, list]  # the tokenized real examples
    rng: np.random.Generator
    config: RoundConfig
    teacher_logits: torch.Tensor | None = None  # (n, labels) cached teacher logits of the real examples
    show_progress: bool = False


class SynthesisMethod(abc.ABC):
    """One synthesis method; register it with `sage_hf.rounds.synthesis.register`."""

    name: ClassVar[str]
    uses_map: ClassVar[bool]  # whether `propose` reads the sampled map points; if not, a round fits no map
    item_keys: ClassVar[tuple[str, ...]] = ()  # batch keys `item` adds (the trainer keeps these columns)
    labels_from_cache: ClassVar[bool] = False  # entries are unchanged real examples: their cached logits hold

    @abc.abstractmethod
    def columns(self) -> dict[str, Column]:
        """The per-entry columns this method stores in the buffer."""

    def real_columns(self, source: torch.Tensor, sizes: dict[str, int]) -> dict[str, torch.Tensor]:
        """Column values of untouched real entries (default: zeros)."""
        return {name: col.allocate(len(source), sizes) for name, col in self.columns().items()}

    @abc.abstractmethod
    def propose(self, ctx: ProposalContext) -> dict[str, torch.Tensor]:
        """This round's column values, one row per anchor."""

    @abc.abstractmethod
    def item(self, real: dict[str, list], columns: dict[str, torch.Tensor], i: int) -> dict:
        """What entry `i` adds to its training item, besides its source example's tokens."""

    def lengths(self, real_lengths: torch.Tensor, source: torch.Tensor, columns: dict[str, torch.Tensor]):
        """Token count of each entry once materialised (for length-grouped batches)."""
        return real_lengths[source]

    @abc.abstractmethod
    def materialise(self, teacher, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer-1 vectors and attention mask of a collated batch of real and synthetic entries."""


def layer1_of(teacher, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer-1 vectors and attention mask of a batch of real examples (token ids or precomputed vectors)."""
    mask = batch.get("attention_mask")
    if batch.get("inputs_embeds") is not None:
        vectors = batch["inputs_embeds"]
    elif batch.get("input_ids") is not None:
        vectors = teacher.layer1(batch["input_ids"], mask, batch.get("token_type_ids"))
    else:
        raise ValueError(f"A batch must carry 'input_ids' or 'inputs_embeds'; this one has {sorted(batch)}.")
    if mask is None:
        mask = torch.ones(vectors.shape[:2], dtype=torch.long, device=vectors.device)
    return vectors, mask
