"""`SageTrainingArguments`: `TrainingArguments` plus what distillation needs."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from .losses import KD_LOSSES


@dataclass
class SageTrainingArguments(TrainingArguments):
    """Every field can be set from the command line through `HfArgumentParser`, like any `TrainingArguments`."""

    temperature: float = field(
        default=2.0,
        metadata={"help": "Softmax temperature T of the soft-target loss (the KL loss is multiplied by T^2)."},
    )
    alpha_kd: float = field(
        default=1.0, metadata={"help": "Weight of the distillation (soft-target) loss against the teacher's logits."}
    )
    alpha_hard: float = field(
        default=0.0,
        metadata={"help": "Weight of the gold-label loss (cross-entropy, or MSE for regression) where labels exist."},
    )
    kd_loss: str = field(
        default="kl",
        metadata={"help": "Soft-target loss: 'kl' (KL divergence with temperature, times T^2) or 'mse' on logits."},
    )
    interface_layer: int = field(
        default=0,
        metadata={
            "help": "Where teacher and student meet: 0 = the teacher's input (embedding) layer output (the paper); "
            "k = the output of teacher transformer layer k."
        },
    )
    teacher_batch_size: int = field(
        default=64, metadata={"help": "Batch size of teacher-only passes (caching logits, scoring, labelling)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        if self.alpha_kd < 0 or self.alpha_hard < 0:
            raise ValueError(f"alpha_kd and alpha_hard must be >= 0, got {self.alpha_kd} and {self.alpha_hard}.")
        if self.alpha_kd == 0 and self.alpha_hard == 0:
            raise ValueError("alpha_kd and alpha_hard are both 0: the student would have no loss to learn from.")
        if self.kd_loss not in KD_LOSSES:
            raise ValueError(f"Unknown kd_loss '{self.kd_loss}': choose one of {', '.join(KD_LOSSES)}.")
        if self.interface_layer < 0:
            raise ValueError(f"interface_layer must be >= 0, got {self.interface_layer}.")
        if self.teacher_batch_size < 1:
            raise ValueError(f"teacher_batch_size must be >= 1, got {self.teacher_batch_size}.")
