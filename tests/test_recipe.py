"""recipes/run_glue_sage.py run as a user runs it, on a tiny local GLUE folder and a tiny base teacher.

In-process runs go through `runpy` (a subprocess per test would re-import torch each time); the multi-process
launches are real subprocesses.
"""

import json
import logging
import os
import runpy
import subprocess
import sys

import pytest

from testing_utils import REPO, tiny_teacher, tiny_tokenizer, write_sst2

RECIPE = REPO / "recipes" / "run_glue_sage.py"


def run_recipe(argv, monkeypatch) -> None:
    """`python recipes/run_glue_sage.py ARGV`, in this process."""
    monkeypatch.setattr(sys, "argv", [str(RECIPE), *map(str, argv)])
    runpy.run_path(str(RECIPE), run_name="__main__")


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    glue = write_sst2(root / "glue")
    base = root / "base"
    model = tiny_teacher("bert", num_layers=4, num_labels=2)
    model.save_pretrained(base)
    tiny_tokenizer(root).save_pretrained(base)
    return {"glue": glue, "base": base, "root": root}


def tiny_argv(setup, out, *extra, use_cpu=True):
    return ["--preset", "tiny", "--glue_dir", str(setup["glue"]), "--model_name_or_path", str(setup["base"]),
            "--output_dir", str(out), *(["--use_cpu", "true"] if use_cpu else []), "--report_to", "none",
            "--disable_tqdm", "true", "--map_cache_dir", str(setup["root"] / "maps"), "--save_round_plots", "false",
            *extra]


def test_tiny_run_writes_student_results_and_reuses_teacher(tiny_setup, tmp_path, caplog, monkeypatch):
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        run_recipe(tiny_argv(tiny_setup, out), monkeypatch)
    metrics = json.loads((out / "all_results.json").read_text())
    assert {"eval_accuracy", "eval_agreement", "teacher_validation_accuracy", "sage_rounds"} <= set(metrics)
    assert metrics["train_samples"] == 64
    # the log says where the teacher and the results went
    teacher_dirs = list(out.glob("teacher-*"))
    assert f"Fine-tuned teacher saved to {teacher_dirs[0]}" in caplog.text
    assert f"Metrics written to {out / 'all_results.json'}" in caplog.text
    student = out / "student"
    assert (student / "model.safetensors").is_file() and (student / "tokenizer_config.json").is_file()
    from transformers import AutoModelForSequenceClassification

    exported = AutoModelForSequenceClassification.from_pretrained(student)
    assert type(exported).__name__ == "BertForSequenceClassification"
    from huggingface_hub import ModelCard

    card = ModelCard.load(student / "README.md")
    assert "sage" in card.data.tags and card.data.eval_results[0].metric_type == "accuracy"
    assert abs(card.data.eval_results[0].metric_value - metrics["eval_accuracy"]) < 1e-9
    assert "CPU" in card.text and str(metrics["sage_rounds"]) in card.text
    # same settings, fresh output: the teacher stage is not run again
    assert len(teacher_dirs) == 1
    caplog.clear()
    with caplog.at_level(logging.INFO):
        run_recipe(tiny_argv(tiny_setup, out, "--overwrite_output_dir", "true"), monkeypatch)
    assert "Reusing the teacher fine-tuned earlier" in caplog.text


def test_resume_continues_from_the_last_checkpoint(tiny_setup, tmp_path, caplog, monkeypatch):
    out = tmp_path / "run"
    run_recipe(tiny_argv(tiny_setup, out, "--num_train_epochs", "1", "--agreement_threshold", "1.0"), monkeypatch)
    assert (out / "checkpoint-16").is_dir()  # 64 real + 64 synthetic in batches of 8
    with caplog.at_level(logging.INFO):
        run_recipe(tiny_argv(tiny_setup, out, "--num_train_epochs", "2", "--agreement_threshold", "1.0"), monkeypatch)
    assert "Resumed SAGE at round 1" in caplog.text
    state = json.loads((out / "checkpoint-32" / "trainer_state.json").read_text())
    assert state["global_step"] == 32  # 16 more steps on top of the checkpoint's 16


