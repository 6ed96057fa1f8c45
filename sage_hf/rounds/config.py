"""`RoundConfig`: what a SAGE round reads, frozen once from the training arguments."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from ..maps.reducers import ReducerSettings


def native_bf16(device: torch.device | str) -> bool:
    """Whether `device` multiplies bfloat16 natively (a bf16 GPU, or a CPU with AMX tiles); else autocast is slow."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
        return bool(probe and probe())
    return False


@dataclass(frozen=True)
class RoundConfig:
    """The round's settings; `SageEngine` never sees the whole `TrainingArguments`.

    A round's difficulty (the per-example loss that picks anchors) is the soft-target loss alone,
    `difficulty_kd_loss` at `difficulty_temperature`: synthetic points have no gold labels, so the training loss's
    `alpha_kd`/`alpha_hard` weighting is not part of it.
    """

    reducer: ReducerSettings = field(default_factory=ReducerSettings)
    seed: int = 0
    teacher_batch_size: int = 64
    pooling: str = "mean"
    difficulty_kd_loss: str = "kl"
    difficulty_temperature: float = 2.0
    anchor_policy: str = "top"
    anchor_fraction: float = 0.2
    sample_neighbors: int = 10
    jitter: float = 0.1
    shift_scale: float = 1.0
    synthetic_count: int | None = None  # None: as many as real examples
    synthesis: str = "swap"
    synthesis_mode: str = "augment"
    regenerate: str = "every_epoch"
    synthesis_start_epoch: int = 0
    max_rounds: int = 10
    agreement_threshold: float = 0.99
    num_train_epochs: float = 3.0
    decode_examples: int = 0
    adversarial_steps: int = 3
    adversarial_radius: float = 0.1
    adversarial_through_teacher: bool = True
    swap_fraction: float = 0.3
    swap_candidates: int = 8
    swap_shared_words: bool = False
    candidates_per_anchor: int = 1
    candidate_choice: str = "hardest"
    score_pass: str = "auto"
    round_precision: str = "float32"  # resolved: never "auto"

    @classmethod
    def from_args(cls, args) -> RoundConfig:
        """From `SageTrainingArguments` (which validated the static ranges in `__post_init__`)."""
        reducer = ReducerSettings(name=args.reducer, n_components=args.n_components, n_neighbors=args.n_neighbors,
                                  metric=args.reducer_metric, seed=args.seed, inverse_backend=args.inversion_backend)
        return cls(reducer=reducer, seed=args.seed, teacher_batch_size=args.teacher_batch_size, pooling=args.pooling,
                   difficulty_kd_loss=args.kd_loss, difficulty_temperature=args.temperature,
                   anchor_policy=args.anchor_policy, anchor_fraction=args.anchor_fraction,
                   sample_neighbors=args.sample_neighbors, jitter=args.jitter, shift_scale=args.shift_scale,
                   synthetic_count=args.synthetic_count, synthesis=args.synthesis,
                   synthesis_mode=args.synthesis_mode, regenerate=args.regenerate,
                   synthesis_start_epoch=args.synthesis_start_epoch, max_rounds=args.max_rounds,
                   agreement_threshold=args.agreement_threshold, num_train_epochs=args.num_train_epochs,
                   decode_examples=args.decode_examples, adversarial_steps=args.adversarial_steps,
                   adversarial_radius=args.adversarial_radius,
                   adversarial_through_teacher=args.adversarial_through_teacher, swap_fraction=args.swap_fraction,
                   swap_candidates=args.swap_candidates, swap_shared_words=args.swap_shared_words,
                   candidates_per_anchor=args.candidates_per_anchor, candidate_choice=args.candidate_choice,
                   score_pass=args.score_pass,
                   round_precision=resolve_round_precision(args.round_precision, args.device))

    def inference_autocast(self, device: torch.device):
        """The context of a round's inference passes (labelling, scoring)."""
        if self.round_precision == "bfloat16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def difficulty_kwargs(self) -> dict:
        """Keyword arguments of `distillation_loss_per_example` for the difficulty: the soft-target loss alone."""
        return {"temperature": self.difficulty_temperature, "kind": self.difficulty_kd_loss, "alpha_kd": 1.0,
                "alpha_hard": 0.0}

    def check_data(self, n_real: int, width: int) -> None:
        """The constraints that depend on the data: the real example count and the layer-1 width."""
        if n_real == 0:
            raise ValueError("The training dataset is empty: SAGE needs real examples to start from.")
        if self.reducer.name == "umap" and self.reducer.n_neighbors >= n_real:
            raise ValueError(f"n_neighbors={self.reducer.n_neighbors} must be smaller than the number of training "
                             f"examples ({n_real}): lower --n_neighbors or use more data.")
        if self.reducer.name != "none" and self.reducer.n_components > width:
            raise ValueError(f"n_components={self.reducer.n_components} is larger than the layer-1 vector width "
                             f"({width}): lower --n_components.")
        if self.sample_neighbors >= n_real:
            raise ValueError(f"sample_neighbors={self.sample_neighbors} must be smaller than the number of training "
                             f"examples ({n_real}): lower --sample_neighbors.")


def resolve_round_precision(value: str, device: torch.device | str) -> str:
    if value == "auto":
        return "bfloat16" if native_bf16(device) else "float32"
    return value
