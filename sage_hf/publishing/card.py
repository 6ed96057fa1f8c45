"""The model card of an exported student: card data -> the package's Jinja template -> README.md + pictures.

A distilled student is only worth publishing with the facts a reader needs to trust it: which teacher it imitates,
how much smaller and faster it is (measured, not assumed), what SAGE did and how it scores beside its teacher.
`build_card_data` completes what `ModelCardCallback` recorded during training; `render_model_card` fills
`templates/sage_student.md` (or your own template, `template_path=`) with `huggingface_hub.ModelCard`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib.metadata
import importlib.resources
import logging
import platform
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ..hub_ids import looks_like_hub_id
from ..models.export import export_student
from .card_data import NOT_TASK_METRICS, PRETTY, ModelCardCallback, SageModelCardData, clean_metrics
from .hub import redact
from .speed import measure_cpu_speed
from .training_curve import plot_training_curve

logger = logging.getLogger(__name__)

TEMPLATE_NAME = "sage_student.md"
TRAINING_CURVE = "training_curve.png"
LOSS_MAP = "loss_map.png"
SAGE_TAGS = ("sage", "knowledge-distillation", "generated_from_trainer")
KD_TAGS = ("knowledge-distillation", "generated_from_trainer")
# What the packaged offline teacher folder is a copy of: a base without a task head, so a teacher loaded from it
# was fine-tuned here and has no name of its own.
OFFLINE_BASE = "sentence-transformers/all-MiniLM-L6-v2"
# arXiv listing facts that `SageTrainer._paper` (title, id) does not carry: the paper text has no author block.
_ARXIV = {"2508.14783": {"key": "polat2025sage", "year": "2025", "primary_class": "cs.LG",
                         "author": "Polat, Suleyman Olcay and Nemkova, Poli A. and Albert, Mark V."}}


def build_card_data(
    trainer,
    *,
    task_name: str,
    dataset_id: str | None,
    dataset_name: str | None,
    metrics: dict[str, float] | None = None,
    teacher_metrics: dict[str, float] | None = None,
    subsampled: str | None = None,
    speed: dict | None = None,
    model_id: str | None = None,
    model_name: str | None = None,
    dataset_config: str | None = None,
    dataset_split: str = "validation",
    license: str | None = None,
    language: str | list[str] | None = None,
    teacher_name: str | None = None,
    base_model: str | None = None,
    student_model=None,
    intended_use: str | None = None,
    extra_tags: Sequence[str] = (),
    max_decoded: int = 3,
) -> SageModelCardData:
    """Card data from a finished `SageTrainer` run: what its `ModelCardCallback` recorded, plus the export facts.

    `metrics` / `teacher_metrics` may be `trainer.evaluate()` or recipe dicts as they are (`eval_`, `teacher_<split>_`
    prefixes and run statistics are dropped, so both land in the same rows); without `metrics` the run's last
    evaluation is used. `teacher_name` is the fine-tuned teacher (a Hub id or local folder; default: where the
    teacher was loaded from) and `base_model` the Hub id it was fine-tuned from, when known. `student_model` is the
    exported student if you already have it; otherwise it is exported here, because the published model is what
    the parameter count must describe. `speed` is `measure_cpu_speed(...)`'s result.
    """
    args = trainer.args
    recorded = ModelCardCallback.of(trainer).card_data
    teacher = trainer.accelerator.unwrap_model(trainer.teacher)
    exported = student_model if student_model is not None else export_student(
        trainer.accelerator.unwrap_model(trainer.model), teacher)
    shown, teacher_id, teacher_base = _teacher_names(teacher, task_name, teacher_name, base_model)
    model_id = model_id or getattr(args, "hub_model_id", None)
    if model_name is None and model_id:
        model_name = model_id.split("/")[-1]
    elif model_name is None:  # "all-MiniLM-L6-v2-sage-sst2"; a plain KD run's name does not claim SAGE
        named_after = teacher_id or teacher_base or shown  # a local teacher folder is named after its base
        model_name = f"{named_after.split('/')[-1].split(' ')[0]}-{'sage' if recorded.sage else 'kd'}-{task_name}"
    data = dataclasses.replace(
        copy.deepcopy(recorded),
        model_name=model_name,
        task_name=task_name,
        teacher_name=shown,
        teacher_id=teacher_id,
        teacher_base_model=teacher_base,
        base_model=teacher_id or teacher_base,
        model_id=model_id,
        dataset_id=dataset_id, dataset_name=dataset_name, dataset_config=dataset_config, dataset_split=dataset_split,
        language=language, license=license,
        tags=list(dict.fromkeys([*(SAGE_TAGS if recorded.sage else KD_TAGS), task_name, *extra_tags])),
        labels={int(k): str(v) for k, v in exported.config.id2label.items()},
        architecture=type(exported).__name__,
        teacher_params=_count_parameters(teacher.model),
        student_params=_count_parameters(exported),
        teacher_layers=teacher.num_layers,
        student_layers=int(getattr(exported.config, teacher.spec.num_layers_attr)),
        interface_layer=teacher.interface_layer,
        metrics=clean_metrics(metrics) if metrics is not None else dict(recorded.metrics),
        teacher_metrics=clean_metrics(teacher_metrics or {}),
        subsampled=subsampled,
        speed=copy.deepcopy(speed),
        decoded_examples=recorded.decoded_examples[:max_decoded],
        log_history=copy.deepcopy(list(trainer.state.log_history)),
        intended_use=intended_use,
        versions=_versions(),
    )
    data.limitations = _limitations(data, args)
    return _redacted(data, getattr(args, "hub_token", None))


def _teacher_names(teacher, task_name: str, given: str | None, base_model: str | None):
    """(name shown, Hub id to link or None, Hub id of the model the teacher was fine-tuned from or None)."""
    source = given or getattr(teacher.config, "_name_or_path", "") or ""
    if not given and source and Path(source).resolve() == _offline_default_path():
        base = base_model or OFFLINE_BASE
        return f"{base.split('/')[-1]} fine-tuned on {task_name}", None, base
    hub_id = source if looks_like_hub_id(source) else None
    base = base_model if base_model != hub_id else None
    if source and hub_id is None and base is None:
        logger.warning("The teacher was loaded from the local folder %s: the card names no base_model (pass "
                       "base_model='owner/name', the model it was fine-tuned from, to link it).", source)
    shown = hub_id or (Path(source).name if source else type(teacher.model).__name__)
    return shown, hub_id, base


def _offline_default_path() -> Path | None:
    try:
        from ..models.offline import default_teacher_path

        return default_teacher_path().resolve()
    except (ModuleNotFoundError, FileNotFoundError):
        return None


def _count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # shared (tied) tensors are counted once


def _versions() -> dict[str, str]:
    import huggingface_hub
    import transformers

    try:
        version = importlib.metadata.version("sage-hf")
    except importlib.metadata.PackageNotFoundError:  # run from a source checkout
        import sage_hf

        version = sage_hf.__version__
    versions = {"sage-hf": version, "Transformers": transformers.__version__, "PyTorch": torch.__version__,
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
        items.append("SAGE's synthetic examples are built in the teacher's input-layer vector space near real "
                     "examples found on a low-dimensional loss map; they are not guaranteed to correspond to "
                     "meaningful text" + (" (the decoded examples above show how some read)."
                                          if data.decoded_examples else "."))
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


def _redacted(data: SageModelCardData, token: str | None) -> SageModelCardData:
    """Card data with the token, and anything shaped like one, redacted everywhere: no later edit can publish it."""

    def clean(value):
        if isinstance(value, str):
            return redact(value, token)
        if isinstance(value, (list, tuple)):
            return type(value)(clean(v) for v in value)
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        return value

    return dataclasses.replace(data, **{f.name: clean(getattr(data, f.name)) for f in dataclasses.fields(data)})


def citation(paper: dict[str, str]) -> str:
    """BibTeX for an arXiv paper given as `SageTrainer._paper` ({"title", "id"})."""
    known = _ARXIV.get(paper["id"], {})
    title = re.sub(r"\b([A-Z]{2,})\b", r"{\1}", paper["title"])  # keep acronyms upper-case in BibTeX styles
    lines = [f"title         = {{{title}}}"]
    if "author" in known:
        lines.append(f"author        = {{{known['author']}}}")
    lines.append(f"year          = {{{known.get('year', '20' + paper['id'][:2])}}}")
    lines += [f"eprint        = {{{paper['id']}}}", "archivePrefix = {arXiv}"]
    if "primary_class" in known:
        lines.append(f"primaryClass  = {{{known['primary_class']}}}")
    lines.append(f"url           = {{https://arxiv.org/abs/{paper['id']}}}")
    body = ",\n  ".join(lines)
    return f"@misc{{{known.get('key', 'arxiv' + paper['id'])},\n  {body}\n}}"


# ---- rendering -------------------------------------------------------------------------------------
def render_model_card(card_data: SageModelCardData, output_dir: str | Path, template_path: str | Path | None = None):
    """Write README.md, training_curve.png and loss_map.png into `output_dir`; returns the `ModelCard`.

    The metadata (base_model, datasets, tags, model-index, ...) is built by huggingface_hub itself, so the Hub reads
    it as it reads any card; pictures are referenced relatively, so the folder can be pushed as it is.
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
    text = redact(str(card))
    if text != str(card):
        logger.warning("Redacted access-token-like strings from the model card.")
        card = ModelCard(text)
    (out / "README.md").write_text(str(card), encoding="utf-8")
    logger.info("Wrote the model card to %s", out / "README.md")
    return card


