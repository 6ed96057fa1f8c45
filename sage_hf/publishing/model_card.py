"""Model cards for exported SAGE students, built like setfit's card pipeline (card data -> Jinja template).

A distilled student is only worth publishing with the facts a reader needs to trust it: how much smaller and
faster it is than its teacher (measured, not assumed), what SAGE did (settings, rounds, why it stopped, what the
synthetic examples look like) and how it scores. `build_card_data` collects these from a finished `SageTrainer`;
`render_model_card` fills the template `model_cards/sage_student.md` (shipped as `sage_hf.model_cards`) and
writes `README.md` and its pictures next to the exported model.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib.resources
import inspect
import logging
import math
import os
import platform
import re
import shutil
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..models.export import export_student
from ..models.teacher import TeacherInterface

logger = logging.getLogger(__name__)

TEMPLATE_NAME = "sage_student.md"
TRAINING_CURVE = "training_curve.png"
LOSS_MAP = "loss_map.png"
BASE_TAGS = ("sage", "knowledge-distillation", "generated_from_trainer")

# The paper text carries no author block; the authors are those of the arXiv listing of 2508.14783.
CITATION = """@misc{polat2025sage,
  title         = {Synthetic Adaptive Guided Embeddings ({SAGE}): A Novel Knowledge Distillation Method},
  author        = {Polat, Suleyman Olcay and Nemkova, Poli A. and Albert, Mark V.},
  year          = {2025},
  eprint        = {2508.14783},
  archivePrefix = {arXiv},
  primaryClass  = {cs.LG},
  url           = {https://arxiv.org/abs/2508.14783}
}"""

# Keys of a `trainer.evaluate()` dict that describe the run, not the model.
_HOUSEKEEPING = {"loss", "runtime", "samples_per_second", "steps_per_second", "epoch", "model_preparation_time"}
# Teacher-agreement numbers are shown in the card but kept out of model-index: they compare the student with
# its own teacher, not with other models on the task.
_NOT_TASK_METRICS = {"agreement", "teacher_mse"}
_PRETTY = {"accuracy": "Accuracy", "f1": "F1", "matthews_correlation": "Matthews correlation",
           "pearson": "Pearson", "spearmanr": "Spearman", "agreement": "Agreement with teacher",
           "teacher_mse": "MSE to teacher logits", "precision": "Precision", "recall": "Recall"}
# An HF access token: "hf_" and 30+ letters/digits. Redacted from any rendered card, whatever put it there.
_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{30,}")

_SAGE_FIELDS = ("reducer", "n_components", "n_neighbors", "reducer_metric", "pooling", "anchor_policy",
                "anchor_fraction", "sample_neighbors", "jitter", "shift_scale", "synthetic_count", "synthesis_mode",
                "regenerate", "inversion_backend", "agreement_threshold", "max_rounds", "interface_layer")
_DISTILL_FIELDS = ("temperature", "kd_loss", "alpha_kd", "alpha_hard")
_TRAIN_FIELDS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "weight_decay", "lr_scheduler_type", "warmup_steps", "optim",
                 "seed", "bf16", "fp16")


@dataclass
class SageModelCardData:
    """Everything the card shows, gathered once so a card can be re-rendered (or edited) without the trainer."""

    model_name: str
    task_name: str
    teacher_name: str
    base_model: str | None = None  # Hub id of the teacher; None when it was loaded from a local folder
    model_id: str | None = None
    dataset_id: str | None = None
    dataset_name: str | None = None
    dataset_config: str | None = None
    dataset_split: str = "validation"
    language: str | list[str] | None = None
    license: str | None = None
    tags: list[str] = field(default_factory=list)
    labels: dict[int, str] = field(default_factory=dict)
    architecture: str = ""
    teacher_params: int = 0
    student_params: int = 0
    teacher_layers: int = 0
    student_layers: int = 0  # of the exported model: teacher layers below the interface + student layers
    interface_layer: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    teacher_metrics: dict[str, float] = field(default_factory=dict)
    subsampled: str | None = None
    speed: dict | None = None
    sage: bool = True
    sage_settings: list[tuple[str, Any, str]] = field(default_factory=list)  # (name, value, why it matters)
    distillation_settings: list[tuple[str, Any, str]] = field(default_factory=list)
    training_settings: list[tuple[str, Any, str]] = field(default_factory=list)
    warmup: dict | None = None
    rounds_run: int = 0
    stop_reason: str | None = None
    final_agreement: float | None = None
    rounds: list[dict] = field(default_factory=list)
    decoded_examples: list[str] = field(default_factory=list)
    log_history: list[dict] = field(default_factory=list)
    loss_map_source: str | None = None
    intended_use: str | None = None
    limitations: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    citation: str = CITATION


# ---- card data from a trainer -------------------------------------------------------------------------
def build_card_data(
    trainer,
    *,
    task_name: str,
    dataset_id: str | None,
    dataset_name: str | None,
    metrics: dict[str, float],
    teacher_metrics: dict[str, float] | None = None,
    subsampled: str | None = None,
    speed: dict | None = None,
    model_id: str | None = None,
    model_name: str | None = None,
    dataset_config: str | None = None,
    dataset_split: str = "validation",
    license: str | None = None,
    language: str | list[str] | None = None,
    base_model: str | None = None,
    student_model=None,
    intended_use: str | None = None,
    extra_tags: Sequence[str] = (),
    max_decoded: int = 3,
) -> SageModelCardData:
    """Card data from a finished `SageTrainer` run.

    `metrics` / `teacher_metrics` may be `trainer.evaluate()` dicts as they are ('eval_' prefixes and run
    statistics are dropped). `student_model` is the exported student if you already have it; otherwise it is
    exported here, because the published model (teacher input layer + student layers) is what readers download
    and what the parameter count must describe. `speed` is `measure_cpu_speed(...)`'s result.
    """
    args = trainer.args
    teacher = _unwrap(trainer.accelerator.unwrap_model(trainer.teacher))
    student = trainer.accelerator.unwrap_model(trainer.model)
    exported = student_model if student_model is not None else export_student(student, teacher)
    engine = trainer.sage_engine

    name_or_path = getattr(teacher.config, "_name_or_path", "") or ""
    if base_model is None:
        base_model = name_or_path if _looks_like_hub_id(name_or_path) else None
        if name_or_path and base_model is None:
            logger.warning("The teacher was loaded from the local folder %s: the card names no base_model (pass "
                           "base_model='owner/name' to link the teacher's Hub repo).", name_or_path)
    if base_model is None and name_or_path and Path(name_or_path).resolve() == _offline_default_path():
        base_model = "sentence-transformers/all-MiniLM-L6-v2"  # what the packaged offline teacher is a copy of
    teacher_name = base_model or (Path(name_or_path).name if name_or_path else type(teacher.model).__name__)
    model_id = model_id or getattr(args, "hub_model_id", None)
    if model_name is None:
        model_name = model_id.split("/")[-1] if model_id else f"{teacher_name.split('/')[-1]}-sage-{task_name}"

    tags = list(dict.fromkeys([*BASE_TAGS, task_name, *extra_tags]))
    spec_attr = teacher.spec.num_layers_attr
    clean = _clean_metrics(metrics)
    history = copy.deepcopy(engine.history) if engine is not None else []
    sage_rows = _settings_rows(args, _SAGE_FIELDS)
    if engine is not None:  # the resolved count, not the "None = as many as real examples" default
        sage_rows = [(n, engine.synthetic_count if n == "synthetic_count" else v, h) for n, v, h in sage_rows]
    log_history = copy.deepcopy(list(trainer.state.log_history))
    agreements = [h["sage/agreement"] for h in log_history if "sage/agreement" in h]

    data = SageModelCardData(
        model_name=model_name,
        task_name=task_name,
        teacher_name=teacher_name,
        base_model=base_model,
        model_id=model_id,
        dataset_id=dataset_id,
        dataset_name=dataset_name,
        dataset_config=dataset_config,
        dataset_split=dataset_split,
        language=language,
        license=license,
        tags=tags,
        labels={int(k): str(v) for k, v in exported.config.id2label.items()},
        architecture=type(exported).__name__,
        teacher_params=_count_parameters(teacher.model),
        student_params=_count_parameters(exported),
        teacher_layers=teacher.num_layers,
        student_layers=int(getattr(exported.config, spec_attr)),
        interface_layer=teacher.interface_layer,
        metrics=clean,
        teacher_metrics=_clean_metrics(teacher_metrics or {}),
        subsampled=subsampled,
        speed=copy.deepcopy(speed),
        sage=engine is not None,
        sage_settings=sage_rows if engine is not None else [],
        distillation_settings=_settings_rows(args, _DISTILL_FIELDS),
        training_settings=[r for r in _settings_rows(args, _TRAIN_FIELDS) if not _is_default_off(r[0], r[1])],
        warmup=_warmup_summary(trainer),
        rounds_run=engine.round if engine is not None else 0,
        stop_reason=engine.stop_reason if engine is not None else "plain logit distillation (sage=False): no rounds",
        final_agreement=float(agreements[-1]) if agreements else None,
        rounds=[_round_row(h) for h in history],
        decoded_examples=_last_decoded(history, max_decoded),
        log_history=log_history,
        loss_map_source=_loss_map_source(args.output_dir, engine),
        intended_use=intended_use,
        versions=_versions(),
    )
    data.limitations = _limitations(data, args)
    return _scrub(data, [getattr(args, "hub_token", None)])


def _unwrap(model):
    """The `TeacherInterface` (or plain model) inside accelerate / DDP wrappers."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


def _offline_default_path() -> Path | None:
    try:
        from ..models.offline import default_teacher_path

        return default_teacher_path().resolve()
    except (ModuleNotFoundError, FileNotFoundError):
        return None


def _looks_like_hub_id(name: str) -> bool:
    """'bert-base-uncased' or 'owner/name', and not a folder on this machine (paths would leak into metadata)."""
    if not name or os.path.exists(name) or name.startswith((".", "/", "~")):
        return False
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?", name) is not None


def _count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # shared (tied) tensors are counted once


def _clean_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in metrics.items():
        short = re.sub(r"^(eval|test|predict)_", "", key)
        if short in _HOUSEKEEPING or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[short] = float(value)
    return out


def _settings_rows(args, names: Sequence[str]) -> list[tuple[str, Any, str]]:
    fields = {f.name: f for f in dataclasses.fields(args)}
    rows = []
    for name in names:
        if name in fields:
            rows.append((name, getattr(args, name), fields[name].metadata.get("help", "")))
    return rows


def _is_default_off(name: str, value) -> bool:
    return (name in ("bf16", "fp16") and not value) or (name == "max_steps" and value is not None and value <= 0) \
        or (name == "warmup_steps" and not value)


def _warmup_summary(trainer) -> dict | None:
    if not getattr(trainer, "_warmed_up", False):
        return None
    args = trainer.args
    source = args.warmup_source or ""
    # A local path says nothing to a reader and exposes this machine's layout: keep its last part only.
    shown = Path(source).name if os.path.exists(source) else source
    return {"source": shown, "epochs": args.warmup_epochs, **getattr(trainer, "warmup_metrics", {})}


def _round_row(h: dict) -> dict:
    return {"round": h["round"], "epoch": h["epoch"], "agreement": h["agreement"], "mean_loss": h["mean_loss"],
            "anchors_mean_loss": h.get("anchors_mean_loss"), "synthetic_count": h["synthetic_count"],
            "seconds": float(sum(h.get("seconds", {}).values())), "anchor_fallback": bool(h.get("anchor_fallback"))}


def _last_decoded(history: list[dict], count: int) -> list[str]:
    for h in reversed(history):
        if h.get("decoded"):
            return list(h["decoded"][:count])
    return []


def _loss_map_source(output_dir: str, engine) -> str | None:
    if engine is None or engine.round == 0:
        return None
    folder = Path(output_dir) / "sage_rounds"
    path = folder / f"round_{engine.round:02d}.png"
    if path.is_file():
        return str(path)
    found = sorted(folder.glob("round_*.png"))
    return str(found[-1]) if found else None


def _versions() -> dict[str, str]:
    import huggingface_hub
    import transformers

    from .. import __version__

    versions = {"sage-hf": __version__, "Transformers": transformers.__version__, "PyTorch": torch.__version__,
                "huggingface_hub": huggingface_hub.__version__, "Python": platform.python_version()}
    with contextlib.suppress(ImportError):
        import datasets

        versions["Datasets"] = datasets.__version__
    return versions


def _limitations(data: SageModelCardData, args) -> list[str]:
    items = [
        f"The student learned to imitate its teacher ({data.teacher_name}), not the gold labels"
        + ("" if getattr(args, "alpha_hard", 0) == 0 else " alone")
        + ": it inherits the teacher's errors and biases and is unlikely to exceed it.",
        f"It was distilled on {data.dataset_name or 'the task data'} only; expect weaker results on text unlike it.",
    ]
    if data.sage:
        items.append("SAGE's synthetic examples are shifts of real examples' input-layer vectors in directions found "
                     "on a low-dimensional loss map; they are not guaranteed to correspond to meaningful text"
                     + (" (the decoded examples above show how some read)." if data.decoded_examples else "."))
    threshold = getattr(args, "agreement_threshold", None)
    if data.sage and data.final_agreement is not None and threshold is not None and data.final_agreement < threshold:
        items.append(f"Training ended with {data.final_agreement:.2%} agreement with the teacher on the training set, "
                     f"below the {threshold:.2%} stop threshold.")
    if any(r["anchor_fallback"] for r in data.rounds):
        items.append("In some rounds the losses could not rank anchors, and anchors were drawn uniformly instead.")
    if data.subsampled:
        items.append(f"Results come from a subsample ({data.subsampled}); they carry more sampling noise than a "
                     "full evaluation.")
    if data.speed:
        items.append("Speed was measured once on the training machine's CPU; other hardware, thread counts and "
                     "sequence lengths give other numbers.")
    return items


def _scrub(obj, secrets: Sequence[str | None]):
    """Replace known secrets anywhere in the card data, so no later edit or render can publish them."""
    secrets = [s for s in secrets if s]
    if not secrets:
        return obj

    def clean(value):
        if isinstance(value, str):
            for s in secrets:
                value = value.replace(s, "<redacted>")
            return value
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, tuple):
            return tuple(clean(v) for v in value)
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        return value

    return dataclasses.replace(obj, **{f.name: clean(getattr(obj, f.name)) for f in dataclasses.fields(obj)})


