"""SageTrainingArguments and SageTrainer: distillation, saving, batches and bad input."""

import logging

import numpy as np
import pytest
import torch

from sage_hf import (
    SageDataCollator,
    SageStudentForSequenceClassification,
    SageTrainer,
    SageTrainingArguments,
    TeacherInterface,
    cache_teacher_logits,
    compute_teacher_logits,
)
from sage_hf.losses import kd_loss_per_example

from testing_utils import tiny_config, tiny_dataset, tiny_teacher


def make_args(tmp_path, **overrides):
    defaults = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, per_device_eval_batch_size=16,
                    learning_rate=1e-3, num_train_epochs=1, report_to=[], use_cpu=True, disable_tqdm=True,
                    save_strategy="no", logging_strategy="no", seed=0, data_seed=0, sage=False)
    defaults.update(overrides)
    return SageTrainingArguments(**defaults)


def kd_and_agreement(student, teacher, dataset):
    """Mean KD loss (T=1) and argmax agreement of the student with the teacher on `dataset`."""
    batch = SageDataCollator()([dataset[i] for i in range(len(dataset))])
    student.eval()
    with torch.no_grad():
        vectors = teacher.layer1(batch["input_ids"], batch["attention_mask"])
        s = student(inputs_embeds=vectors, attention_mask=batch["attention_mask"]).logits
        t = teacher.logits_from_layer1(vectors, batch["attention_mask"])
    return kd_loss_per_example(s, t).mean().item(), (s.argmax(-1) == t.argmax(-1)).float().mean().item()


def test_training_lowers_kd_loss_and_raises_agreement(tmp_path):
    teacher = TeacherInterface(tiny_teacher("bert", num_layers=2, sharpen=30.0, dropout=0.0))
    student = SageStudentForSequenceClassification.from_teacher(teacher, num_layers=1, init="random")
    data = tiny_dataset(96)
    loss_before, agree_before = kd_and_agreement(student, teacher, data)
    args = make_args(tmp_path, num_train_epochs=4, learning_rate=3e-3)  # 48 optimiser steps
    SageTrainer(model=student, args=args, teacher_model=teacher, train_dataset=data).train()
    loss_after, agree_after = kd_and_agreement(student, teacher, data)
    assert loss_after < 0.5 * loss_before, (loss_before, loss_after)
    assert agree_after >= agree_before + 0.2 and agree_after >= 0.8, (agree_before, agree_after)


def _train_weights(tmp_path, name, data, **overrides):
    teacher = TeacherInterface(tiny_teacher("bert", num_layers=2, sharpen=10.0, dropout=0.0))
    student = SageStudentForSequenceClassification.from_teacher(teacher, num_layers=1)
    args = make_args(tmp_path / name, **overrides)
    trainer = SageTrainer(model=student, args=args, teacher_model=teacher, train_dataset=data)
    trainer.train()
    return {k: v.detach().clone() for k, v in student.state_dict().items()}, trainer


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    """8 x 1 and 4 x 2 (and a short last window: 20 examples) give the same updates."""
    data = tiny_dataset(20)
    big, _ = _train_weights(tmp_path, "big", data, per_device_train_batch_size=8, gradient_accumulation_steps=1,
                            num_train_epochs=2, optim="sgd", learning_rate=0.5, lr_scheduler_type="constant")
    acc, trainer = _train_weights(tmp_path, "acc", data, per_device_train_batch_size=4, gradient_accumulation_steps=2,
                                  num_train_epochs=2, optim="sgd", learning_rate=0.5, lr_scheduler_type="constant")
    assert trainer.state.global_step == 6
    for key in big:
        torch.testing.assert_close(acc[key], big[key], atol=2e-6, rtol=0, msg=key)


