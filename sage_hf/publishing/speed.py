"""CPU inference speed of an exported student against its teacher: the figure a reader weighs against accuracy."""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import statistics
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from ..models.teacher import TeacherInterface, position_offset

logger = logging.getLogger(__name__)

def measure_cpu_speed(
    student_model,
    teacher_model,
    tokenizer,
    texts: Sequence[str],
    batch_sizes: Sequence[int] = (1, 32),
    repeats: int = 5,
    max_length: int | None = None,
    min_sample_seconds: float = 0.05,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """CPU examples/s of the exported student and the teacher on the same tokenized batches.

    Runs of the two models alternate (and swap order every repeat) so that load from other processes hits both
    alike, and medians ignore one-off stalls. Tokenization is done once per batch size and not timed: it is the
    same for both models. A timed sample repeats the forward until it lasts about `min_sample_seconds`, since
    single millisecond-scale calls are mostly timer and scheduler noise. `num_threads` pins torch's intra-op
    threads for the measurement (on a shared machine, 1 thread is the least disturbed by other jobs); models are
    moved to the CPU for the measurement and put back afterwards.
    Returns {"student": {bs: ex/s}, "teacher": {bs: ex/s}, "speedup": {bs: student/teacher}, "seq_len": {bs: n},
    "threads": torch threads, "repeats": repeats}.
    """
    if not texts:
        raise ValueError("measure_cpu_speed needs at least one text.")
    if repeats < 1 or not batch_sizes or any(bs < 1 for bs in batch_sizes):
        raise ValueError(f"repeats and batch sizes must be >= 1, got {repeats} and {tuple(batch_sizes)}.")
    models = {"student": _unwrap(student_model), "teacher": _unwrap(teacher_model)}
    models = {k: m.model if isinstance(m, TeacherInterface) else m for k, m in models.items()}
    for name, m in models.items():
        if "input_ids" not in inspect.signature(m.forward).parameters:
            raise ValueError(f"The {name} ({type(m).__name__}) does not read token ids: time the exported student "
                             "(sage_hf.export_student), which is what users run.")
    result: dict[str, Any] = {"student": {}, "teacher": {}, "speedup": {}, "seq_len": {},
                              "threads": num_threads or torch.get_num_threads(), "repeats": repeats}
    with _on_cpu_eval(models.values()), _torch_threads(num_threads):
        limit = max_length or _max_length(tokenizer, models["teacher"])
        for bs in batch_sizes:
            batch = [texts[i % len(texts)] for i in range(bs)]
            enc = tokenizer(batch, padding=True, truncation=True, max_length=limit, return_tensors="pt")
            inputs = {name: _accepted(m, enc) for name, m in models.items()}
            times: dict[str, list[float]] = {name: [] for name in models}
            calls: dict[str, int] = {}
            with torch.inference_mode():
                for name, m in models.items():  # warm-up: first calls pay for allocation and kernel selection
                    m(**inputs[name])
                    start = time.perf_counter()
                    m(**inputs[name])
                    calls[name] = max(1, math.ceil(min_sample_seconds / max(time.perf_counter() - start, 1e-6)))
                for r in range(repeats):
                    for name in (list(models) if r % 2 == 0 else list(reversed(models))):
                        start = time.perf_counter()
                        for _ in range(calls[name]):
                            models[name](**inputs[name])
                        times[name].append((time.perf_counter() - start) / calls[name])
            for name in models:
                result[name][bs] = bs / statistics.median(times[name])
            result["speedup"][bs] = result["student"][bs] / result["teacher"][bs]
            result["seq_len"][bs] = int(enc["input_ids"].shape[1])
    logger.info("CPU speed-up of the student over the teacher: %s",
                ", ".join(f"batch {bs}: {s:.2f}x" for bs, s in result["speedup"].items()))
    return result


def _max_length(tokenizer, model) -> int:
    positions = getattr(model.config, "max_position_embeddings", 512) - position_offset(model.config)
    return min(int(getattr(tokenizer, "model_max_length", positions) or positions), int(positions))


def _accepted(model, enc) -> dict[str, torch.Tensor]:
    params = inspect.signature(model.forward).parameters
    return {k: v for k, v in enc.items() if k in params}


@contextlib.contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    saved = torch.get_num_threads()
    try:
        if num_threads:
            torch.set_num_threads(num_threads)
        yield
    finally:
        torch.set_num_threads(saved)


@contextlib.contextmanager
def _on_cpu_eval(models) -> Iterator[None]:
    models = list(models)
    saved = [(m, next(m.parameters()).device, m.training) for m in models]
    try:
        for m in models:
            m.to("cpu").eval()
        yield
    finally:
        for m, device, training in saved:
            m.to(device).train(training)


def _unwrap(model):
    """The model inside accelerate / DDP wrappers."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model
