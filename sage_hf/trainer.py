"""`SageTrainer`: a `transformers.Trainer` that distils a frozen teacher into a headless student."""

from __future__ import annotations

import dataclasses
import logging
import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import EvalPrediction, Trainer
from transformers.modeling_outputs import SequenceClassifierOutput

from .collator import SageDataCollator
from .hidden_loss import check_layer_map, default_layer_map, hidden_state_loss, parse_layer_map, resolve_hidden_loss
from .losses import distillation_loss_per_example
from .models.student import SageStudentForSequenceClassification
from .models.teacher import TeacherInterface, as_teacher
from .publishing.card_data import ModelCardCallback
from .rounds.callback import SageCallback
from .rounds.config import RoundConfig
from .rounds.engine import SageEngine
from .rounds.synthesis import get_synthesis, synthesis_methods
from .teacher_cache import compute_teacher_logits
from .training_args import SageTrainingArguments

logger = logging.getLogger(__name__)

# Columns the trainer reads; Trainer would drop most of them, since the student's forward only names a few.
_BASE_COLUMNS = ["input_ids", "attention_mask", "token_type_ids", "inputs_embeds", "labels", "label", "label_ids",
                 "teacher_logits", "example_id"]


def sage_columns() -> list[str]:
    """The base columns plus what every registered synthesis method's items add."""
    return list(dict.fromkeys(_BASE_COLUMNS + [k for method in synthesis_methods() for k in method.item_keys]))


