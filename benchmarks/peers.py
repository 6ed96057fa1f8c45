"""Peer distillation toolkits for the GLUE benchmark: TextBrewer and torchdistill on one teacher, student and data.

Each peer trains a standard ``BertForSequenceClassification`` student against a frozen teacher with the peer's own
loss code, under one shared recipe that mirrors ``transformers.Trainer``'s defaults as our runs use them: AdamW
(betas 0.9/0.999, eps 1e-8, weight decay 0), a linear schedule without warm-up, gradient clipping at norm 1.0,
dynamic padding, ``transformers.set_seed(seed)``, shuffled batches, and ``max_steps`` or else
``ceil(num_train_epochs * ceil(len(train_dataset) / batch_size))`` optimiser steps. No hard-label loss in any cell.

* ``textbrewer_kd``: ``textbrewer.GeneralDistiller`` with its logit KD loss only (``kd_loss_type="ce"``,
  temperature T, ``hard_label_weight=0``).
* ``textbrewer_hidden``: the same plus TextBrewer's hidden-state matching (``"hidden_mse"``, weight 1) of student
  hidden state i to teacher hidden state ``i * L_T // L_S`` for i = 0 (embeddings) .. L_S, as TextBrewer's BERT
  examples do (e.g. 6 -> 3 layers: 0-0, 1-2, 2-4, 3-6); a ``"linear"`` projection is added if widths differ.
* ``torchdistill_kd``: ``torchdistill.losses.mid_level.KDLoss`` (alpha 0: the soft KL term only) on the logits,
  in a plain PyTorch loop (torchdistill's YAML pipeline needs torchvision, which this torch build cannot import).

Neither peer's pure soft loss multiplies by T**2 (TextBrewer: cross-entropy to the teacher's softened
distribution; torchdistill: ``KLDiv(batchmean)``, its T**2 appears only when ``alpha > 0``); we keep each
peer's loss as written. Both are installed with ``pip install --no-deps`` (see ``requirements-peers.txt``).

If a peer cannot be imported or fails inside its own code, :func:`run_peer` raises :class:`PeerUnavailable` whose
message says exactly why (package and torch/transformers versions, the original exception's last line), so a
benchmark row can record it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata as md
import math
import tempfile
import time
from collections.abc import Callable

import torch

PEERS = ("textbrewer_kd", "textbrewer_hidden", "torchdistill_kd")
_PACKAGE = {"textbrewer_kd": "textbrewer", "textbrewer_hidden": "textbrewer", "torchdistill_kd": "torchdistill"}
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_LABEL_KEYS = ("label", "labels", "label_ids")
_MAX_REASON = 300


class PeerUnavailable(RuntimeError):
    """A peer toolkit could not be installed, imported or run here; the message says exactly why."""


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def peer_versions() -> dict[str, str | None]:
    """Installed versions of the peer packages (None where missing) and of the torch/transformers they run on."""
    return {name: _version(name) for name in ("textbrewer", "torchdistill", "torch", "transformers")}


def _stack_versions() -> str:
    v = peer_versions()
    return f"torch {v['torch']}, transformers {v['transformers']}"


def _last_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".strip()


def _reason(text: str) -> str:
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


def _import_peer(package: str, *modules: str):
    """Import `modules` of `package`, raising PeerUnavailable (install hint or import error) on failure."""
    version = _version(package)
    if version is None:
        raise PeerUnavailable(_reason(
            f"{package} is not installed (pip install tensorboard && pip install --no-deps -r "
            f"benchmarks/requirements-peers.txt); {_stack_versions()}"))
    try:
        return [importlib.import_module(m) for m in modules]
    except Exception as exc:  # ImportError, AttributeError from a moved API, OSError from a native extension...
        raise PeerUnavailable(_reason(
            f"{package} {version} cannot be imported with {_stack_versions()}: {_last_line(exc)}")) from exc


@contextlib.contextmanager
def _peer_errors(package: str, what: str):
    """Turns a failure inside the peer's own code into PeerUnavailable with the versions and the original error."""
    try:
        yield
    except PeerUnavailable:
        raise
    except Exception as exc:
        raise PeerUnavailable(_reason(
            f"{package} {_version(package)} failed to {what} with {_stack_versions()}: {_last_line(exc)}")) from exc


# ---- shared recipe -------------------------------------------------------------------------------------------------

def _pad_collate(pad_token_id: int) -> Callable[[list[dict]], dict]:
    """Dynamic right padding of the model inputs, like DataCollatorWithPadding without needing a tokenizer."""

    def collate(features: list[dict]) -> dict:
        length = max(len(f["input_ids"]) for f in features)
        batch = {}
        for key in _MODEL_INPUTS:
            if key not in features[0]:
                continue
            pad = pad_token_id if key == "input_ids" else 0
            batch[key] = torch.tensor([list(f[key]) + [pad] * (length - len(f[key])) for f in features],
                                      dtype=torch.long)
        return batch

    return collate