def test_cached_teacher_logits_give_the_same_training(tmp_path):
    data = tiny_dataset(32)
    teacher = TeacherInterface(tiny_teacher("bert", num_layers=2, sharpen=10.0, dropout=0.0))
    cached = cache_teacher_logits(teacher, data, batch_size=7)
    assert "teacher_logits" in cached.column_names
    # SGD: Adam's g/sqrt(v) would amplify float round-off of near-zero gradients into visible differences.
    sgd = dict(num_train_epochs=2, optim="sgd", learning_rate=0.5)
    online, _ = _train_weights(tmp_path, "online", data, **sgd)
    offline, _ = _train_weights(tmp_path, "cached", cached, **sgd)
    initial = SageStudentForSequenceClassification.from_teacher(teacher, num_layers=1).state_dict()
    assert any((online[k] - initial[k]).abs().max() > 1e-4 for k in online)  # training did move the weights
    for key in online:
        torch.testing.assert_close(offline[key], online[key], atol=1e-5, rtol=0, msg=key)


def test_cached_path_runs_no_teacher_forward(tmp_path):
    data = tiny_dataset(16)
    teacher = TeacherInterface(tiny_teacher("bert", num_layers=2))
    cached = cache_teacher_logits(teacher, data)
    calls = []
    trainer = SageTrainer(model=None, args=make_args(tmp_path), teacher_model=teacher, train_dataset=cached)
    trainer.teacher.logits_from_layer1 = lambda *a, **k: calls.append(1)  # would break the loss if ever called
    trainer.train()
    assert calls == []


def test_teacher_logit_cache_matches_teacher_forward():
    data = tiny_dataset(21)
    teacher = TeacherInterface(tiny_teacher("roberta"))
    logits = compute_teacher_logits(teacher, data, batch_size=4)
    one = SageDataCollator()([data[5]])
    with torch.no_grad():
        expected = teacher.model(input_ids=one["input_ids"], attention_mask=one["attention_mask"]).logits
    torch.testing.assert_close(logits[5:6], expected, atol=1e-5, rtol=0)


def test_inputs_embeds_batches_equal_input_ids_batches(tmp_path):
    teacher = TeacherInterface(tiny_teacher("distilbert", num_layers=2, sharpen=5.0))
    trainer = SageTrainer(args=make_args(tmp_path), teacher_model=teacher, train_dataset=tiny_dataset(8))
    batch = SageDataCollator()([tiny_dataset(8)[i] for i in range(8)])
    trainer.model.eval()
    with torch.no_grad():
        from_ids = trainer.compute_loss(trainer.model, dict(batch))
        embeds = {"inputs_embeds": teacher.layer1(batch["input_ids"], batch["attention_mask"]),
                  "attention_mask": batch["attention_mask"]}
        from_embeds = trainer.compute_loss(trainer.model, embeds)
    torch.testing.assert_close(from_ids, from_embeds)


def test_frozen_teacher_in_eval_mode_on_student_device(tmp_path):
    model = tiny_teacher("bert", num_layers=2)
    model.train()
    trainer = SageTrainer(args=make_args(tmp_path), teacher_model=model, train_dataset=tiny_dataset(8))
    trainer.train()
    assert not trainer.teacher.training
    assert all(not p.requires_grad for p in trainer.teacher.parameters())
    assert next(trainer.teacher.parameters()).device == next(trainer.model.parameters()).device
    assert next(trainer.teacher.parameters()).dtype == next(trainer.model.parameters()).dtype


def test_evaluation_reports_task_metric_and_agreement(tmp_path):
    teacher = tiny_teacher("bert", num_layers=2, sharpen=10.0)

    def accuracy(pred):
        return {"accuracy": float(np.mean(pred.predictions.argmax(-1) == pred.label_ids))}

    data = tiny_dataset(24)
    trainer = SageTrainer(args=make_args(tmp_path), teacher_model=teacher, train_dataset=data, eval_dataset=data,
                          compute_metrics=accuracy)
    metrics = trainer.evaluate()
    assert {"eval_loss", "eval_agreement", "eval_accuracy"} <= set(metrics)
    unlabelled = trainer.evaluate(data.remove_columns("label"))
    assert "eval_agreement" in unlabelled and "eval_accuracy" not in unlabelled


