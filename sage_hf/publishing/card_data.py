"""What a student's model card says about its training, recorded while it trains (setfit's card callback pattern).

`ModelCardCallback` fills a `SageModelCardData` from Trainer events: the settings when training begins, every SAGE
round and evaluation as it is logged, why training stopped when it ends. `card.build_card_data` adds what is only
known at export (the exported model, dataset names, measured speed) and `card.render_model_card` writes the card.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .plots import round_plot_path

# Keys of a `trainer.evaluate()` dict that describe the run, not the model.
HOUSEKEEPING = {"loss", "runtime", "samples_per_second", "steps_per_second", "epoch", "step", "model_preparation_time"}
# Teacher-agreement numbers are shown in the card but kept out of model-index: they compare the student with its
# own teacher, not with other models on the task.
NOT_TASK_METRICS = {"agreement", "teacher_mse"}
PRETTY = {"accuracy": "Accuracy", "f1": "F1", "matthews_correlation": "Matthews correlation", "pearson": "Pearson",
          "spearmanr": "Spearman", "agreement": "Agreement with teacher", "teacher_mse": "MSE to teacher logits",
          "precision": "Precision", "recall": "Recall"}
# "eval_accuracy" (the student), "teacher_validation_accuracy" (the recipe's teacher stage): both are "accuracy".
_METRIC_PREFIX = re.compile(r"^(?:teacher_)?(?:eval|test|predict|validation)_")

SAGE_FIELDS = ("reducer", "n_components", "n_neighbors", "reducer_metric", "pooling", "anchor_policy",
               "anchor_fraction", "sample_neighbors", "jitter", "shift_scale", "synthetic_count", "synthesis",
               "candidates_per_anchor", "candidate_choice", "synthesis_mode", "regenerate", "synthesis_start_epoch",
               "inversion_backend", "agreement_threshold", "max_rounds", "interface_layer")
DISTILL_FIELDS = ("temperature", "kd_loss", "alpha_kd", "alpha_hard", "hidden_loss", "alpha_hidden",
                  "hidden_layer_map")
TRAIN_FIELDS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                "gradient_accumulation_steps", "weight_decay", "lr_scheduler_type", "warmup_steps", "optim", "seed",
                "bf16", "fp16")


@dataclass
class SageModelCardData:
    """Everything the card shows, gathered once so a card can be re-rendered (or edited) without the trainer."""

    model_name: str = ""
    task_name: str = ""
    teacher_name: str = field(default="", metadata={"help": "The fine-tuned teacher: a Hub id or a folder's name."})
    teacher_id: str | None = field(default=None, metadata={"help": "The teacher's Hub id, when it is on the Hub."})
    teacher_base_model: str | None = field(
        default=None, metadata={"help": "Hub id of the model the teacher was fine-tuned from, when known."})
    base_model: str | None = field(
        default=None, metadata={"help": "Metadata base_model: the teacher, else the model it was fine-tuned from."})
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
    synthesis_mode: str | None = field(default=None, metadata={
        "help": "'augment': real + synthetic; 'replace'; 'mix': synthetic beside each real batch."})
    regenerate: str | None = None
    synthesis_start_epoch: int = 0  # epochs on real examples only before the first round
    hidden_loss: str | None = None  # "mse" or "cosine" when hidden states were matched too, else None
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
    loss_map_ranked: bool = False  # the picture ranks examples by loss: the synthesis method fitted no map
    intended_use: str | None = None
    limitations: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    paper: dict[str, str] | None = field(default=None, metadata={"help": "SageTrainer._paper: title and arXiv id."})


class ModelCardCallback(TrainerCallback):
    """Records the card's training facts as they happen, so the card reports the run rather than re-deriving it.

    A resumed run replays the restored log history first, so the card still lists the rounds before the checkpoint.
    """

    def __init__(self, trainer):
        self.trainer = trainer
        self.card_data = SageModelCardData(paper=dict(getattr(trainer, "_paper", None) or {}) or None)
        self.began = False

    @classmethod
    def of(cls, trainer) -> ModelCardCallback:
        """The callback that followed `trainer`'s training, or one replayed from its state (untrained, or built
        without one)."""
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, cls) and callback.began:
                return callback
        callback = cls(trainer)
        callback.on_train_begin(trainer.args, trainer.state, trainer.control)
        callback.on_train_end(trainer.args, trainer.state, trainer.control)
        return callback

    def on_train_begin(self, args, state, control, **kwargs):
        self.began = True
        data, engine = self.card_data, self.trainer.sage_engine
        config = getattr(engine, "config", None) or args  # the engine's frozen RoundConfig, where it has one
        data.sage = engine is not None
        data.synthesis_mode = getattr(config, "synthesis_mode", None) if data.sage else None
        data.regenerate = getattr(config, "regenerate", None) if data.sage else None
        data.synthesis_start_epoch = getattr(config, "synthesis_start_epoch", 0) if data.sage else 0
        data.sage_settings = settings_rows(args, SAGE_FIELDS, config) if data.sage else []
        layer_map = getattr(self.trainer, "_layer_map", None) or []  # the pairs the hidden-state loss used
        kind = getattr(self.trainer, "_hidden_loss", args.hidden_loss)  # what "auto" came to for this head
        data.hidden_loss = kind if layer_map else None
        used = {"hidden_layer_map": ",".join(f"{s}:{t}" for s, t in layer_map),
                "hidden_loss": f"{kind} (auto)" if args.hidden_loss == "auto" else kind}
        data.distillation_settings = [(name, used.get(name, value), why)
                                      for name, value, why in settings_rows(args, DISTILL_FIELDS)
                                      if layer_map or name not in ("alpha_hidden", "hidden_layer_map")]
        data.training_settings = [r for r in settings_rows(args, TRAIN_FIELDS) if not _is_default_off(r[0], r[1])]
        data.warmup = _warmup_summary(self.trainer)
        data.rounds, data.final_agreement, data.metrics = [], None, {}
        for logs in state.log_history:
            self._record(logs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self._record(logs or {})

    def on_train_end(self, args, state, control, **kwargs):
        data, engine = self.card_data, self.trainer.sage_engine
        if engine is None:
            data.rounds_run, data.stop_reason = 0, None
            return
        data.rounds_run, data.stop_reason = engine.round, engine.stop_reason
        history = {h["round"]: h for h in engine.history}
        for row in data.rounds:  # what the round log line does not carry
            row["anchor_fallback"] = bool(history.get(row["round"], {}).get("anchor_fallback"))
        data.decoded_examples = next((list(h["decoded"]) for h in reversed(engine.history) if h.get("decoded")), [])
        data.loss_map_source = _last_round_plot(args.output_dir, engine.round)
        data.loss_map_ranked = not engine.method.uses_map
        # What the run used: the map it fitted, the count it made (not the "None = as many as real examples").
        used = {"reducer": map_name(engine) or (f"none fitted (synthesis='{engine.config.synthesis}' uses no map)"
                                                 if data.loss_map_ranked else None),
                "synthetic_count": data.rounds[0]["synthetic_count"] if data.rounds else None}
        data.sage_settings = [(n, v if used.get(n) is None else used[n], h) for n, v, h in data.sage_settings]

    def _record(self, logs: dict[str, Any]) -> None:
        data = self.card_data
        if "sage/round" in logs:
            data.rounds.append({
                "round": int(logs["sage/round"]), "epoch": float(logs.get("epoch", 0.0)),
                "agreement": logs["sage/agreement"], "mean_loss": logs["sage/mean_loss"],
                "anchors_mean_loss": logs.get("sage/anchors_mean_loss"),
                "synthetic_count": int(logs["sage/synthetic"]),
                "seconds": float(sum(v for k, v in logs.items() if k.startswith("sage/seconds_"))),
                "anchor_fallback": False})
        if "sage/agreement" in logs:
            data.final_agreement = float(logs["sage/agreement"])
        if any(k.startswith("eval_") for k in logs):
            data.metrics = clean_metrics(logs)


def clean_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Metric name -> value, without split/teacher prefixes and run statistics, so student and teacher rows meet."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        short = _METRIC_PREFIX.sub("", key)
        if short in HOUSEKEEPING or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[short] = float(value)
    return out


def settings_rows(args, names: Sequence[str], config=None) -> list[tuple[str, Any, str]]:
    """(name, value, help) for each field of `args` in `names`; values from `config` where it has them."""
    fields = {f.name: f for f in dataclasses.fields(args)}
    config = config if config is not None else args
    return [(name, getattr(config, name, getattr(args, name)), fields[name].metadata.get("help", ""))
            for name in names if name in fields]


def map_name(engine) -> str | None:
    """The fitted map's reducer name (None before the first round fitted it)."""
    return getattr(getattr(getattr(engine, "map", None), "settings", None), "name", None)


def _is_default_off(name: str, value) -> bool:
    return ((name in ("bf16", "fp16") and not value) or (name == "max_steps" and value is not None and value <= 0)
            or (name == "warmup_steps" and not value))


def _warmup_summary(trainer) -> dict | None:
    if not getattr(trainer, "_warmed_up", False):
        return None
    args = trainer.args
    source = args.warmup_source or ""
    # A local path says nothing to a reader and exposes this machine's layout: keep its last part only.
    shown = Path(source).name if os.path.exists(source) else source
    return {"source": shown, "epochs": args.warmup_epochs, **getattr(trainer, "warmup_metrics", {})}


def _last_round_plot(output_dir: str, rounds_run: int) -> str | None:
    for number in range(rounds_run, 0, -1):
        path = Path(round_plot_path(output_dir, number))
        if path.is_file():
            return str(path)
    return None