class SageTrainer(Trainer):
    """Logit distillation from a frozen teacher, through the teacher's layer-1 vectors.

    Batches may carry token ids (layer-1 vectors then come from the frozen teacher input layer) or
    precomputed `inputs_embeds`, and optionally cached `teacher_logits` (then no teacher forward is run).
    """

    _tag_names = ["sage", "knowledge-distillation"]
    _paper = {
        "title": "Synthetic Adaptive Guided Embeddings (SAGE): A Novel Knowledge Distillation Method",
        "id": "2508.14783",
    }
    # compute_loss divides by the example count of the whole accumulated batch itself.
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: SageStudentForSequenceClassification | None = None,
        args: SageTrainingArguments | None = None,
        teacher_model=None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        compute_metrics=None,
        **kwargs,
    ):
        if teacher_model is None:
            raise ValueError("SageTrainer needs a `teacher_model` (a sequence-classification model to distil).")
        if args is None:
            args = SageTrainingArguments(output_dir="sage-output")
        elif not isinstance(args, SageTrainingArguments):
            raise TypeError(f"args must be SageTrainingArguments, got {type(args).__name__}.")
        teacher = as_teacher(teacher_model, args.interface_layer)
        if not teacher.has_head:
            raise ValueError(
                f"The teacher ({type(teacher.model).__name__}) has no sequence-classification head: load it with "
                "AutoModelForSequenceClassification and fine-tune it on the task first."
            )
        if model is None:
            model = SageStudentForSequenceClassification.from_teacher(teacher)
        _check_compatible(model, teacher)
        for dataset, split in ((train_dataset, "train"), (eval_dataset, "eval")):
            if dataset is not None and hasattr(dataset, "__len__") and len(dataset) == 0:
                raise ValueError(f"The {split} dataset is empty.")
        self._user_compute_metrics = compute_metrics
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator or SageDataCollator(processing_class),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=self._compute_metrics,
            **kwargs,
        )
        self.add_callback(ModelCardCallback(self))
        if hasattr(self.model, "add_model_tags"):
            self.model.add_model_tags(self._tag_names)
        self.teacher = self._prepare_teacher(teacher)
        self._synthesis = get_synthesis(self.args.synthesis)
        self._hidden_loss = resolve_hidden_loss(self.args.hidden_loss, model.config.num_labels)
        self._layer_map = _hidden_layer_map(self.args, self._hidden_loss, model, teacher)
        if self.args.hidden_loss == "auto":
            head = "a one-score regression head" if model.config.num_labels == 1 else "a classifier"
            logger.info("hidden_loss='auto' is '%s' for %s", self._hidden_loss, head)
        self.sage_engine: SageEngine | None = None
        self._warmed_up = False
        if self.args.sage and train_dataset is not None:
            self.sage_engine = self._build_engine(train_dataset)
            self.train_dataset = self.sage_engine.buffer  # refilled in place by SageCallback every round
            self._add_sage_callback()

    # ---- SAGE -----------------------------------------------------------------------------------------
    def _build_engine(self, dataset) -> SageEngine:
        columns = getattr(dataset, "column_names", None)
        if columns is None or "input_ids" not in columns:
            raise ValueError("SAGE rounds need a tokenized datasets.Dataset with 'input_ids' (synthetic examples "
                             f"are built from real token sequences); got columns {columns}. Use sage=False for "
                             "plain distillation from precomputed inputs_embeds.")
        features = {c: dataset[c] for c in ("input_ids", "attention_mask", "token_type_ids") if c in columns}
        label_col = next((c for c in ("labels", "label") if c in columns), None)
        labels = dataset[label_col] if label_col else None
        if "teacher_logits" in columns:
            teacher_logits = torch.as_tensor(np.asarray(dataset["teacher_logits"], dtype=np.float32))
        else:
            teacher_logits = compute_teacher_logits(self.teacher, dataset.select_columns(list(features)),
                                                    self.args.teacher_batch_size, device=self.args.device)
        cache = self.args.map_cache_dir or os.path.join(
            os.environ.get("SAGE_HF_CACHE", os.path.join(Path.home(), ".cache", "sage_hf")), "maps")
        name = getattr(self.teacher.config, "_name_or_path", "") or type(self.teacher.model).__name__
        return SageEngine(self.teacher, features, teacher_logits, labels, RoundConfig.from_args(self.args),
                          map_cache_dir=cache, map_key=name, tokenizer=self.processing_class)

    def _add_sage_callback(self) -> None:
        """Before the progress bar's callback: round 1 then runs before the bar starts timing step 1."""
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        callbacks = self.callback_handler.callbacks
        bar = next((i for i, cb in enumerate(callbacks) if isinstance(cb, (ProgressCallback, PrinterCallback))),
                   len(callbacks))
        callbacks.insert(bar, SageCallback(self))

    def warm_up(self) -> None:
        """Logit distillation on unlabeled generic text before round 1 (the paper's general distillation)."""
        from .data.warmup import tokenized_warmup_dataset

        args = self.args
        data = tokenized_warmup_dataset(args.warmup_source, self.processing_class, args.warmup_max_length,
                                        args.warmup_max_samples, seed=args.seed)
        warm_args = dataclasses.replace(
            args, sage=False, num_train_epochs=args.warmup_epochs, max_steps=-1,
            output_dir=os.path.join(args.output_dir, "warmup"),
            save_strategy="no", eval_strategy="no", report_to=[], push_to_hub=False, load_best_model_at_end=False,
            warmup_source=None)
        logger.info("Warm-up: %g epoch(s) of logit distillation on %d generic text lines", args.warmup_epochs,
                    len(data))
        warm = SageTrainer(model=self.model, args=warm_args, teacher_model=self.teacher, train_dataset=data,
                           processing_class=self.processing_class)
        result = warm.train()
        self.warmup_metrics = {"warmup_steps": warm.state.global_step, "warmup_loss": result.training_loss,
                               "warmup_examples": len(data)}
        self._warmed_up = True

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        checkpoint = self._resolve_checkpoint(resume_from_checkpoint)
        if self.sage_engine is not None and checkpoint is not None:
            self.sage_engine.load(checkpoint)
        elif (self.sage_engine is not None and self.args.warmup_source and self.args.warmup_epochs > 0
              and not self._warmed_up):
            self.warm_up()
        return super().train(resume_from_checkpoint=checkpoint, trial=trial,
                             ignore_keys_for_eval=ignore_keys_for_eval, **kwargs)

    def get_train_dataloader(self):
        """In synthesis_mode='mix', batches of real examples that each carry a share of the synthetic ones."""
        engine = self.sage_engine
        if engine is None or engine.config.synthesis_mode != "mix" or self.train_dataset is not engine.buffer:
            return super().get_train_dataloader()
        from torch.utils.data import DataLoader
        from transformers.trainer_utils import seed_worker

        from .rounds.mixed_batches import MixedBatchSampler

        args = self.args
        grouped = args.train_sampling_strategy == "group_by_length"
        sampler = MixedBatchSampler(engine.buffer, engine.n_real, self._train_batch_size,
                                    real_lengths=engine.real_lengths if grouped else None)
        loader = DataLoader(engine.buffer, batch_sampler=sampler,
                            collate_fn=self._get_collator_with_removed_columns(self.data_collator, "training"),
                            num_workers=args.dataloader_num_workers, pin_memory=args.dataloader_pin_memory,
                            persistent_workers=args.dataloader_persistent_workers,
                            prefetch_factor=args.dataloader_prefetch_factor,
                            worker_init_fn=partial(seed_worker, num_workers=args.dataloader_num_workers,
                                                   rank=args.process_index))
        return self.accelerator.prepare(loader)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if (self.sage_engine is not None and dataset is self.sage_engine.buffer
                and self.args.train_sampling_strategy == "group_by_length"):
            from .rounds.buffer import BufferLengthGroupedSampler

            return BufferLengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                              self.sage_engine.buffer)
        return super()._get_train_sampler(train_dataset)

    # ---- saving and the Hub: the standard student is what gets published --------------------------------
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict)
        from transformers.trainer import TRAINING_ARGS_NAME

        from .publishing.hub import strip_tokens

        # Trainer pickles its arguments, hub_token included; keep the token out of every saved folder. Only the
        # writing process: the others return from Trainer._save before the folder exists.
        if self.args.should_save:
            torch.save(strip_tokens(self.args), os.path.join(output_dir or self.args.output_dir, TRAINING_ARGS_NAME))

    def _save_checkpoint(self, model, trial) -> None:
        """The SAGE state first, so Trainer's trainer_state.json, written last, marks a complete checkpoint."""
        if self.sage_engine is not None:
            self.sage_engine.training_pass.merge(self.accelerator)  # every rank's part of the epoch
            if self.args.should_save:
                folder = Path(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
                folder.mkdir(parents=True, exist_ok=True)
                self.sage_engine.save(folder)
        super()._save_checkpoint(model, trial)

    def export_student(self, folder: str | os.PathLike | None = None, **card_kwargs) -> Path:
        """The standard student (teacher input layer + student layers), tokenizer and model card in `folder`.

        `card_kwargs` go to `sage_hf.publishing.card.write_student_card` (task and dataset names, teacher metrics,
        `teacher_name` / `base_model`, `speed_texts`, `template_path`...).
        """
        from .models.export import export_student
        from .publishing.card import write_student_card

        folder = Path(folder or os.path.join(self.args.output_dir, "student"))
        student = self.accelerator.unwrap_model(self.model)
        exported = export_student(student, self.teacher, folder, tokenizer=self.processing_class)
        write_student_card(self, folder, student_model=exported, **card_kwargs)
        return folder

    def push_to_hub(self, commit_message: str | None = "End of training", blocking: bool = True,
                    token: str | None = None, revision: str | None = None, private: bool | None = None, **kwargs):
        """Push the exported *standard* student (never the headless one), tokenizer, card and pictures."""
        from .publishing.hub import push_folder_to_hub

        if not self.args.hub_model_id:
            raise ValueError("push_to_hub needs SageTrainingArguments(hub_model_id='you/model-name').")
        if not self.is_world_process_zero():
            return None
        folder = self.export_student(os.path.join(self.args.output_dir, "student"), **kwargs)
        return push_folder_to_hub(folder, self.args.hub_model_id, token=token or self.args.hub_token,
                                  private=private if private is not None else self.args.hub_private_repo,
                                  commit_message=commit_message or "Upload SAGE student",
                                  revision=revision or self.args.hub_revision)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """hub_strategy pushes during training publish the current standard student too."""
        if self.is_world_process_zero():
            self.push_to_hub(commit_message=f"Training in progress, step {self.state.global_step}")

    def _resolve_checkpoint(self, resume_from_checkpoint):
        from .resume import resolve_checkpoint

        return resolve_checkpoint(self.args.output_dir, resume_from_checkpoint, sage=self.sage_engine is not None)

    # ---- teacher -------------------------------------------------------------------------------------
    def _prepare_teacher(self, teacher: TeacherInterface) -> TeacherInterface:
        teacher.requires_grad_(False)
        teacher.eval()
        teacher.to(device=self.args.device, dtype=self.model.dtype)
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return teacher  # a full replica per rank: sharding a frozen model only adds communication
        # evaluation_mode: placed on the device, never wrapped for gradient sync (it has no gradients).
        return self.accelerator.prepare_model(teacher, evaluation_mode=True)

    @torch.no_grad()
    def _layer1_and_teacher(self, inputs: dict[str, Any], hidden: bool = False):
        """Layer-1 vectors, mask, teacher logits (cached where given) and, with `hidden`, the teacher's states."""
        vectors, mask = self._synthesis.materialise(self.teacher, inputs)  # real or synthetic examples
        teacher_hidden = None
        if hidden:
            out = self.teacher.from_layer1(vectors, mask, output_hidden_states=True)
            teacher_hidden = out.hidden_states
        cached = inputs.get("teacher_logits")
        if cached is not None:
            num_labels = self.model.config.num_labels
            if cached.shape[-1] != num_labels:
                raise ValueError(
                    f"teacher_logits have {cached.shape[-1]} classes but the student has num_labels={num_labels}."
                )
            teacher_logits = cached
        elif teacher_hidden is not None:
            teacher_logits = out.logits
        else:
            teacher_logits = self.teacher.logits_from_layer1(vectors, mask)
        return vectors, mask, teacher_logits, teacher_hidden

    # ---- loss ----------------------------------------------------------------------------------------
    def _per_example_loss(self, logits, teacher_logits, labels) -> torch.Tensor:
        return distillation_loss_per_example(
            logits,
            teacher_logits,
            labels,
            temperature=self.args.temperature,
            kind=self.args.kd_loss,
            alpha_kd=self.args.alpha_kd,
            alpha_hard=self.args.alpha_hard,
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        vectors, mask, teacher_logits, teacher_hidden = self._layer1_and_teacher(inputs, hidden=bool(self._layer_map))
        outputs = model(inputs_embeds=vectors, attention_mask=mask, output_hidden_states=teacher_hidden is not None)
        per_example = self._per_example_loss(outputs.logits, teacher_logits, inputs.get("labels"))
        engine = self.sage_engine
        if engine is not None and model.training and engine.observes_training and "example_id" in inputs:
            engine.training_pass.observe(inputs["example_id"], outputs.logits, teacher_logits)
        if teacher_hidden is not None:
            per_example = per_example + self.args.alpha_hidden * hidden_state_loss(
                outputs.hidden_states, teacher_hidden, mask, self._layer_map, self._hidden_loss)
        if num_items_in_batch is not None:
            # Sum over this micro-batch / examples in the whole accumulated (and, if averaged, global) batch:
            # the same gradient as one big batch, whatever the accumulation steps or a short last batch.
            loss = per_example.sum() / num_items_in_batch
            if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
                loss = loss * self.accelerator.num_processes  # DDP averages gradients over ranks
        else:
            loss = per_example.mean()
            if model.training:
                steps = getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
                loss = loss / steps
        if return_outputs:
            return loss, SequenceClassifierOutput(loss=loss, logits=outputs.logits)
        return loss

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device):
        """Examples (not label tokens) in the accumulated batch: synthetic and warm-up batches have no labels."""
        if not batch_samples:
            return None
        count = torch.tensor(sum(len(b["attention_mask"]) for b in batch_samples if "attention_mask" in b))
        count = count.to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return count

    # ---- columns -------------------------------------------------------------------------------------
    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = sage_columns()

    def _remove_unused_columns(self, dataset, description=None):
        if self.args.remove_unused_columns and hasattr(dataset, "column_names"):
            dropped = sorted(set(dataset.column_names) - set(sage_columns()))
            if dropped:
                logger.warning(
                    "SageTrainer does not read the %s columns %s; they are dropped from the batches "
                    "(set remove_unused_columns=False to keep them for a custom collator).",
                    description or "dataset",
                    dropped,
                )
        return super()._remove_unused_columns(dataset, description)

    # ---- evaluation ----------------------------------------------------------------------------------
    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            vectors, mask, teacher_logits, _ = self._layer1_and_teacher(inputs)
            logits = model(inputs_embeds=vectors, attention_mask=mask).logits
            labels = inputs.get("labels")
            loss = self._per_example_loss(logits, teacher_logits, labels).mean().detach()
        if prediction_loss_only:
            return loss, None, None
        if labels is None:  # still report agreement with the teacher on unlabelled data
            labels = torch.full((len(logits),), -100, device=logits.device)
        return loss, (logits.detach(), teacher_logits.detach().to(logits.dtype)), labels

    def _compute_metrics(self, eval_pred: EvalPrediction) -> dict[str, float]:
        student, teacher = eval_pred.predictions
        metrics: dict[str, float] = {}
        if student.shape[-1] == 1:
            metrics["teacher_mse"] = float(np.mean((student.squeeze(-1) - teacher.squeeze(-1)) ** 2))
        else:
            metrics["agreement"] = float(np.mean(student.argmax(-1) == teacher.argmax(-1)))
        labels = eval_pred.label_ids
        has_gold = labels is not None and not np.all(np.asarray(labels) == -100)
        if self._user_compute_metrics is not None and has_gold:
            metrics.update(self._user_compute_metrics(EvalPrediction(predictions=student, label_ids=labels)))
        return metrics


def _check_compatible(student, teacher: TeacherInterface) -> None:
    hidden = getattr(student.config, "hidden_size", None)
    if hidden != teacher.width:
        raise ValueError(
            f"The student's hidden size ({hidden}) differs from the teacher's layer-1 width ({teacher.width}): "
            "the student must read the teacher's layer-1 vectors unchanged."
        )
    if student.config.num_labels != teacher.num_labels:
        raise ValueError(
            f"The student has num_labels={student.config.num_labels} but the teacher has {teacher.num_labels}."
        )
    interface = getattr(student.config, "interface_layer", teacher.interface_layer)
    if interface != teacher.interface_layer:
        raise ValueError(
            f"The student reads teacher layer {interface} but the trainer's interface_layer is "
            f"{teacher.interface_layer}: set SageTrainingArguments(interface_layer={interface})."
        )


def _hidden_layer_map(args, kind: str, student, teacher: TeacherInterface) -> list[tuple[int, int]]:
    """Student -> teacher layer pairs of the hidden-state loss `kind` (empty when it is off)."""
    if kind == "none" or args.alpha_hidden == 0:
        return []
    student_layers = student.config.num_layers
    teacher_layers = teacher.num_layers - teacher.interface_layer
    if args.hidden_layer_map:
        pairs = parse_layer_map(args.hidden_layer_map)
        check_layer_map(pairs, student_layers, teacher_layers)
        return pairs
    return default_layer_map(student_layers, teacher_layers)
