"""Model cards: a tiny SAGE run, exported and carded, must read back through huggingface_hub's own parser."""

from __future__ import annotations

import dataclasses
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from transformers import BertTokenizer

from sage_hf import (
    SageStudentForSequenceClassification,
    SageTrainer,
    SageTrainingArguments,
    TeacherInterface,
    export_student,
)
from sage_hf.publishing.card import build_card_data, citation, render_model_card
from sage_hf.publishing.card_data import ModelCardCallback, SageModelCardData, map_name
from sage_hf.publishing.speed import measure_cpu_speed
from sage_hf.publishing.training_curve import plot_training_curve

from testing_utils import tiny_dataset, tiny_teacher, tiny_tokenizer

TOKEN = "hf_secretAbCdEfGhIjKlMnOpQrStUvWxYz0123"
TEACHER_ID = "sage-tests/tiny-bert-teacher"
DATASET_ID = "sage-tests/tiny-topics"
TEXTS = ["w5 w6 w7 w8", "w9 w10", "w11 w12 w13 w14 w15 w16", "w20 w21 w22"]


def word_tokenizer(tmp):
    """conftest's tiny_tokenizer passes `vocab_file=`, which transformers 5 ignores (every word becomes [UNK]);
    `vocab=` reads the file, so decoded synthetic examples read as words."""
    tiny_tokenizer(tmp)  # writes vocab.txt
    return BertTokenizer(vocab=str(tmp / "vocab.txt"), do_lower_case=True)