def _inputs_only(collate_fn: Callable) -> Callable[[list[dict]], dict]:
    """Wraps a caller's collate_fn so the batch holds model inputs only: no labels, hence no hard-label loss."""

    def collate(features: list[dict]) -> dict:
        batch = collate_fn(features)
        return {k: v for k, v in dict(batch).items() if k not in _LABEL_KEYS and k in _MODEL_INPUTS}

    return collate


def _train_loader(train_dataset, teacher, batch_size: int, seed: int, collate_fn):
    from torch.utils.data import DataLoader

    keep = [c for c in _MODEL_INPUTS if c in train_dataset.column_names]
    if "input_ids" not in keep or "attention_mask" not in keep:
        raise ValueError(f"train_dataset needs input_ids and attention_mask columns, has {train_dataset.column_names}")
    if collate_fn is not None:  # a caller's collator may expect the label column; its labels are dropped after
        keep += [c for c in _LABEL_KEYS if c in train_dataset.column_names]
    data = train_dataset.select_columns(keep)
    if collate_fn is None:
        collate = _pad_collate(teacher.config.pad_token_id or 0)
    else:
        collate = _inputs_only(collate_fn)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(data, batch_size=batch_size, shuffle=True, collate_fn=collate, generator=generator,
                      num_workers=0, drop_last=False)


def _num_steps(n_examples: int, batch_size: int, num_train_epochs: float, max_steps: int | None) -> int:
    if max_steps is not None and max_steps > 0:
        return int(max_steps)
    return max(1, math.ceil(num_train_epochs * math.ceil(n_examples / batch_size)))  # as transformers.Trainer


def _optimizer(student, learning_rate: float, weight_decay: float):
    return torch.optim.AdamW(student.parameters(), lr=learning_rate, betas=(0.9, 0.999), eps=1e-8,
                             weight_decay=weight_decay)


class _StepCounter:
    """Counts optimiser steps actually taken, whoever drives the loop."""

    def __init__(self, optimizer):
        self.steps = 0
        self._handle = optimizer.register_step_post_hook(self._hook)

    def _hook(self, *_):
        self.steps += 1

    def close(self):
        self._handle.remove()


class _Autocast(torch.nn.Module):
    """The wrapped model's forward under bf16 autocast (only when asked for); parameters stay the inner model's."""

    def __init__(self, model, device: str, enabled: bool):
        super().__init__()
        self.model = model
        self.device_type = torch.device(device).type
        self.enabled = enabled
        # TextBrewer restores the wrapper's mode after training: start it in the model's, or a frozen teacher
        # comes back in train mode (dropout on)
        self.train(model.training)

    def forward(self, **kwargs):
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.enabled):
            return self.model(**kwargs)


# ---- peers ---------------------------------------------------------------------------------------------------------

def _hidden_matches(teacher, student) -> list[dict]:
    n_t, n_s = teacher.config.num_hidden_layers, student.config.num_hidden_layers
    d_t, d_s = teacher.config.hidden_size, student.config.hidden_size
    matches = []
    for layer_s in range(n_s + 1):  # hidden_states[0] is the embedding output
        match = {"layer_T": layer_s * n_t // n_s, "layer_S": layer_s, "feature": "hidden", "loss": "hidden_mse",
                 "weight": 1}
        if d_t != d_s:
            match["proj"] = ["linear", d_s, d_t]
        matches.append(match)
    return matches


def _run_textbrewer(name, teacher, student, loader, steps, *, learning_rate, temperature, device, weight_decay,
                    max_grad_norm, bf16, counter_box):
    textbrewer, = _import_peer("textbrewer", "textbrewer")
    from transformers import get_linear_schedule_with_warmup

    hidden = name == "textbrewer_hidden"

    def adaptor(batch, outputs):
        result = {"logits": outputs.logits.float(), "inputs_mask": batch["attention_mask"]}
        if hidden:
            result["hidden"] = [h.float() for h in outputs.hidden_states]
        return result

    optimizer = _optimizer(student, learning_rate, weight_decay)
    counter_box.append(_StepCounter(optimizer))
    with tempfile.TemporaryDirectory(prefix="textbrewer-") as out_dir, _peer_errors("textbrewer", f"run {name}"):
        train_config = textbrewer.TrainingConfig(device=device, output_dir=out_dir, log_dir=None, ckpt_steps=steps,
                                                 gradient_accumulation_steps=1, fp16=False)
        # a single score (regression, STS-B): a softmax over one logit is constant, so soft cross-entropy would
        # teach the head nothing; TextBrewer's MSE on the (temperature-scaled) score is the KD it offers there
        regression = student.config.num_labels == 1
        distill_config = textbrewer.DistillationConfig(
            temperature=temperature, kd_loss_type="mse" if regression else "ce", kd_loss_weight=1,
            hard_label_weight=0,
            intermediate_matches=_hidden_matches(teacher, student) if hidden else None)
        distiller = textbrewer.GeneralDistiller(train_config=train_config, distill_config=distill_config,
                                                model_T=_Autocast(teacher, device, bf16),
                                                model_S=_Autocast(student, device, bf16),
                                                adaptor_T=adaptor, adaptor_S=adaptor)
        # TextBrewer torch.save()s the student at every checkpoint; we keep the model in memory instead, so
        # its end-of-training checkpoint (disk I/O, not distillation) is skipped and not timed.
        distiller.save_and_callback = lambda *args, **kwargs: None
        extra = {"output_hidden_states": True} if hidden else {}
        with distiller:
            distiller.train(optimizer, loader, num_steps=steps, max_grad_norm=max_grad_norm,
                            scheduler_class=get_linear_schedule_with_warmup,
                            scheduler_args={"num_warmup_steps": 0, "num_training_steps": steps}, **extra)


