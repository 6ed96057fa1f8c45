"""The headless student: a teacher-family encoder stack + pooler + head that reads layer-1 vectors.

The student wraps a standard `XForSequenceClassification` of the teacher's family whose input layer is a
pass-through. Keeping the family's own modules (rather than re-implementing layers) is what makes the export
to a plain transformers model a pure weight copy, and keeps masks, attention kernels and heads identical.
"""

from __future__ import annotations

import copy
import logging

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from .teacher import FAMILIES, Layer1Input, TeacherInterface, as_teacher, base_model_of, family_spec

logger = logging.getLogger(__name__)


class SageStudentConfig(PreTrainedConfig):
    """Config of a headless student.

    Args:
        backbone_config: the teacher-family config (as a dict) with the student's layer count.
        teacher_layers: teacher layer indices the student was initialised from (None: random init).
        interface_layer: the teacher layer whose output the student reads (0: the input layer).
    """

    model_type = "sage_student"

    def __init__(
        self,
        backbone_config: dict | PreTrainedConfig | None = None,
        teacher_layers: list[int] | None = None,
        interface_layer: int = 0,
        **kwargs,
    ):
        if isinstance(backbone_config, PreTrainedConfig):
            backbone_config = backbone_config.to_dict()
        self.backbone_config = backbone_config or {}
        self.teacher_layers = list(teacher_layers) if teacher_layers is not None else None
        self.interface_layer = interface_layer
        super().__init__(**kwargs)

    def backbone(self) -> PreTrainedConfig:
        """The family config, with this config's label space (the source of truth for labels)."""
        cfg = dict(self.backbone_config)
        model_type = cfg.pop("model_type")
        for drop in ("architectures", "transformers_version", "id2label", "label2id", "num_labels", "problem_type"):
            cfg.pop(drop, None)
        labels = {"id2label": dict(self.id2label), "label2id": dict(self.label2id), "problem_type": self.problem_type}
        return AutoConfig.for_model(model_type, **labels, **cfg)

    @property
    def hidden_size(self) -> int:
        return self.backbone().hidden_size

    @property
    def num_layers(self) -> int:
        bb = self.backbone()
        return getattr(bb, family_spec(bb).num_layers_attr)


def default_teacher_layers(num_teacher_layers: int, num_student_layers: int | None = None) -> list[int]:
    """Evenly spaced teacher layers; with half the depth this is DistilBERT's every-other-layer recipe."""
    n = num_student_layers if num_student_layers is not None else max(1, num_teacher_layers // 2)
    if not 1 <= n <= num_teacher_layers:
        raise ValueError(
            f"A student with {n} layers cannot be built from a teacher with {num_teacher_layers} layers: "
            f"choose 1..{num_teacher_layers}."
        )
    return [i * num_teacher_layers // n for i in range(n)]


def _headless(model: PreTrainedModel) -> PreTrainedModel:
    """Remove the input layer of a family model in place: its parameters would be dead weight."""
    base = base_model_of(model)
    for name in family_spec(model.config).input_modules:
        if hasattr(base, name):
            setattr(base, name, Layer1Input())
    return model


class SageStudentPreTrainedModel(PreTrainedModel):
    config_class = SageStudentConfig
    base_model_prefix = "backbone"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True

    def _init_weights(self, module):
        # The backbone is itself a PreTrainedModel that initialises its own weights.
        pass


class SageStudentForSequenceClassification(SageStudentPreTrainedModel):
    """Encoder layers + pooler + classification (or regression, num_labels=1) head; no embedding module."""

    def __init__(self, config: SageStudentConfig):
        super().__init__(config)
        backbone_config = config.backbone()
        backbone_config._attn_implementation = getattr(config, "_attn_implementation", None) or "sdpa"
        self.backbone = _headless(AutoModelForSequenceClassification.from_config(backbone_config))
        self.post_init()

    @property
    def spec(self):
        return FAMILIES[self.backbone.config.model_type]

    def get_input_embeddings(self):
        return None

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        out = self.backbone(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels, **kwargs)
        return SequenceClassifierOutput(
            loss=out.loss, logits=out.logits, hidden_states=out.hidden_states, attentions=out.attentions
        )

    # ---- construction from a teacher ----------------------------------------------------------------
    @classmethod
    def from_teacher(
        cls,
        teacher,
        num_layers: int | None = None,
        layers: list[int] | None = None,
        init: str = "teacher",
        interface_layer: int | None = None,
    ) -> SageStudentForSequenceClassification:
        """Build a student of the teacher's family and width.

        Args:
            num_layers: student depth (default: half the teacher layers after the interface).
            layers: explicit teacher layer indices to copy (overrides num_layers), e.g. [0, 2, 4].
            init: "teacher" copies the chosen layers, the pooler and the head (DistilBERT's recipe); "random".
            interface_layer: defaults to the teacher interface's.
        """
        if init not in ("teacher", "random"):
            raise ValueError(f"Unknown student init '{init}': use 'teacher' or 'random'.")
        t = as_teacher(teacher, interface_layer or 0)
        available = t.num_layers - t.interface_layer
        if layers is None:
            layers = [t.interface_layer + i for i in default_teacher_layers(available, num_layers)]
        else:
            layers = [int(i) for i in layers]
            if len(layers) > t.num_layers:
                raise ValueError(
                    f"A student with {len(layers)} layers cannot be built from a teacher with {t.num_layers} layers."
                )
            bad = [i for i in layers if not t.interface_layer <= i < t.num_layers]
            if bad:
                raise ValueError(
                    f"Student layer indices {bad} are out of range: the teacher has layers "
                    f"{t.interface_layer}..{t.num_layers - 1} after interface_layer={t.interface_layer}."
                )
        bb = copy.deepcopy(t.config)
        setattr(bb, t.spec.num_layers_attr, len(layers))
        if bb.model_type == "electra":
            bb.embedding_size = bb.hidden_size  # the student never projects: it reads hidden-size vectors
        config = SageStudentConfig(
            backbone_config=bb,
            teacher_layers=layers if init == "teacher" else None,
            interface_layer=t.interface_layer,
            id2label=dict(t.config.id2label),
            label2id=dict(t.config.label2id),
            problem_type=t.config.problem_type,
        )
        config._attn_implementation = t.config._attn_implementation
        student = cls(config).to(device=t.model.device, dtype=t.model.dtype)
        if init == "teacher":
            student.copy_from_teacher(t, layers)
        return student

    @torch.no_grad()
    def copy_from_teacher(self, teacher: TeacherInterface, layers: list[int]) -> None:
        """Copy the chosen teacher layers, and every non-input, non-layer weight (pooler, head)."""
        _, teacher_layers, rest = teacher.split_state_dict(teacher.model.state_dict())
        own = self.backbone.state_dict()
        new = {key: value for key, value in {**rest, **teacher.layer_weights(teacher_layers, layers)}.items()
               if key in own}
        missing = [k for k in own if k not in new]
        if missing:
            logger.info("Student weights not found in the teacher (kept at init): %s", missing)
        self.backbone.load_state_dict(new, strict=False)


def register_auto_classes() -> None:
    """Let `AutoConfig`/`AutoModelForSequenceClassification` load saved headless students."""
    try:
        AutoConfig.register(SageStudentConfig.model_type, SageStudentConfig)
    except ValueError:
        pass  # already registered
    try:
        AutoModel.register(SageStudentConfig, SageStudentForSequenceClassification)
    except ValueError:
        pass
    try:
        AutoModelForSequenceClassification.register(SageStudentConfig, SageStudentForSequenceClassification)
    except ValueError:
        pass


register_auto_classes()
