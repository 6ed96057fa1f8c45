"""Publish a student as a *standard* transformers model: teacher input layer + student stack + head.

Users of the result need no sage-hf code: `AutoModelForSequenceClassification.from_pretrained(dir)` and
`pipeline("text-classification", model=dir)` load it like any other checkpoint of the teacher's family.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from .student import SageStudentForSequenceClassification
from .teacher import as_teacher

logger = logging.getLogger(__name__)


@torch.no_grad()
def export_student(
    student: SageStudentForSequenceClassification,
    teacher,
    output_dir: str | Path | None = None,
    tokenizer=None,
) -> PreTrainedModel:
    """Merge the frozen teacher input layer (and teacher layers below the interface) with the student.

    Returns a plain `XForSequenceClassification` whose logits on token ids equal the student's logits on the
    teacher's layer-1 vectors. With `output_dir`, it is saved (safetensors) together with `tokenizer`.
    """
    t = as_teacher(teacher, student.config.interface_layer)
    if student.config.hidden_size != t.width:
        raise ValueError(
            f"Student hidden size {student.config.hidden_size} differs from the teacher's layer-1 width {t.width}."
        )
    k = t.interface_layer
    config = copy.deepcopy(t.config)
    setattr(config, t.spec.num_layers_attr, k + student.config.num_layers)
    config.id2label = dict(student.config.id2label)
    config.label2id = dict(student.config.label2id)
    config.problem_type = student.config.problem_type
    config.architectures = None
    exported = AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa")

    # Teacher input layer and layers below the interface, then the student's layers on top, then its pooler/head.
    teacher_inputs, teacher_layers, _ = t.split_state_dict(t.model.state_dict())
    _, student_layers, student_rest = t.split_state_dict(student.backbone.state_dict())
    state = {
        **teacher_inputs,
        **t.layer_weights(teacher_layers, range(k)),
        **t.layer_weights(student_layers, sorted(student_layers), start=k),
        **student_rest,
    }
    missing, unexpected = exported.load_state_dict(state, strict=False)
    missing = [m for m in missing if m in dict(exported.named_parameters())]
    if missing or unexpected:
        raise RuntimeError(f"Export left weights unset {missing} or unused {unexpected}: please report this.")
    exported.to(device=student.device, dtype=student.dtype).eval()
    if output_dir is not None:
        exported.save_pretrained(output_dir, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(output_dir)
        logger.info("Exported standard %s student to %s", type(exported).__name__, output_dir)
    return exported