def _run_torchdistill(teacher, student, loader, steps, *, learning_rate, temperature, device, weight_decay,
                      max_grad_norm, bf16, counter_box):
    mid_level, = _import_peer("torchdistill", "torchdistill.losses.mid_level")
    from transformers import get_linear_schedule_with_warmup

    with _peer_errors("torchdistill", "build KDLoss"):
        # The module path/io name where torchdistill's forward hooks would read the logits: BERT's classifier output.
        criterion = mid_level.KDLoss(student_module_path="classifier", student_module_io="output",
                                     teacher_module_path="classifier", teacher_module_io="output",
                                     temperature=temperature, alpha=0.0, beta=1.0, reduction="batchmean")
    optimizer = _optimizer(student, learning_rate, weight_decay)
    counter_box.append(_StepCounter(optimizer))
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=0, num_training_steps=steps)
    model_t, model_s = _Autocast(teacher, device, bf16), _Autocast(student, device, bf16)
    regression = student.config.num_labels == 1
    teacher_was_training = teacher.training
    teacher.eval()
    student.train()
    step = 0
    try:
        while step < steps:
            for batch in loader:
                batch = {k: v.to(device) for k, v in batch.items()}
                with torch.no_grad():
                    logits_t = model_t(**batch).logits.float()
                logits_s = model_s(**batch).logits.float()
                if regression:  # KDLoss is a softmax KL, constant on one score: MSE on the score, as KD does
                    loss = torch.nn.functional.mse_loss(logits_s, logits_t)
                else:
                    with _peer_errors("torchdistill", "compute KDLoss"):
                        loss = criterion({"classifier": {"output": logits_s}},
                                         {"classifier": {"output": logits_t}})
                loss.backward()
                if max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(student.parameters(), max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if step >= steps:
                    break
    finally:
        teacher.train(teacher_was_training)


def run_peer(name: str, teacher, student, train_dataset, *, num_train_epochs: float, learning_rate: float,
             batch_size: int, temperature: float, seed: int, device: str = "cpu", max_steps: int | None = None,
             collate_fn=None, weight_decay: float = 0.0, max_grad_norm: float = 1.0, bf16: bool = False) -> dict:
    """Distils `teacher` into `student` with peer toolkit `name` (one of :data:`PEERS`); trains `student` in place.

    `train_dataset`: a tokenized ``datasets.Dataset`` (``input_ids``, ``attention_mask``, optional
    ``token_type_ids``; labels and other columns are ignored: no hard-label loss). `collate_fn`: optional
    collator for its rows (labels it adds are dropped); default is dynamic right padding with the teacher's
    ``pad_token_id``. `bf16`: bf16 autocast on the forward passes (losses in fp32), as our GPU runs train.

    Returns ``{"model": student, "train_s": seconds, "steps": optimiser steps taken, "peer_version": "pkg x.y"}``;
    ``train_s`` covers the training loop only (not the import or the data loader's construction).
    Raises ValueError for an unknown `name`, PeerUnavailable when the peer cannot be imported or run here.
    """
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; expected one of {PEERS}")
    package = _PACKAGE[name]
    # Import first, so that a missing or broken peer is reported before any work.
    _import_peer(package, "textbrewer" if package == "textbrewer" else "torchdistill.losses.mid_level")

    from transformers import set_seed

    set_seed(seed)
    teacher.to(device).eval()
    student.to(device).train()
    loader = _train_loader(train_dataset, teacher, batch_size, seed, collate_fn)
    steps = _num_steps(len(train_dataset), batch_size, num_train_epochs, max_steps)
    common = dict(learning_rate=learning_rate, temperature=temperature, device=device, weight_decay=weight_decay,
                  max_grad_norm=max_grad_norm, bf16=bf16)
    counter_box: list[_StepCounter] = []
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    try:
        if package == "textbrewer":
            _run_textbrewer(name, teacher, student, loader, steps, counter_box=counter_box, **common)
        else:
            _run_torchdistill(teacher, student, loader, steps, counter_box=counter_box, **common)
        if device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.synchronize()
        train_s = time.perf_counter() - start
    finally:
        for counter in counter_box:
            counter.close()
    done = counter_box[0].steps if counter_box else 0
    if done != steps:
        raise PeerUnavailable(_reason(f"{package} {_version(package)} took {done} optimiser steps, expected {steps} "
                                      f"({_stack_versions()})"))
    student.eval()
    return {"model": student, "train_s": train_s, "steps": done, "peer_version": f"{package} {_version(package)}"}