def accuracy(pred) -> dict[str, float]:
    return {"accuracy": float(np.mean(pred.predictions.argmax(-1) == pred.label_ids))}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny 2-epoch SAGE run, exported and carded; shared by the tests below to keep them fast."""
    tmp = tmp_path_factory.mktemp("card")
    model = tiny_teacher("bert", num_layers=2, sharpen=20.0, dropout=0.0)
    model.config._name_or_path = TEACHER_ID
    model.config.id2label = {0: "sports", 1: "politics", 2: "science"}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    teacher = TeacherInterface(model)
    student = SageStudentForSequenceClassification.from_teacher(teacher, num_layers=1, init="random")
    tokenizer = word_tokenizer(tmp)
    assert tokenizer.decode(tokenizer("w5 w6")["input_ids"], skip_special_tokens=True) == "w5 w6"
    data = tiny_dataset(96)
    args = SageTrainingArguments(
        output_dir=str(tmp / "out"), per_device_train_batch_size=16, num_train_epochs=2, learning_rate=2e-3,
        report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no", logging_strategy="steps",
        logging_steps=2, eval_strategy="epoch", seed=0, data_seed=0, reducer="pca", n_neighbors=10, sample_neighbors=5,
        map_cache_dir=str(tmp / "maps"), save_round_plots=True, decode_examples=2, agreement_threshold=1.0,
        hub_token=TOKEN)
    trainer = SageTrainer(model=student, args=args, teacher_model=teacher, train_dataset=data, eval_dataset=data,
                          processing_class=tokenizer, compute_metrics=accuracy)
    trainer.train()
    metrics = trainer.evaluate()
    with torch.no_grad():
        batch = trainer.data_collator([{k: data[i][k] for k in ("input_ids", "attention_mask")} for i in range(96)])
        teacher_preds = teacher(batch["input_ids"], batch["attention_mask"]).argmax(-1).numpy()
    teacher_accuracy = float(np.mean(teacher_preds == np.array(data["label"])))

    folder = tmp / "student"
    exported = export_student(trainer.model, trainer.teacher, folder, tokenizer=tokenizer)
    threads = torch.get_num_threads()
    speed = measure_cpu_speed(exported, teacher, tokenizer, TEXTS, batch_sizes=(1, 4), repeats=3, num_threads=1)
    assert torch.get_num_threads() == threads
    card_data = build_card_data(
        trainer, task_name="topics", dataset_id=DATASET_ID, dataset_name="Tiny Topics", metrics=metrics,
        teacher_metrics={"accuracy": teacher_accuracy}, subsampled="96 training examples reused as validation",
        speed=speed, model_id="sage-tests/tiny-sage-student", license="apache-2.0")
    card = render_model_card(card_data, folder)
    return {"trainer": trainer, "metrics": metrics, "exported": exported, "teacher": teacher, "speed": speed,
            "card_data": card_data, "card": card, "folder": folder, "tokenizer": tokenizer,
            "text": (folder / "README.md").read_text(encoding="utf-8")}


def test_metadata_reads_back_through_huggingface_hub(run):
    loaded = ModelCard.load(run["folder"] / "README.md")
    data = loaded.data
    assert data.base_model == TEACHER_ID
    assert {"sage", "knowledge-distillation", "generated_from_trainer", "topics"} <= set(data.tags)
    assert data.library_name == "transformers" and data.pipeline_tag == "text-classification"
    assert data.license == "apache-2.0" and data.datasets == [DATASET_ID]
    assert data.model_name == "tiny-sage-student"
    results = {r.metric_type: r for r in data.eval_results}
    assert set(results) == {"accuracy"}  # agreement with the teacher is not a task metric
    acc = results["accuracy"]
    assert acc.task_type == "text-classification"
    assert (acc.dataset_type, acc.dataset_name, acc.dataset_split) == (DATASET_ID, "Tiny Topics", "validation")
    assert acc.metric_value == pytest.approx(run["metrics"]["eval_accuracy"])


def test_parameter_counts_describe_the_exported_student(run):
    card_data: SageModelCardData = run["card_data"]
    assert card_data.student_params == sum(p.numel() for p in run["exported"].parameters())
    assert card_data.teacher_params == sum(p.numel() for p in run["teacher"].model.parameters())
    assert card_data.student_params < card_data.teacher_params
    assert (card_data.student_layers, card_data.teacher_layers) == (1, 2)
    assert card_data.architecture == "BertForSequenceClassification"
    assert f"{card_data.student_params:,}" in run["text"] and f"{card_data.teacher_params:,}" in run["text"]


def test_pictures_are_written_and_referenced_relatively(run):
    folder, text = run["folder"], run["text"]
    for name in ("training_curve.png", "loss_map.png"):
        assert (folder / name).stat().st_size > 1000
        assert f"]({name})" in text
    assert run["card_data"].loss_map_source.endswith("round_02.png")


def test_training_curve_needs_something_logged(tmp_path):
    assert plot_training_curve([{"train_runtime": 1.0, "epoch": 1.0}], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    history = [{"sage/agreement": 0.4, "epoch": 0.0}, {"loss": 0.9, "epoch": 0.5}, {"loss": 0.5, "epoch": 1.0},
               {"eval_loss": 0.6, "eval_accuracy": 0.7, "eval_runtime": 3.0, "epoch": 1.0}]
    assert plot_training_curve(history, tmp_path / "curve.png").stat().st_size > 1000


def test_body_reports_rounds_settings_and_citation(run):
    text, trainer = run["text"], run["trainer"]
    engine = trainer.sage_engine
    assert f"**{engine.round} SAGE round(s) ran. Stop reason:** {engine.stop_reason}" in text
    assert engine.stop_reason.startswith("epoch limit reached")
    # the default synthesis ('swap') reads no map point, so the run fitted none, whatever `reducer` says
    assert "| `reducer` | none fitted (synthesis='swap' uses no map) |" in text
    assert "| `synthesis_mode` | augment |" in text and "Losses of the last round" in text
    assert "| `synthetic_count` | 96 |" in text and "| `temperature` | 2.0 |" in text
    for h in engine.history:  # one table row per round: round, epoch, agreement, mean loss
        assert f"| {h['round']} | {h['epoch']:.2f} | {h['agreement']:.4f} | {h['mean_loss']:.4f} |" in text
    decoded = engine.history[-1]["decoded"]
    assert decoded and re.match(r"'w\d+.*' => '.*w\d+", decoded[0]) and decoded[0] in text
    assert "> **Subsampled:** 96 training examples reused as validation" in text
    assert "| Accuracy |" in text and "| Agreement with teacher |" in text
    assert citation(SageTrainer._paper) in text and "2508.14783" in text
    assert "Synthetic Adaptive Guided Embeddings ({SAGE}): A Novel Knowledge Distillation Method" in text
    assert "## Intended uses & limitations" in text and "inherits the teacher's errors" in text


def test_measure_cpu_speed_returns_positive_rates(run):
    speed = run["speed"]
    assert {"student", "teacher", "speedup", "seq_len", "threads", "repeats"} <= set(speed)
    assert (speed["threads"], speed["repeats"]) == (1, 3)
    for key in ("student", "teacher", "speedup"):
        assert set(speed[key]) == {1, 4} and all(v > 0 for v in speed[key].values())
    assert speed["speedup"][4] == pytest.approx(speed["student"][4] / speed["teacher"][4])
    assert "| 4 |" in run["text"] and "Speed-up" in run["text"]
    assert run["teacher"].model.training is False  # measurement leaves the models as it found them
    with pytest.raises(ValueError, match="does not read token ids"):  # the headless student is not what users run
        measure_cpu_speed(run["trainer"].model, run["teacher"], run["tokenizer"], TEXTS, batch_sizes=(1,), repeats=1)


def test_card_never_contains_the_hub_token(run):
    assert run["trainer"].args.hub_token == TOKEN
    assert TOKEN not in run["text"] and TOKEN not in str(run["card_data"])
    assert not re.search(r"hf_[A-Za-z0-9]{30,}", run["text"])


def test_token_like_strings_are_redacted_at_render(run, tmp_path):
    leaky = dataclasses.replace(run["card_data"], intended_use=f"Use it with token {TOKEN}.")
    card = render_model_card(leaky, tmp_path)
    assert TOKEN not in str(card) and TOKEN not in (tmp_path / "README.md").read_text()
    assert "Use it with token <redacted>." in str(card)


def test_local_teacher_path_is_not_published_as_base_model(run, tmp_path):
    trainer = run["trainer"]
    config = trainer.teacher.config
    saved = config._name_or_path
    config._name_or_path = str(tmp_path)  # an existing local folder
    try:
        data = build_card_data(trainer, task_name="topics", dataset_id=None, dataset_name=None, metrics={},
                               student_model=run["exported"])
    finally:
        config._name_or_path = saved
    assert data.base_model is None and str(tmp_path) not in data.teacher_name
    card = render_model_card(data, tmp_path / "card")
    assert ModelCard.load(tmp_path / "card" / "README.md").data.base_model is None
    assert str(tmp_path) not in str(card)


def test_plain_distillation_run_gets_a_card_without_rounds(tmp_path):
    teacher = TeacherInterface(tiny_teacher("bert", num_layers=2, dropout=0.0))
    student = SageStudentForSequenceClassification.from_teacher(teacher, num_layers=1)
    args = SageTrainingArguments(output_dir=str(tmp_path / "out"), sage=False, num_train_epochs=1, report_to=[],
                                 use_cpu=True, disable_tqdm=True, save_strategy="no", logging_strategy="epoch",
                                 hidden_loss="none")
    trainer = SageTrainer(model=student, args=args, teacher_model=teacher, train_dataset=tiny_dataset(32))
    trainer.train()
    data = build_card_data(trainer, task_name="topics", dataset_id=DATASET_ID, dataset_name=None,
                           metrics={"eval_accuracy": 0.5, "eval_runtime": 1.0}, base_model="owner/teacher")
    render_model_card(data, tmp_path / "card")
    text = (tmp_path / "card" / "README.md").read_text()
    loaded = ModelCard.load(tmp_path / "card" / "README.md").data
    assert loaded.base_model == "owner/teacher" and [r.metric_type for r in loaded.eval_results] == ["accuracy"]
    assert data.rounds_run == 0 and "Plain logit distillation" in text and "### Rounds" not in text
    assert not (tmp_path / "card" / "loss_map.png").exists() and "loss_map.png" not in text
    assert "sage" not in loaded.tags and "knowledge-distillation" in loaded.tags
    assert "sage" not in data.model_name.lower() and "SAGE" not in text and "## Citation" not in text
    assert "| `hidden_loss` | none |" in text and "| `alpha_hidden`" not in text and "| `hidden_layer_map`" not in text


def test_card_says_when_hidden_states_were_matched_and_with_which_layers(tmp_path):
    teacher = TeacherInterface(tiny_teacher("bert", num_layers=2, dropout=0.0))
    student = SageStudentForSequenceClassification.from_teacher(teacher, num_layers=1)
    args = SageTrainingArguments(output_dir=str(tmp_path / "out"), sage=False, num_train_epochs=1, report_to=[],
                                 use_cpu=True, disable_tqdm=True, save_strategy="no", logging_strategy="epoch")
    assert (args.hidden_loss, args.alpha_hidden) == ("auto", 12.0)  # the defaults: "mse" on this classifier
    trainer = SageTrainer(model=student, args=args, teacher_model=teacher, train_dataset=tiny_dataset(32))
    trainer.train()
    data = build_card_data(trainer, task_name="topics", dataset_id=DATASET_ID, dataset_name=None,
                           metrics={"eval_accuracy": 0.5}, base_model="owner/teacher")
    render_model_card(data, tmp_path / "card")
    text = (tmp_path / "card" / "README.md").read_text()
    assert data.hidden_loss == "mse" and "by logit and hidden-state distillation" in text
    assert "Distillation of the teacher's logits and hidden states, on the real training examples only" in text
    assert "| `hidden_loss` | mse (auto) |" in text and "| `alpha_hidden` | 12.0 |" in text
    assert "| `hidden_layer_map` | 1:2 |" in text  # the map the loss used: student layer 1 -> teacher layer 2


def test_card_data_is_recorded_during_training(run):
    trainer = run["trainer"]
    recorded = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, ModelCardCallback)).card_data
    engine = trainer.sage_engine
    assert [(r["round"], r["epoch"], r["agreement"], r["mean_loss"], r["synthetic_count"]) for r in recorded.rounds] \
        == [(h["round"], h["epoch"], h["agreement"], h["mean_loss"], h["synthetic_count"]) for h in engine.history]
    seconds = [sum(h["seconds"].values()) for h in engine.history]
    assert [r["seconds"] for r in recorded.rounds] == pytest.approx(seconds)
    assert (recorded.rounds_run, recorded.stop_reason) == (engine.round, engine.stop_reason)
    assert recorded.metrics["accuracy"] == pytest.approx(run["metrics"]["eval_accuracy"])  # the last evaluation
    assert recorded.paper == SageTrainer._paper and recorded.synthesis_mode == "augment"


def test_augment_mode_says_real_plus_synthetic_and_replace_mode_synthetic_only(run, tmp_path):
    text = run["text"]
    assert "each epoch the student trains on synthetic examples" not in text
    assert "each epoch the student trains on the real examples plus synthetic examples" in text
    assert "The next epoch trains on the real examples together with that synthetic set." in text
    render_model_card(dataclasses.replace(run["card_data"], synthesis_mode="replace"), tmp_path)
    replaced = (tmp_path / "README.md").read_text()
    assert "each epoch the student trains on synthetic examples" in replaced
    assert "The next epoch trains on that synthetic set alone" in replaced
    render_model_card(dataclasses.replace(run["card_data"], synthesis_mode="mix"), tmp_path / "mix")
    mixed = (tmp_path / "mix" / "README.md").read_text()
    assert "every batch of real examples also carries synthetic examples" in mixed
    assert "every batch of real examples carries its share of that synthetic set" in mixed
    assert "trains on the real examples plus synthetic examples" not in mixed
    assert "SAGE runs a round before the first epoch and after each epoch:" in text
    render_model_card(dataclasses.replace(run["card_data"], synthesis_start_epoch=1), tmp_path / "late")
    late = (tmp_path / "late" / "README.md").read_text()
    assert ("SAGE runs a round after epoch 1 (the epochs before it train on the real examples only) and after each "
            "later epoch:") in late


def test_teacher_is_the_fine_tuned_model_and_its_base_is_named_apart(run, tmp_path):
    """A teacher fine-tuned from a base model: the card names the teacher (a local folder here), never the base."""
    base = "sentence-transformers/all-MiniLM-L6-v2"
    folder = tmp_path / "teacher-3f2a"
    folder.mkdir()
    data = build_card_data(run["trainer"], task_name="topics", dataset_id=None, dataset_name=None, metrics={},
                           student_model=run["exported"], teacher_name=str(folder), base_model=base)
    card = render_model_card(data, tmp_path / "card")
    text = (tmp_path / "card" / "README.md").read_text()
    assert (data.teacher_name, data.teacher_id, data.teacher_base_model) == ("teacher-3f2a", None, base)
    assert f"- **Teacher:** `teacher-3f2a` (fine-tuned from [{base}](https://huggingface.co/{base}))" in text
    assert f"**Teacher:** [{base}]" not in text and str(tmp_path) not in str(card)
    assert ModelCard.load(tmp_path / "card" / "README.md").data.base_model == base  # lineage for the Hub


def test_packaged_offline_base_is_not_called_the_teacher(run):
    offline = pytest.importorskip("sage_hf.models.offline")
    try:
        path = offline.default_teacher_path()
    except (ModuleNotFoundError, FileNotFoundError):
        pytest.skip("the offline default teacher package is not installed")
    config = run["trainer"].teacher.config
    saved, config._name_or_path = config._name_or_path, str(path)
    try:
        data = build_card_data(run["trainer"], task_name="topics", dataset_id=None, dataset_name=None, metrics={},
                               student_model=run["exported"])
    finally:
        config._name_or_path = saved
    assert data.teacher_name == "all-MiniLM-L6-v2 fine-tuned on topics" and data.teacher_id is None
    assert data.base_model == data.teacher_base_model == "sentence-transformers/all-MiniLM-L6-v2"


def test_teacher_figures_share_the_students_metric_rows(run, tmp_path):
    teacher_results = {"teacher_validation_accuracy": 0.875, "teacher_validation_loss": 0.31,
                       "teacher_validation_runtime": 1.2, "teacher_validation_samples_per_second": 80.0}
    data = build_card_data(run["trainer"], task_name="topics", dataset_id=DATASET_ID, dataset_name="Tiny Topics",
                           metrics={"eval_accuracy": 0.75, "eval_agreement": 0.9, "eval_loss": 0.2},
                           teacher_metrics=teacher_results, student_model=run["exported"])
    render_model_card(data, tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert data.teacher_metrics == {"accuracy": 0.875}
    assert "| Accuracy | 0.7500 | 0.8750 |" in text and "| Agreement with teacher | 0.9000 | – |" in text
    assert "teacher_validation" not in text and "| loss |" not in text.lower()


def test_card_callback_keeps_the_rounds_from_before_a_resume(tmp_path):
    def trainer_for(out, **overrides):
        teacher = TeacherInterface(tiny_teacher("bert", num_layers=2, sharpen=20.0, dropout=0.0))
        student = SageStudentForSequenceClassification.from_teacher(teacher, num_layers=1, init="random")
        args = SageTrainingArguments(
            output_dir=str(out), per_device_train_batch_size=16, num_train_epochs=2, learning_rate=2e-3,
            report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="epoch", logging_strategy="epoch", seed=0,
            data_seed=0, reducer="pca", n_neighbors=10, sample_neighbors=5, map_cache_dir=str(tmp_path / "maps"),
            save_round_plots=False, decode_examples=0, agreement_threshold=1.0, **overrides)
        return SageTrainer(model=student, args=args, teacher_model=teacher, train_dataset=tiny_dataset(64))

    full = trainer_for(tmp_path / "full")
    full.train()
    resumed = trainer_for(tmp_path / "resumed")
    first_epoch = min((tmp_path / "full").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    resumed.train(resume_from_checkpoint=str(first_epoch))
    rows = ModelCardCallback.of(resumed).card_data.rounds
    assert [r["round"] for r in rows] == [h["round"] for h in resumed.sage_engine.history] == [1, 2]
    assert [r["agreement"] for r in rows] == [h["agreement"] for h in full.sage_engine.history]


def test_map_name_reads_the_engines_fitted_map():
    settings = SimpleNamespace(name="pca")
    assert map_name(SimpleNamespace(map=SimpleNamespace(settings=settings))) == "pca"
    assert map_name(SimpleNamespace(map=None)) is None  # not fitted yet: the configured name is shown


def test_export_student_renders_a_custom_template(run, tmp_path):
    template = tmp_path / "my_card.md"
    template.write_text("---\n{{ card_data }}\n---\n# {{ model_name }}\n\nDistilled from {{ teacher_name }}.\n")
    folder = run["trainer"].export_student(tmp_path / "student", task_name="topics", dataset_id=DATASET_ID,
                                           dataset_name="Tiny Topics", template_path=template)
    text = (folder / "README.md").read_text()
    assert f"Distilled from {TEACHER_ID}." in text and "## Model Details" not in text
    assert ModelCard.load(folder / "README.md").data.base_model == TEACHER_ID


def test_card_data_is_replayed_for_a_trainer_without_the_callback(run):
    trainer = run["trainer"]
    callback = trainer.pop_callback(ModelCardCallback)
    try:
        replayed = ModelCardCallback.of(trainer).card_data
    finally:
        trainer.add_callback(callback)
    recorded = callback.card_data
    assert replayed is not recorded and replayed.rounds == recorded.rounds
    assert (replayed.metrics, replayed.stop_reason, replayed.sage_settings) == \
        (recorded.metrics, recorded.stop_reason, recorded.sage_settings)