# ---- measured speed ---------------------------------------------------------------------------------
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
    positions = getattr(model.config, "max_position_embeddings", 512)
    if getattr(model.config, "model_type", None) in ("roberta", "xlm-roberta", "camembert"):
        positions -= getattr(model.config, "pad_token_id", 1) + 1  # RoBERTa positions start after padding
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


# ---- rendering -------------------------------------------------------------------------------------
def render_model_card(card_data: SageModelCardData, output_dir: str | Path,
                      template_path: str | Path | None = None):
    """Write README.md, training_curve.png and loss_map.png into `output_dir`; returns the `ModelCard`.

    The metadata (base_model, datasets, tags, model-index, ...) is built by huggingface_hub itself, so the Hub
    reads it as it reads any card; pictures are referenced relatively, so the folder can be pushed as it is.
    """
    from huggingface_hub import ModelCard, ModelCardData

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    curve = plot_training_curve(card_data.log_history, out / TRAINING_CURVE,
                                title=f"{card_data.model_name}: training curve")
    loss_map = None
    if card_data.loss_map_source and Path(card_data.loss_map_source).is_file():
        shutil.copyfile(card_data.loss_map_source, out / LOSS_MAP)
        loss_map = LOSS_MAP

    eval_results = _eval_results(card_data)
    metadata = ModelCardData(
        base_model=card_data.base_model,
        datasets=[card_data.dataset_id] if card_data.dataset_id else None,
        language=card_data.language,
        license=card_data.license,
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=list(card_data.tags),
        metrics=[r.metric_type for r in eval_results] or None,
        model_name=card_data.model_name,
        eval_results=eval_results or None,
    )
    context = _template_context(card_data, training_curve=curve.name if curve else None, loss_map=loss_map)
    with _template(template_path) as path:
        card = ModelCard.from_template(card_data=metadata, template_path=str(path), **context)
    text, hits = _TOKEN_RE.subn("<redacted>", str(card))
    if hits:
        logger.warning("Redacted %d access-token-like string(s) from the model card.", hits)
        card = ModelCard(text)
    (out / "README.md").write_text(str(card), encoding="utf-8")
    logger.info("Wrote the model card to %s", out / "README.md")
    return card