def test_config_file_with_flag_override(tiny_setup, tmp_path):
    parse_args = runpy.run_path(str(RECIPE))["parse_args"]  # parsing only: no run
    cfg = tmp_path / "run.yaml"
    cfg.write_text("learning_rate: 0.003\ntemperature: 3.0\nanchor_policy: random\n")
    argv = ["--config", str(cfg)] + tiny_argv(tiny_setup, tmp_path / "o") + ["--temperature", "4.0"]
    _, _, training_args, _ = parse_args(argv)
    assert training_args.learning_rate == 0.003 and training_args.anchor_policy == "random"
    assert training_args.temperature == 4.0  # the flag wins over the file
    assert training_args.num_train_epochs == 2.0  # from the tiny preset


@pytest.fixture
def run_error(monkeypatch):
    def run(argv):
        with pytest.raises((SystemExit, ValueError, FileNotFoundError)) as err:
            run_recipe(argv, monkeypatch)
        return str(err.value)

    return run


def test_unknown_task_lists_the_valid_ones(tiny_setup, tmp_path, run_error):
    msg = run_error(tiny_argv(tiny_setup, tmp_path / "o", "--task_name", "sst3"))
    assert "Unknown GLUE task 'sst3'" in msg and "sst2" in msg and "rte" in msg


def test_glue_folder_without_the_task_names_the_path(tiny_setup, tmp_path, run_error):
    msg = run_error(tiny_argv(tiny_setup, tmp_path / "o", "--task_name", "rte"))
    assert str(tiny_setup["glue"] / "RTE") in msg and "--glue_dir" in msg


def test_custom_file_without_the_text_column(tiny_setup, tmp_path, run_error):
    f = tmp_path / "train.csv"
    f.write_text("text,label\nw5 w6,0\nw7 w8,1\n")
    msg = run_error(tiny_argv(tiny_setup, tmp_path / "o", "--train_file", str(f), "--text_column_names", "sentence"))
    assert "no text column 'sentence'" in msg and "columns found: text, label" in msg


def test_labels_outside_num_labels(tiny_setup, tmp_path, run_error):
    f = tmp_path / "train.csv"
    f.write_text("sentence,label\nw5 w6,0\nw7 w8,1\nw9 w10,7\n")
    msg = run_error(tiny_argv(tiny_setup, tmp_path / "o", "--train_file", str(f), "--validation_file", str(f)))
    assert "Label 7" in msg


def test_student_with_more_layers_than_the_teacher(tiny_setup, tmp_path, run_error):
    msg = run_error(tiny_argv(tiny_setup, tmp_path / "o", "--student_num_layers", "9"))
    assert "cannot be built from a teacher with 4 layers" in msg


def test_student_layers_out_of_range(tiny_setup, tmp_path, run_error):
    msg = run_error(tiny_argv(tiny_setup, tmp_path / "o", "--student_layers", "0,6"))
    assert "Student layer indices [6] are out of range" in msg


def test_push_to_hub_without_model_id(tiny_setup, tmp_path, run_error):
    msg = run_error(tiny_argv(tiny_setup, tmp_path / "o", "--push_to_hub", "true"))
    assert "--push_to_hub needs --hub_model_id" in msg


def test_config_file_with_an_unknown_key(tiny_setup, tmp_path, run_error):
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"learning_rate": 1e-4, "learning_rat": 1e-4}))
    msg = run_error(["--config", str(cfg)] + tiny_argv(tiny_setup, tmp_path / "o"))
    assert "Unknown key 'learning_rat' in config file" in msg


def test_output_dir_of_another_task(tiny_setup, tmp_path, run_error):
    out = tmp_path / "o"
    out.mkdir()
    (out / "sage_run.json").write_text(json.dumps({"task": "rte"}))
    msg = run_error(tiny_argv(tiny_setup, out))
    assert "holds a run of task 'rte', not 'sst2'" in msg and "--overwrite_output_dir" in msg