@contextlib.contextmanager
def _template(template_path: str | Path | None) -> Iterator[Path]:
    if template_path is not None:
        yield Path(template_path)
        return
    resource = importlib.resources.files(__package__).joinpath("templates", TEMPLATE_NAME)
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
                       metric_type=name, metric_name=PRETTY.get(name, name), metric_value=value)
            for name, value in data.metrics.items() if name not in NOT_TASK_METRICS]


def _template_context(data: SageModelCardData, training_curve: str | None, loss_map: str | None) -> dict[str, Any]:
    """Card data plus display-ready strings and rows, so the template holds layout, not arithmetic."""
    ctx = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
    names = list(dict.fromkeys([*data.metrics, *data.teacher_metrics]))
    names.sort(key=lambda n: n in NOT_TASK_METRICS)  # task metrics first, agreement with the teacher last
    ctx.update(
        training_curve=training_curve,
        loss_map=loss_map,
        student_params_str=_human(data.student_params),
        teacher_params_str=_human(data.teacher_params),
        size_ratio=(data.teacher_params / data.student_params) if data.student_params else None,
        label_list=", ".join(f"`{v}`" for _, v in sorted(data.labels.items())),
        result_rows=[{"name": PRETTY.get(n, n), "student": _fmt(data.metrics.get(n)),
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
        citation=citation(data.paper) if data.sage and data.paper else None,
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


def write_student_card(trainer, folder: str | Path, *, task_name: str | None = None, dataset_id: str | None = None,
                       dataset_name: str | None = None, metrics: dict[str, float] | None = None,
                       speed_texts: Sequence[str] | None = None, template_path: str | Path | None = None,
                       **kwargs):
    """Card for the exported student in `folder` (README.md + pictures), from a finished SageTrainer run.

    Without `metrics`, the run's last evaluation is used; with `speed_texts`, CPU inference speed of the exported
    student vs the teacher is measured on them and reported. Other keywords go to `build_card_data`.
    """
    student_model = kwargs.pop("student_model", None)
    speed = kwargs.pop("speed", None)
    if speed is None and speed_texts and student_model is not None and trainer.processing_class is not None:
        speed = measure_cpu_speed(student_model, trainer.teacher.model, trainer.processing_class, list(speed_texts))
    data = build_card_data(trainer, task_name=task_name or "text-classification", dataset_id=dataset_id,
                           dataset_name=dataset_name, metrics=metrics, speed=speed, student_model=student_model,
                           model_id=kwargs.pop("model_id", None) or trainer.args.hub_model_id, **kwargs)
    return render_model_card(data, folder, template_path=template_path)