@contextlib.contextmanager
def _template(template_path: str | Path | None) -> Iterator[Path]:
    if template_path is not None:
        yield Path(template_path)
        return
    resource = importlib.resources.files("sage_hf.publishing").joinpath("templates", TEMPLATE_NAME)
    with importlib.resources.as_file(resource) as path:
        yield path


def _eval_results(data: SageModelCardData) -> list:
    from huggingface_hub import EvalResult

    if not data.dataset_id:
        if data.metrics:
            logger.warning("No dataset_id: the results are shown in the card but not as model-index metadata.")
        return []
    return [EvalResult(task_type="text-classification", task_name="Text Classification",
                       dataset_type=data.dataset_id, dataset_name=data.dataset_name or data.dataset_id,
                       dataset_config=data.dataset_config, dataset_split=data.dataset_split,
                       metric_type=name, metric_name=_PRETTY.get(name, name), metric_value=value)
            for name, value in data.metrics.items() if name not in _NOT_TASK_METRICS]


def _template_context(data: SageModelCardData, training_curve: str | None, loss_map: str | None) -> dict[str, Any]:
    """Card data plus display-ready strings and rows, so the template holds layout, not arithmetic."""
    ctx = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
    names = list(dict.fromkeys([*data.metrics, *data.teacher_metrics]))
    names.sort(key=lambda n: n in _NOT_TASK_METRICS)  # task metrics first, agreement with the teacher last
    ctx.update(
        training_curve=training_curve,
        loss_map=loss_map,
        student_params_str=_human(data.student_params),
        teacher_params_str=_human(data.teacher_params),
        size_ratio=(data.teacher_params / data.student_params) if data.student_params else None,
        label_list=", ".join(f"`{v}`" for _, v in sorted(data.labels.items())),
        result_rows=[{"name": _PRETTY.get(n, n), "student": _fmt(data.metrics.get(n)),
                      "teacher": _fmt(data.teacher_metrics.get(n))} for n in names],
        speed_rows=_speed_rows(data.speed),
        sage_rows=[_setting_row(r) for r in data.sage_settings],
        distillation_rows=[_setting_row(r) for r in data.distillation_settings],
        training_rows=[_setting_row(r) for r in data.training_settings],
        round_rows=[{**r, "epoch": f"{r['epoch']:.2f}", "agreement": f"{r['agreement']:.4f}",
                     "mean_loss": f"{r['mean_loss']:.4f}", "anchors_mean_loss": _fmt(r["anchors_mean_loss"]),
                     "seconds": f"{r['seconds']:.1f}"} for r in data.rounds],
        final_agreement_str=_fmt(data.final_agreement),
        usage_model=data.model_id or "path/to/this/folder",
    )
    return ctx


