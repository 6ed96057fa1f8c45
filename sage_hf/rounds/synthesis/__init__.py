"""Synthesis methods, one file each, registered by name (as peft registers its tuners).

A new method subclasses `SynthesisMethod` (see `base.py`) and calls `register`; `SageTrainingArguments.synthesis`
then accepts its name.
"""

from __future__ import annotations

from .adversarial import AdversarialSynthesis
from .base import Column, ProposalContext, SynthesisMethod, layer1_of
from .interpolate import InterpolateSynthesis
from .repeat import RepeatSynthesis
from .shift import ShiftSynthesis
from .swap import SwapSynthesis

_METHODS: dict[str, SynthesisMethod] = {}


def register(method: type[SynthesisMethod]) -> type[SynthesisMethod]:
    """Register a method class under its `name` (usable as a decorator)."""
    _METHODS[method.name] = method()
    return method


def get_synthesis(name: str) -> SynthesisMethod:
    if name not in _METHODS:
        raise ValueError(f"Unknown synthesis '{name}': choose one of {', '.join(_METHODS)}.")
    return _METHODS[name]


def synthesis_methods() -> tuple[SynthesisMethod, ...]:
    return tuple(_METHODS.values())


register(ShiftSynthesis)
register(InterpolateSynthesis)
register(AdversarialSynthesis)
register(RepeatSynthesis)
register(SwapSynthesis)
SYNTHESIS_METHODS = tuple(_METHODS)  # the built-in names, for `Literal` choices

__all__ = [
    "SYNTHESIS_METHODS",
    "AdversarialSynthesis",
    "Column",
    "InterpolateSynthesis",
    "ProposalContext",
    "RepeatSynthesis",
    "ShiftSynthesis",
    "SwapSynthesis",
    "SynthesisMethod",
    "get_synthesis",
    "layer1_of",
    "register",
    "synthesis_methods",
]
