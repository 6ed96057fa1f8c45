"""The recipe's stages as a library: task data, tokenized splits, the teacher stage and the run folder."""

import json

import numpy as np
import pytest
from transformers import TrainingArguments

from sage_hf.data.stages import (
    load_task_data,
    prepare_output_dir,
    resolve_glue_dir,
    teacher_stage,
    tokenize_task,
)

from testing_utils import tiny_teacher, tiny_tokenizer, write_sst2


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    glue = write_sst2(root / "glue")
    base = root / "base"
    tiny_teacher("bert", num_layers=2, num_labels=2).save_pretrained(base)
    tokenizer = tiny_tokenizer(root)
    tokenizer.save_pretrained(base)
    return {"glue": glue, "base": base, "tokenizer": tokenizer}


def cpu_args(out, **kw):
    return TrainingArguments(output_dir=str(out), use_cpu=True, report_to=[], disable_tqdm=True,
                             dataloader_pin_memory=False, **kw)


def test_glue_task_data_knows_labels_splits_and_metrics(setup):
    data = load_task_data("SST-2", glue_dir=str(setup["glue"]))
    assert data.task_name == "sst2" and data.labels == ["negative", "positive"] and data.num_labels == 2
    assert data.eval_splits == ["validation"] and data.text_columns == ("sentence",)
    assert data.compute_metrics()((np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([1, 1]))) == {"accuracy": 0.5}


def test_subsample_is_seeded_and_recorded(setup):
    first, second = (load_task_data("sst2", glue_dir=str(setup["glue"])) for _ in range(2))
    for data in (first, second):
        data.subsample(max_train_samples=10, max_eval_samples=5, seed=3)
    assert first.raw["train"]["idx"] == second.raw["train"]["idx"] and len(first.raw["train"]) == 10
    assert first.raw["validation"]["idx"] == list(range(5))
    assert first.source["max_train_samples"] == 10 and first.source["seed"] == 3


def test_custom_files_give_label_names_or_regression(tmp_path):
    f = tmp_path / "train.csv"
    f.write_text("text,label\nw5 w6,pos\nw7 w8,neg\n")
    data = load_task_data(train_file=str(f), validation_file=str(f))
    assert data.task_name is None and data.labels == ["neg", "pos"] and data.text_columns == ("text",)
    g = tmp_path / "scores.csv"
    g.write_text("text,label\nw5 w6,0.5\nw7 w8,3.5\n")
    assert load_task_data(train_file=str(g)).labels is None  # regression: one output


def test_tokenized_splits_hold_only_model_inputs_and_labels(setup):
    data = load_task_data("sst2", glue_dir=str(setup["glue"]))
    tokenized = tokenize_task(data, setup["tokenizer"], max_seq_length=6)
    assert set(tokenized["train"].column_names) == {"input_ids", "token_type_ids", "attention_mask", "label"}
    assert max(len(ids) for ids in tokenized["train"]["input_ids"]) == 6
    longer = tokenize_task(data, setup["tokenizer"], max_seq_length=16)  # another length: another cache entry
    assert max(len(ids) for ids in longer["train"]["input_ids"]) > 6


def test_glue_dir_flag_wins_over_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GLUE_DIR", "/from/env")
    assert resolve_glue_dir("/from/flag") == "/from/flag"
    assert resolve_glue_dir(None) == "/from/env"


def test_teacher_stage_fine_tunes_once_and_reuses_the_teacher(setup, tmp_path):
    data = load_task_data("sst2", glue_dir=str(setup["glue"]))
    tokenized = tokenize_task(data, setup["tokenizer"], max_seq_length=16)
    kwargs = dict(base_model=str(setup["base"]), max_seq_length=16, epochs=1.0, batch_size=16)
    first = teacher_stage(data, tokenized, setup["tokenizer"], cpu_args(tmp_path), **kwargs)
    assert first.folder.parent == tmp_path and "teacher_validation_accuracy" in first.results
    assert json.loads((first.folder / "teacher_results.json").read_text()) == first.results
    again = teacher_stage(data, tokenized, setup["tokenizer"], cpu_args(tmp_path), **kwargs)
    assert again.folder == first.folder and again.results == first.results
    other = teacher_stage(data, tokenized, setup["tokenizer"], cpu_args(tmp_path), **{**kwargs, "epochs": 2.0})
    assert other.folder != first.folder  # other settings, another teacher


def test_an_interrupted_teacher_stage_continues_from_its_checkpoint(setup, tmp_path, monkeypatch):
    import torch
    from transformers import Trainer

    import sage_hf.data.stages as stages

    data = load_task_data("sst2", glue_dir=str(setup["glue"]))
    tokenized = tokenize_task(data, setup["tokenizer"], max_seq_length=16)
    kwargs = dict(base_model=str(setup["base"]), max_seq_length=16, epochs=2.0, batch_size=16, checkpoint_steps=3)
    whole = teacher_stage(data, tokenized, setup["tokenizer"], cpu_args(tmp_path / "whole"), **kwargs)
    assert not (whole.folder / "run").exists()  # checkpoints go once the teacher is saved

    class Interrupted(Trainer):
        def _save_checkpoint(self, *args, **kw):
            super()._save_checkpoint(*args, **kw)
            raise KeyboardInterrupt  # the user's Ctrl-C, just after the first checkpoint

    steps_seen = []

    class Recording(Trainer):
        def training_step(self, *args, **kw):
            steps_seen.append(self.state.global_step)
            return super().training_step(*args, **kw)

    monkeypatch.setattr(stages, "Trainer", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        teacher_stage(data, tokenized, setup["tokenizer"], cpu_args(tmp_path / "cut"), **kwargs)
    monkeypatch.setattr(stages, "Trainer", Recording)
    resumed = teacher_stage(data, tokenized, setup["tokenizer"], cpu_args(tmp_path / "cut"), **kwargs)
    assert steps_seen[0] == 3 and len(steps_seen) == 8 - 3  # 64 examples / 16 x 2 epochs: steps 4..8 only
    for key in ("teacher_validation_loss", "teacher_validation_accuracy"):
        assert resumed.results[key] == pytest.approx(whole.results[key], abs=1e-6)
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)


def test_a_given_teacher_must_have_the_task_labels(setup, tmp_path):
    three = tmp_path / "three"
    tiny_teacher("bert", num_layers=2, num_labels=3).save_pretrained(three)
    data = load_task_data("sst2", glue_dir=str(setup["glue"]))
    with pytest.raises(ValueError, match="has 3 labels but the task has 2"):
        teacher_stage(data, None, setup["tokenizer"], cpu_args(tmp_path), base_model="unused", max_seq_length=16,
                      teacher_model=str(three))


def test_output_dir_resumes_refuses_another_task_and_starts_over(tmp_path):
    out = tmp_path / "run"
    assert prepare_output_dir(str(out), "sst2") is None
    (out / "checkpoint-8").mkdir()
    assert prepare_output_dir(str(out), "sst2") == str(out / "checkpoint-8")
    assert prepare_output_dir(str(out), "sst2", resume_from_checkpoint="mine") == "mine"
    with pytest.raises(SystemExit, match="holds a run of task 'sst2', not 'rte'.*--overwrite_output_dir"):
        prepare_output_dir(str(out), "rte")
    assert prepare_output_dir(str(out), "rte", overwrite=True) is None
    assert not (out / "checkpoint-8").exists()