def _speed_rows(speed: dict | None) -> list[dict[str, str]]:
    if not speed:
        return []
    return [{"batch_size": str(bs), "seq_len": str(speed.get("seq_len", {}).get(bs, "")),
             "student": f"{speed['student'][bs]:,.1f}", "teacher": f"{speed['teacher'][bs]:,.1f}",
             "speedup": f"{ratio:.2f}x"} for bs, ratio in speed["speedup"].items()]


def _setting_row(row: tuple[str, Any, str]) -> dict[str, str]:
    name, value, help_text = row
    return {"name": name, "value": _md_cell(value), "help": _md_cell(help_text)}


def _md_cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


# ---- training curve -------------------------------------------------------------------------------
def plot_training_curve(log_history: list[dict], path: str | Path, title: str = "") -> Path | None:
    """Loss (left axis) and eval metrics / teacher agreement (right axis) against epoch; None if nothing was logged."""
    train = [(h["epoch"], h["loss"]) for h in log_history if "loss" in h and "epoch" in h]
    eval_loss = [(h["epoch"], h["eval_loss"]) for h in log_history if "eval_loss" in h and "epoch" in h]
    scores: dict[str, list[tuple[float, float]]] = {}
    for h in log_history:
        if "epoch" not in h:
            continue
        for key, value in h.items():
            short = key[len("eval_"):] if key.startswith("eval_") else None
            if short and short not in _HOUSEKEEPING and isinstance(value, (int, float)):
                scores.setdefault(f"eval {_PRETTY.get(short, short).lower()}", []).append((h["epoch"], value))
        if "sage/agreement" in h:
            scores.setdefault("agreement with teacher (train set)", []).append((h["epoch"], h["sage/agreement"]))
    if not (train or eval_loss or scores):
        logger.warning("No losses or metrics in the log history: the card has no training curve.")
        return None

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    lines = []
    if train:
        lines += ax.plot(*zip(*train), marker="o", ms=3, color="tab:blue", label="training loss")
    if eval_loss:
        lines += ax.plot(*zip(*eval_loss), marker="s", ms=3, ls="--", color="tab:cyan", label="eval loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("distillation loss")
    if scores:
        right = ax.twinx()
        for i, (label, points) in enumerate(sorted(scores.items())):
            lines += right.plot(*zip(*points), marker="^", ms=3, color=f"C{(i + 1) % 10}", label=label)
        right.set_ylabel("metric")
    # Below the axes: inside, it would hide the points of one of the two scales.
    ax.legend(lines, [ln.get_label() for ln in lines], loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2,
              fontsize=7, frameon=False)
    ax.set_title(title or "Training curve")
    ax.grid(alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def write_student_card(trainer, folder: str | Path, *, task_name: str | None = None, dataset_id: str | None = None,
                       dataset_name: str | None = None, metrics: dict[str, float] | None = None,
                       speed_texts: Sequence[str] | None = None, **kwargs) -> "huggingface_hub.ModelCard":
    """Card for the exported student in `folder` (README.md + pictures), from a finished SageTrainer run.

    Without `metrics`, the run's last evaluation is used; with `speed_texts`, CPU inference speed of the exported
    student vs the teacher is measured on them and reported.
    """
    if metrics is None:
        evals = [h for h in trainer.state.log_history if any(k.startswith("eval_") for k in h)]
        metrics = evals[-1] if evals else {}
    student_model = kwargs.pop("student_model", None)
    speed = kwargs.pop("speed", None)
    if speed is None and speed_texts and student_model is not None and trainer.processing_class is not None:
        speed = measure_cpu_speed(student_model, trainer.teacher.model, trainer.processing_class, list(speed_texts))
    data = build_card_data(trainer, task_name=task_name or "text-classification", dataset_id=dataset_id,
                           dataset_name=dataset_name, metrics=metrics, speed=speed, student_model=student_model,
                           model_id=kwargs.pop("model_id", None) or trainer.args.hub_model_id, **kwargs)
    return render_model_card(data, folder)
