"""The teacher's layer-1 interface: text -> teacher input layer -> layer-1 vectors -> logits.

SAGE synthesises training points in the space of the teacher's *layer-1 vectors* (the output of its input
layer), so both teacher and student must be runnable from that space. Calling `BertModel(inputs_embeds=...)`
is not the same thing: it re-adds position and token-type embeddings. Instead we run the model's own
forward with its input layer swapped for a pass-through, which keeps every family's mask handling, attention
implementation (sdpa / eager) and head exactly as the library wrote them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel


@dataclass(frozen=True)
class FamilySpec:
    """Where one architecture family keeps its input layer and its stack of transformer layers."""

    input_modules: tuple[str, ...]  # attribute names on the base model, run in order before the encoder stack
    layers_path: str  # dotted path from the base model to the nn.ModuleList of transformer layers
    num_layers_attr: str  # config attribute holding the layer count
    token_types: bool = True  # whether the input layer takes token_type_ids
    positions_after_padding: bool = False  # RoBERTa-likes number positions from pad_token_id + 1


_BERT_LIKE = FamilySpec(("embeddings",), "encoder.layer", "num_hidden_layers")
_ROBERTA_LIKE = FamilySpec(("embeddings",), "encoder.layer", "num_hidden_layers", positions_after_padding=True)

FAMILIES: dict[str, FamilySpec] = {
    "bert": _BERT_LIKE,
    "roberta": _ROBERTA_LIKE,
    "xlm-roberta": _ROBERTA_LIKE,
    "camembert": _ROBERTA_LIKE,
    # ELECTRA may project embedding_size -> hidden_size; the projection belongs to its input layer.
    "electra": FamilySpec(("embeddings", "embeddings_project"), "encoder.layer", "num_hidden_layers"),
    "distilbert": FamilySpec(("embeddings",), "transformer.layer", "n_layers", token_types=False),
}


class UnsupportedArchitectureError(ValueError):
    pass


def family_spec(config) -> FamilySpec:
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise UnsupportedArchitectureError(
            f"Unsupported teacher architecture '{model_type}': sage-hf supports {', '.join(sorted(FAMILIES))}."
        )
    return FAMILIES[model_type]


def position_offset(config) -> int:
    """Position id of the first token: `pad_token_id + 1` in RoBERTa-likes, 0 elsewhere (any model type)."""
    spec = FAMILIES.get(getattr(config, "model_type", None))
    return config.pad_token_id + 1 if spec is not None and spec.positions_after_padding else 0


def _get_path(module: nn.Module, dotted: str):
    for name in dotted.split("."):
        module = getattr(module, name)
    return module


def _set_path(module: nn.Module, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for name in parents:
        module = getattr(module, name)
    setattr(module, last, value)


class Layer1Input(nn.Module):
    """Stands in for an input layer: returns the layer-1 vectors it is handed, unchanged.

    Accepts every calling convention the supported families use (`inputs_embeds=` keyword in BERT-likes,
    positional second argument in DistilBERT, the single positional hidden state for ELECTRA's projection).
    """

    def forward(self, input_ids=None, inputs_embeds=None, *args, **kwargs):
        return input_ids if inputs_embeds is None else inputs_embeds


@contextlib.contextmanager
def swapped(module: nn.Module, replacements: dict[str, nn.Module | None]):
    """Temporarily replace sub-modules (dotted paths); `None` values are skipped."""
    saved = {}
    try:
        for path, new in replacements.items():
            if new is None:
                continue
            saved[path] = _get_path(module, path)
            _set_path(module, path, new)
        yield module
    finally:
        for path, old in saved.items():
            _set_path(module, path, old)


def base_model_of(model: PreTrainedModel) -> nn.Module:
    """The encoder inside a task model, or the model itself when it is already the bare encoder."""
    return getattr(model, model.base_model_prefix, model)


class TeacherInterface(nn.Module):
    """A frozen-able sequence-classification teacher, runnable from its layer-1 vectors.

    `interface_layer=k` moves the interface to the output of transformer layer k (k=0: the input layer).
    """

    def __init__(self, model: PreTrainedModel, interface_layer: int = 0):
        super().__init__()
        if isinstance(model, TeacherInterface):
            model = model.model
        self.spec = family_spec(model.config)
        self.model = model
        depth = self.num_layers
        if not 0 <= interface_layer <= depth:
            raise ValueError(
                f"interface_layer={interface_layer} is beyond the teacher's depth: it has {depth} transformer "
                f"layers, so interface_layer must be in 0..{depth}."
            )
        self.interface_layer = interface_layer
        self.train(model.training)  # a fresh nn.Module says "training"; keep the wrapped model's mode

    # ---- introspection -------------------------------------------------------------------------------
    @property
    def config(self):
        return self.model.config

    @property
    def base(self) -> nn.Module:
        return base_model_of(self.model)

    @property
    def layers(self) -> nn.ModuleList:
        return _get_path(self.base, self.spec.layers_path)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def width(self) -> int:
        """Width of a layer-1 vector (the student's hidden size must equal it)."""
        return self.model.config.hidden_size

    @property
    def num_labels(self) -> int:
        return self.model.config.num_labels

    @property
    def has_head(self) -> bool:
        return self.model is not self.base

    # ---- weights -------------------------------------------------------------------------------------
    def split_state_dict(self, state: dict[str, torch.Tensor]) -> tuple[dict, dict[int, dict], dict]:
        """Split a state dict of this family's task model: (input layer, {layer index: weights}, the rest).

        Students and exports are this family's model too, so their weights are moved between models by
        renumbering layers (`layer_weights`) rather than by matching names.
        """
        prefix = f"{self.model.base_model_prefix}."
        layers_prefix = f"{prefix}{self.spec.layers_path}."
        input_prefixes = tuple(f"{prefix}{name}." for name in self.spec.input_modules)
        inputs, layers, rest = {}, {}, {}
        for key, value in state.items():
            if key.startswith(input_prefixes):
                inputs[key] = value
            elif key.startswith(layers_prefix):
                index, name = key[len(layers_prefix):].split(".", 1)
                layers.setdefault(int(index), {})[name] = value
            else:
                rest[key] = value
        return inputs, layers, rest

    def layer_weights(self, layers: dict[int, dict], order: Iterable[int], start: int = 0) -> dict[str, torch.Tensor]:
        """State-dict entries putting layer `order[i]` of `layers` (from `split_state_dict`) at index `start + i`."""
        layers_prefix = f"{self.model.base_model_prefix}.{self.spec.layers_path}."
        return {
            f"{layers_prefix}{start + i}.{name}": value
            for i, index in enumerate(order)
            for name, value in layers[index].items()
        }

    # ---- the interface -------------------------------------------------------------------------------
    def _cut(self, start: int, stop: int | None):
        return {self.spec.layers_path: nn.ModuleList(list(self.layers)[start:stop])}

    def layer1(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """Layer-1 vectors, (batch, seq, hidden): the input layer's output (or layer k's with interface_layer=k)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self.spec.token_types:
            kwargs["token_type_ids"] = token_type_ids
        if self.interface_layer == 0:
            return self._input_layer(kwargs)
        with swapped(self.base, self._cut(0, self.interface_layer)):
            return self.base(**kwargs).last_hidden_state

    def _input_layer(self, kwargs) -> torch.Tensor:
        # The embedding module alone: no mask is needed and the (empty) encoder stack is skipped.
        emb = self.base.embeddings
        if self.spec.token_types:
            out = emb(input_ids=kwargs["input_ids"], token_type_ids=kwargs.get("token_type_ids"))
        else:
            out = emb(kwargs["input_ids"])
        project = getattr(self.base, "embeddings_project", None)
        return project(out) if project is not None else out

    def logits_from_layer1(self, vectors: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The rest of the teacher (transformer layers after the interface, pooler, head) on layer-1 vectors."""
        return self.from_layer1(vectors, attention_mask).logits

    def from_layer1(self, vectors: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    output_hidden_states: bool = False):
        """The task model's output on layer-1 vectors; `hidden_states[k]` is layer k after the interface (0: input)."""
        if not self.has_head:
            raise ValueError(
                f"The teacher ({type(self.model).__name__}) has no sequence-classification head, so it cannot give "
                "logits: load it with AutoModelForSequenceClassification (num_labels=...) and fine-tune it first."
            )
        if attention_mask is None:
            attention_mask = torch.ones(vectors.shape[:2], dtype=torch.long, device=vectors.device)
        replacements = {name: Layer1Input() for name in self.spec.input_modules if hasattr(self.base, name)}
        replacements.update(self._cut(self.interface_layer, None))
        with swapped(self.base, replacements):
            return self.model(inputs_embeds=vectors, attention_mask=attention_mask,
                              output_hidden_states=output_hidden_states)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """Teacher logits from token ids, through the layer-1 interface."""
        return self.logits_from_layer1(self.layer1(input_ids, attention_mask, token_type_ids), attention_mask)


def as_teacher(model, interface_layer: int = 0) -> TeacherInterface:
    """Wrap a model as a teacher; an existing interface is reused unless a different cut is asked for."""
    if isinstance(model, TeacherInterface):
        if interface_layer in (0, model.interface_layer):
            return model
        model = model.model
    return TeacherInterface(model, interface_layer)