LAUNCHERS = {  # the README's multi-process commands, as written there (no --use_cpu)
    "accelerate_config": ["-m", "accelerate.commands.launch", "--config_file",
                          str(REPO / "recipes" / "accelerate_configs" / "multi_cpu.yaml")],
    "torchrun": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    "accelerate_flags": ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
                         "1", "--mixed_precision", "no", "--dynamo_backend", "no"],
}


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_two_cpu_processes_are_one_run_writing_one_student(tiny_setup, tmp_path, launcher):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, *LAUNCHERS[launcher], str(RECIPE), *tiny_argv(tiny_setup, out, use_cpu=False)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert log.count("World size 2: 2 processes") == 1  # logged by rank 0
    assert "parallel_mode != ParallelMode.DISTRIBUTED" not in log
    assert log.count("Standard student written to") == 1  # rank 0 only
    assert log.count("Teacher stage: fine-tuning") == 1  # one teacher, trained by both ranks together
    state = json.loads(sorted(out.glob("checkpoint-*/trainer_state.json"))[-1].read_text())
    # (64 real + 64 synthetic) / (2 ranks x 8): 8 steps an epoch, where one process would take 16
    assert state["global_step"] == 8 * state["epoch"]
    assert (out / "student" / "model.safetensors").is_file()
    # no accelerator: nothing pinned; the Trainer sees no column its model does not take
    assert "pin_memory" not in log and "have been ignored" not in log


def test_launched_processes_that_cannot_be_one_run_are_refused(tiny_setup, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, *LAUNCHERS["torchrun"], str(RECIPE),
           *tiny_argv(tiny_setup, tmp_path / "o", "--use_cpu", "false", use_cpu=False)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert result.returncode != 0
    assert "2 processes were launched but TrainingArguments is not distributed" in result.stdout + result.stderr


def test_help_lists_recipe_and_sage_arguments_before_the_trainer_ones_with_preset_values(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_recipe(["--help"], monkeypatch)
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    groups = [text.index(title) for title in ("Teacher and student", "Preset, data and output folder",
                                               "SAGE distillation", "Training loop (transformers.TrainingArguments)")]
    assert groups == sorted(groups)
    sage_flag, trainer_flag = text.index("--temperature TEMPERATURE"), text.index("--learning_rate LEARNING_RATE")
    assert groups[2] < sage_flag < groups[3] < trainer_flag
    flat = " ".join(text.split())
    assert "(default by --preset: quick 2000, full None, tiny 64; library default None)" in flat
    assert "(default by --preset: quick 3.0, full 10.0, tiny 2.0; library default 3.0)" in flat  # num_train_epochs
    assert "--config" in text and "(default: outputs/run_glue_sage)" in flat


def test_card_names_the_teacher_fine_tuned_in_the_run_and_its_hub_base(tiny_setup, tmp_path, local_hub, monkeypatch):
    """The teacher loaded from a Hub base and fine-tuned here is the run's teacher folder; the base is its lineage."""
    from huggingface_hub import HfApi, ModelCard

    base_id = f"{local_hub.user}/tiny-bert-base"
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.token)
    api.create_repo(base_id)
    api.upload_folder(folder_path=str(tiny_setup["base"]), repo_id=base_id)
    out = tmp_path / "run"
    argv = tiny_argv(tiny_setup, out)
    argv[argv.index("--model_name_or_path") + 1] = base_id
    run_recipe(argv, monkeypatch)
    teacher = next(out.glob("teacher-*")).name
    card = ModelCard.load(out / "student" / "README.md")
    assert card.data.base_model == base_id
    assert f"- **Teacher:** `{teacher}` (fine-tuned from [{base_id}](" in card.text
    assert f"**Teacher:** [{base_id}]" not in card.text
    assert "# tiny-bert-base-sage-sst2" in card.text  # the model is still named after the base, not a hash folder


def test_push_to_hub_uploads_student_and_card(tiny_setup, tmp_path, local_hub, monkeypatch):
    repo = f"{local_hub.user}/tiny-sst2-sage"
    run_recipe(tiny_argv(tiny_setup, tmp_path / "o", "--push_to_hub", "true", "--hub_model_id", repo,
                         "--hub_token", local_hub.token), monkeypatch)
    files = local_hub.files(repo)
    assert {"README.md", "config.json", "model.safetensors", "tokenizer_config.json"} <= set(files)
    assert all(local_hub.token.encode() not in blob for blob in local_hub.stored_objects())
    for path in (tmp_path / "o").rglob("*"):
        if path.is_file():
            assert local_hub.token.encode() not in path.read_bytes(), path
    from transformers import pipeline

    assert pipeline("text-classification", model=repo)(["w5 w6 w7"])[0]["label"] in ("negative", "positive")
