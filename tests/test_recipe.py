"""Issue 4: recipes/run_glue_sage.py on a tiny local GLUE folder and a tiny base teacher."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, tiny_teacher, tiny_tokenizer

RECIPE = REPO / "recipes" / "run_glue_sage.py"


def load_recipe():
    spec = importlib.util.spec_from_file_location("run_glue_sage", RECIPE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def write_sst2(folder: Path, n_train=64, n_dev=32, seed=0):
    """SST-2 layout; the label is whether the sentence has more 'low' words (w5..w50) than 'high' ones."""
    g = torch.Generator().manual_seed(seed)
    (folder / "SST-2").mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("dev", n_dev)):
        rows = ["sentence\tlabel"]
        for _ in range(n):
            ids = torch.randint(5, 99, (int(torch.randint(4, 10, (1,), generator=g)),), generator=g).tolist()
            label = int(sum(i < 52 for i in ids) > len(ids) / 2)
            rows.append(" ".join(f"w{i}" for i in ids) + f"\t{label}")
        (folder / "SST-2" / f"{name}.tsv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    glue = write_sst2(root / "glue")
    base = root / "base"
    model = tiny_teacher("bert", num_layers=4, num_labels=2)
    model.save_pretrained(base)
    tiny_tokenizer(root).save_pretrained(base)
    return {"glue": glue, "base": base, "root": root}


def tiny_argv(setup, out, *extra):
    return ["--preset", "tiny", "--glue_dir", str(setup["glue"]), "--model_name_or_path", str(setup["base"]),
            "--output_dir", str(out), "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true",
            "--map_cache_dir", str(setup["root"] / "maps"), "--save_round_plots", "false", *extra]


def test_tiny_run_writes_student_results_and_reuses_teacher(tiny_setup, tmp_path, caplog):
    recipe = load_recipe()
    out = tmp_path / "run"
    metrics = recipe.main(tiny_argv(tiny_setup, out))
    assert {"eval_accuracy", "eval_agreement", "teacher_validation_accuracy", "sage_rounds"} <= set(metrics)
    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_accuracy"] == metrics["eval_accuracy"] and results["train_samples"] == 64
    student = out / "student"
    assert (student / "model.safetensors").is_file() and (student / "tokenizer_config.json").is_file()
    from transformers import AutoModelForSequenceClassification

    assert type(AutoModelForSequenceClassification.from_pretrained(student)).__name__ == "BertForSequenceClassification"
    from huggingface_hub import ModelCard

    card = ModelCard.load(student / "README.md")
    assert "sage" in card.data.tags and card.data.eval_results[0].metric_type == "accuracy"
    assert abs(card.data.eval_results[0].metric_value - metrics["eval_accuracy"]) < 1e-9
    assert "CPU" in card.text and str(metrics["sage_rounds"]) in card.text
    # same settings, fresh output: the teacher stage is not run again
    teacher_dirs = list(out.glob("teacher-*"))
    assert len(teacher_dirs) == 1
    import logging

    with caplog.at_level(logging.INFO, logger="run_glue_sage"):
        recipe.main(tiny_argv(tiny_setup, out, "--overwrite_output_dir", "true"))
    assert "Reusing the teacher fine-tuned earlier" in caplog.text


def test_resume_continues_from_the_last_checkpoint(tiny_setup, tmp_path, caplog):
    import logging

    recipe = load_recipe()
    out = tmp_path / "run"
    recipe.main(tiny_argv(tiny_setup, out, "--num_train_epochs", "1", "--agreement_threshold", "1.0"))
    assert (out / "checkpoint-16").is_dir()  # 64 real + 64 synthetic in batches of 8
    with caplog.at_level(logging.INFO):
        recipe.main(tiny_argv(tiny_setup, out, "--num_train_epochs", "2", "--agreement_threshold", "1.0"))
    assert "Resumed SAGE at round 1" in caplog.text
    state = json.loads((out / "checkpoint-32" / "trainer_state.json").read_text())
    assert state["global_step"] == 32  # 16 more steps on top of the checkpoint's 16


def test_config_file_with_flag_override(tiny_setup, tmp_path):
    recipe = load_recipe()
    cfg = tmp_path / "run.yaml"
    cfg.write_text("learning_rate: 0.003\ntemperature: 3.0\nanchor_policy: random\n")
    argv = ["--config", str(cfg)] + tiny_argv(tiny_setup, tmp_path / "o") + ["--temperature", "4.0"]
    _, _, training_args, _ = recipe.parse_args(argv)
    assert training_args.learning_rate == 0.003 and training_args.anchor_policy == "random"
    assert training_args.temperature == 4.0  # the flag wins over the file
    assert training_args.num_train_epochs == 2.0  # from the tiny preset


def run_error(argv):
    recipe = load_recipe()
    with pytest.raises((SystemExit, ValueError, FileNotFoundError)) as err:
        recipe.main(argv)
    return str(err.value)


def test_unknown_task_lists_the_valid_ones(tiny_setup, tmp_path):
    msg = run_error(tiny_argv(tiny_setup, tmp_path / "o", "--task_name", "sst3"))
    assert "Unknown GLUE task 'sst3'" in msg and "sst2" in msg and "rte" in msg


def test_glue_folder_without_the_task_names_the_path(tiny_setup, tmp_path):
    msg = run_error(tiny_argv(tiny_setup, tmp_path / "o", "--task_name", "rte"))
    assert str(tiny_setup["glue"] / "RTE") in msg and "--glue_dir" in msg


def test_custom_file_without_the_text_column(tiny_setup, tmp_path):
    f = tmp_path / "train.csv"
    f.write_text("text,label\nw5 w6,0\nw7 w8,1\n")
    msg = run_error(tiny_argv(tiny_setup, tmp_path / "o", "--train_file", str(f), "--text_column_names", "sentence"))
    assert "no text column 'sentence'" in msg and "columns found: text, label" in msg


def test_labels_outside_num_labels(tiny_setup, tmp_path):
    f = tmp_path / "train.csv"
    f.write_text("sentence,label\nw5 w6,0\nw7 w8,1\nw9 w10,7\n")
    msg = run_error(tiny_argv(tiny_setup, tmp_path / "o", "--train_file", str(f), "--validation_file", str(f)))
    assert "Label 7" in msg


def test_student_with_more_layers_than_the_teacher(tiny_setup, tmp_path):
    msg = run_error(tiny_argv(tiny_setup, tmp_path / "o", "--student_num_layers", "9"))
    assert "cannot be built from a teacher with 4 layers" in msg


def test_student_layers_out_of_range(tiny_setup, tmp_path):
    msg = run_error(tiny_argv(tiny_setup, tmp_path / "o", "--student_layers", "0,6"))
    assert "Student layer indices [6] are out of range" in msg


def test_push_to_hub_without_model_id(tiny_setup, tmp_path):
    msg = run_error(tiny_argv(tiny_setup, tmp_path / "o", "--push_to_hub", "true"))
    assert "--push_to_hub needs --hub_model_id" in msg


def test_config_file_with_an_unknown_key(tiny_setup, tmp_path):
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"learning_rate": 1e-4, "learning_rat": 1e-4}))
    msg = run_error(["--config", str(cfg)] + tiny_argv(tiny_setup, tmp_path / "o"))
    assert "Unknown key 'learning_rat' in config file" in msg


def test_output_dir_of_another_task(tiny_setup, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "sage_run.json").write_text(json.dumps({"task": "rte"}))
    msg = run_error(tiny_argv(tiny_setup, out))
    assert "holds a run of task 'rte', not 'sst2'" in msg and "--overwrite_output_dir" in msg


def test_two_cpu_processes_write_one_student(tiny_setup, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "recipes" / "accelerate_configs" / "multi_cpu.yaml"), str(RECIPE), *tiny_argv(tiny_setup, out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert log.count("Standard student written to") == 1  # rank 0 only
    state = json.loads(sorted(out.glob("checkpoint-*/trainer_state.json"))[-1].read_text())
    # (64 real + 64 synthetic) / (2 ranks x 8): 8 steps an epoch, where one process would take 16
    assert state["global_step"] == 8 * state["epoch"]
    assert (out / "student" / "model.safetensors").is_file()


def test_push_to_hub_uploads_student_and_card(tiny_setup, tmp_path, local_hub):
    recipe = load_recipe()
    repo = f"{local_hub.user}/tiny-sst2-sage"
    recipe.main(tiny_argv(tiny_setup, tmp_path / "o", "--push_to_hub", "true", "--hub_model_id", repo,
                          "--hub_token", local_hub.token))
    files = local_hub.files(repo)
    assert {"README.md", "config.json", "model.safetensors", "tokenizer_config.json"} <= set(files)
    assert all(local_hub.token.encode() not in blob for blob in local_hub.stored_objects())
    for path in (tmp_path / "o").rglob("*"):
        if path.is_file():
            assert local_hub.token.encode() not in path.read_bytes(), path
    from transformers import pipeline

    assert pipeline("text-classification", model=repo)(["w5 w6 w7"])[0]["label"] in ("negative", "positive")