def test_extra_columns_are_reported_not_silently_dropped(tmp_path, caplog):
    data = tiny_dataset(8).add_column("sentence", ["some text"] * 8)
    data = data.add_column("teacher_logits", [[0.0, 0.0, 0.0]] * 8)
    trainer = SageTrainer(args=make_args(tmp_path), teacher_model=tiny_teacher("bert", num_layers=2),
                          train_dataset=data)
    with caplog.at_level(logging.WARNING, logger="sage_hf.trainer"):
        trainer.train()
    assert "['sentence']" in caplog.text  # named, and teacher_logits is kept


# ---- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"temperature": -1.0}, "temperature must be > 0"),
    ({"alpha_kd": 0.0, "alpha_hard": 0.0}, "alpha_kd and alpha_hard are both 0"),
    ({"kd_loss": "cosine"}, "Unknown kd_loss 'cosine'"),
    ({"interface_layer": -1}, "interface_layer must be >= 0"),
])
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_args(tmp_path, **kwargs)


def test_teacher_without_head_is_refused(tmp_path):
    from transformers import AutoModel


    with pytest.raises(ValueError, match="has no sequence-classification head"):
        SageTrainer(args=make_args(tmp_path), teacher_model=AutoModel.from_config(tiny_config("bert")))


def test_student_of_another_width_is_refused(tmp_path):
    narrow = SageStudentForSequenceClassification.from_teacher(tiny_teacher("bert"))
    from transformers import AutoModelForSequenceClassification, BertConfig

    wide = AutoModelForSequenceClassification.from_config(BertConfig(hidden_size=48, num_hidden_layers=2,
                                                                     num_attention_heads=4, intermediate_size=37,
                                                                     vocab_size=99, num_labels=3))
    message = r"student's hidden size \(32\) differs from the teacher's layer-1 width \(48\)"
    with pytest.raises(ValueError, match=message):
        SageTrainer(model=narrow, args=make_args(tmp_path), teacher_model=wide)


def test_batch_without_ids_or_embeds(tmp_path):
    trainer = SageTrainer(args=make_args(tmp_path), teacher_model=tiny_teacher("bert"))
    with pytest.raises(ValueError, match="A batch must carry 'input_ids' or 'inputs_embeds'"):
        trainer.compute_loss(trainer.model, {"attention_mask": torch.ones(2, 3, dtype=torch.long)})


def test_teacher_logits_with_wrong_class_count(tmp_path):
    trainer = SageTrainer(args=make_args(tmp_path), teacher_model=tiny_teacher("bert"))
    batch = {"input_ids": torch.randint(5, 99, (2, 4)), "attention_mask": torch.ones(2, 4, dtype=torch.long),
             "teacher_logits": torch.zeros(2, 5)}
    with pytest.raises(ValueError, match="teacher_logits have 5 classes but the student has num_labels=3"):
        trainer.compute_loss(trainer.model, batch)


def test_empty_dataset_is_refused(tmp_path):
    with pytest.raises(ValueError, match="The train dataset is empty"):
        SageTrainer(args=make_args(tmp_path), teacher_model=tiny_teacher("bert"),
                    train_dataset=tiny_dataset(4).select([]))


def test_only_the_writing_process_saves_training_args(tmp_path, monkeypatch):
    """Other ranks return from Trainer._save before the folder exists; they must not write into it."""
    trainer = SageTrainer(args=make_args(tmp_path), teacher_model=tiny_teacher("bert"))
    monkeypatch.setattr(SageTrainingArguments, "should_save", property(lambda self: False))
    folder = tmp_path / "out" / "checkpoint-1"
    trainer._save(str(folder))
    assert not folder.exists()
