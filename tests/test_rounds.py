"""SAGE rounds swap the training set each epoch, deterministically; the stop rule and bad input."""

import dataclasses
import json
import logging

import numpy as np
import pytest
import torch

from sage_hf import SageStudentForSequenceClassification, SageTrainer, SageTrainingArguments, TeacherInterface

from testing_utils import (
    RecordingTrainer,
    digests,
    make_trainer,
    sage_args,
    tiny_dataset,
    tiny_teacher,
    tiny_tokenizer,
)


def test_each_epoch_trains_on_the_new_synthetic_set(tmp_path):
    trainer = make_trainer(tmp_path, cls=RecordingTrainer)
    trainer.train()
    history = trainer.sage_engine.history
    assert [h["round"] for h in history] == [1, 2, 3]  # before epoch 1, after epochs 1 and 2
    assert len({h["digest"] for h in history}) == 3
    for epoch in (0, 1, 2):
        ids = torch.cat([i for i, _ in trainer.seen[epoch]])
        norms = torch.cat([s for _, s in trainer.seen[epoch]])
        assert len(ids) == 96 and (ids < 0).all(), "replace mode: every example of every epoch is synthetic"
        assert (norms > 0).float().mean() > 0.9
    # epoch 3 trained on exactly the set that round 3 put in the buffer
    buffer = trainer.sage_engine.buffer
    last = torch.cat([i for i, _ in trainer.seen[2]])
    assert sorted((-last - 1).tolist()) == list(range(96))
    norms_seen = dict(zip((-last - 1).tolist(), torch.cat([s for _, s in trainer.seen[2]]).tolist()))
    expected = buffer.columns["shift"].norm(dim=-1)
    assert all(abs(norms_seen[i] - float(expected[i])) < 1e-5 for i in range(96))


def test_swap_augment_with_hidden_states_is_the_default_and_the_paper_is_one_flag_away():
    args = SageTrainingArguments(output_dir="x")
    assert (args.synthesis, args.synthesis_mode) == ("swap", "augment")
    assert (args.hidden_loss, args.alpha_hidden) == ("auto", 12)  # "mse" for a classifier, "none" for regression
    paper = SageTrainingArguments(output_dir="x", paper_setting=True)
    assert (paper.synthesis, paper.synthesis_mode, paper.hidden_loss) == ("shift", "replace", "none")
    again = SageTrainingArguments(**{**paper.to_dict(), "output_dir": "x"})
    assert (again.synthesis_mode, again.hidden_loss) == ("replace", "none")
    with pytest.raises(ValueError, match="paper_setting=True runs the paper's synthesis='shift'; got "
                                         "synthesis='interpolate'"):
        SageTrainingArguments(output_dir="x", paper_setting=True, synthesis="interpolate")
    with pytest.raises(ValueError, match="paper_setting=True matches logits only \\(hidden_loss='none'\\); got "
                                         "hidden_loss='cosine'"):
        SageTrainingArguments(output_dir="x", paper_setting=True, hidden_loss="cosine")


def test_augment_mode_trains_on_real_plus_synthetic(tmp_path):
    trainer = make_trainer(tmp_path, cls=RecordingTrainer, synthesis_mode="augment", synthetic_count=32,
                           num_train_epochs=2)
    trainer.train()
    ids = torch.cat([i for i, _ in trainer.seen[1]])
    assert len(ids) == 96 + 32 and (ids >= 0).sum() == 96 and (ids < 0).sum() == 32


def test_deferred_synthesis_trains_on_real_examples_first_at_the_same_steps(tmp_path):
    trainer = make_trainer(tmp_path, cls=RecordingTrainer, synthesis_mode="augment", synthetic_count=32,
                           num_train_epochs=3, synthesis_start_epoch=1)
    trainer.train()
    assert [(h["round"], h["epoch"]) for h in trainer.sage_engine.history] == [(1, 1.0), (2, 2.0)]
    first = torch.cat([i for i, _ in trainer.seen[0]])
    assert len(first) == 96 + 32 and (first >= 0).all(), "epoch 1: the synthetic slots hold real examples"
    assert sorted(first.tolist()) == sorted(list(range(96)) + list(range(32)))
    for epoch in (1, 2):
        ids = torch.cat([i for i, _ in trainer.seen[epoch]])
        assert len(ids) == 96 + 32 and (ids < 0).sum() == 32
    assert trainer.state.global_step == 3 * 8  # 128 entries, batch 16: the steps of an undeferred run


def test_persistent_workers_see_each_new_set(tmp_path):
    trainer = make_trainer(tmp_path, cls=RecordingTrainer, dataloader_num_workers=2,
                           dataloader_persistent_workers=True, num_train_epochs=2)
    trainer.train()
    seen = trainer.seen[1]
    buffer = trainer.sage_engine.buffer
    ids = torch.cat([i for i, _ in seen])
    norms = torch.cat([s for _, s in seen])
    expected = buffer.columns["shift"].norm(dim=-1)[(-ids - 1)]
    torch.testing.assert_close(norms, expected, atol=1e-5, rtol=0)  # not round 1's stale shifts


def test_same_seed_same_synthetic_sets(tmp_path):
    a = make_trainer(tmp_path / "a", num_train_epochs=2)
    a.train()
    b = make_trainer(tmp_path / "b", num_train_epochs=2)
    b.train()
    assert digests(a) == digests(b)
    c = make_trainer(tmp_path / "c", num_train_epochs=2, seed=1)
    c.train()
    assert a.sage_engine.history[0]["digest"] != c.sage_engine.history[0]["digest"]


def test_stop_rule_stops_and_records_why(tmp_path):
    trainer = make_trainer(tmp_path, num_train_epochs=5, agreement_threshold=0.05, save_strategy="epoch")
    trainer.train()
    assert trainer.state.epoch == 1.0
    assert trainer.sage_engine.stop_reason.startswith("agreement ")
    saved = json.loads((tmp_path / "out" / "checkpoint-6" / "sage_state.json").read_text())
    assert saved["stop_reason"].startswith("agreement ") and saved["round"] == 1


def test_map_is_fitted_once_and_reused_from_disk(tmp_path):
    a = make_trainer(tmp_path, num_train_epochs=2, reducer="umap")
    a.train()
    assert a.sage_engine.map.loaded_from_cache is False
    b = make_trainer(tmp_path, num_train_epochs=1, reducer="umap")
    b.train()
    assert b.sage_engine.map.loaded_from_cache is True
    assert b.sage_engine.map.cache_key == a.sage_engine.map.cache_key


@pytest.mark.parametrize("reducer", ["none", "pca"])
def test_other_reducers_run_a_round(tmp_path, reducer):
    trainer = make_trainer(tmp_path, num_train_epochs=1, reducer=reducer, anchor_policy="random")
    trainer.train()
    assert trainer.sage_engine.history[0]["synthetic_count"] == 96


def test_round_log_line_metrics_and_plot(tmp_path, caplog):
    trainer = make_trainer(tmp_path, num_train_epochs=2, save_round_plots=True)
    with caplog.at_level(logging.INFO, logger="sage_hf"):
        trainer.train()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("SAGE round")]
    assert len(lines) == 2 and "anchors' mean loss" in lines[1] and "invert" in lines[1]
    logged = [h for h in trainer.state.log_history if "sage/round" in h]
    assert [h["sage/round"] for h in logged] == [1, 2]
    assert {"sage/seconds_score", "sage/seconds_map", "sage/seconds_sample", "sage/seconds_invert",
            "sage/seconds_label", "sage/agreement", "sage/synthetic"} <= set(logged[0])
    assert (tmp_path / "out" / "sage_rounds" / "round_02.png").stat().st_size > 1000


def test_warm_up_on_generic_text_runs_before_round_one(tmp_path):
    text = tmp_path / "wiki.raw"
    lines = [" = Title = ", " "] + [" ".join(f"w{5 + (i * 7 + j) % 90}" for j in range(12)) for i in range(40)]
    text.write_text("\n".join(lines))
    teacher = TeacherInterface(tiny_teacher("bert", num_layers=2, sharpen=20.0, dropout=0.0))
    student = SageStudentForSequenceClassification.from_teacher(teacher, num_layers=1, init="random")
    args = sage_args(tmp_path, num_train_epochs=1, warmup_source=str(text), warmup_epochs=2)
    trainer = SageTrainer(model=student, args=args, teacher_model=teacher, train_dataset=tiny_dataset(96),
                          processing_class=tiny_tokenizer(tmp_path))
    rounds_at_warmup = []
    original = trainer.warm_up
    trainer.warm_up = lambda: (rounds_at_warmup.append(trainer.sage_engine.round), original())[1]
    trainer.train()
    assert rounds_at_warmup == [0]  # before round 1
    # 40 usable lines (the heading and blank line are dropped), batches of 16, 2 epochs
    assert trainer.warmup_metrics["warmup_examples"] == 40 and trainer.warmup_metrics["warmup_steps"] == 6
    assert trainer.sage_engine.round == 1


# ---- bad input ---------------------------------------------------------------------------------------
def test_n_neighbors_larger_than_the_data_says_how_many(tmp_path):
    message = r"n_neighbors=100 must be smaller than the number of training examples \(96\)"
    with pytest.raises(ValueError, match=message):
        make_trainer(tmp_path, reducer="umap", n_neighbors=100)


@pytest.mark.parametrize("overrides, message", [
    ({"reducer": "tsne"}, "Unknown reducer 'tsne': choose one of umap, pca, none"),
    ({"anchor_policy": "hardest"}, "Unknown anchor_policy 'hardest': choose one of top, weighted, random"),
    ({"n_components": 0}, "n_components must be >= 1, got 0: set --n_components to 1 or more"),
    ({"synthesis": "mixup"}, "Unknown synthesis 'mixup': choose one of shift, interpolate"),
    ({"synthetic_count": 0}, "synthetic_count=0 with synthesis_mode='replace'"),
    ({"warmup_source": "/nonexistent/wiki.raw"}, "The warm-up source '/nonexistent/wiki.raw' does not exist"),
    ({"synthesis_start_epoch": -1}, "synthesis_start_epoch must be >= 0, got -1"),
    ({"synthesis_start_epoch": 3}, r"synthesis_start_epoch=3 is not below num_train_epochs=3: no SAGE round"),
])
def test_bad_sage_arguments(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        sage_args(tmp_path, **overrides)


def test_n_components_wider_than_the_vectors(tmp_path):
    with pytest.raises(ValueError, match=r"n_components=64 is larger than the layer-1 vector width \(32\)"):
        make_trainer(tmp_path, n_components=64)


def test_nan_losses_stop_with_step_and_example_ids(tmp_path):
    trainer = make_trainer(tmp_path, num_train_epochs=1)
    engine = trainer.sage_engine
    losses = np.ones(96, dtype=np.float32)
    losses[[3, 17]] = np.nan
    with pytest.raises(FloatingPointError, match=r"NaN distillation loss at step 7 for real examples \[3, 17\]"):
        engine.run_round(trainer.model, losses, np.zeros(96, bool), epoch=1.0, step=7)


def test_equal_losses_fall_back_to_uniform_anchors(tmp_path):
    trainer = make_trainer(tmp_path, num_train_epochs=1)
    with pytest.warns(RuntimeWarning):
        report = trainer.sage_engine.run_round(trainer.model, np.full(96, 0.5, np.float32), np.zeros(96, bool),
                                               epoch=1.0, step=1)
    assert report.anchor_fallback


def test_generate_once_keeps_the_first_set(tmp_path):
    trainer = make_trainer(tmp_path, cls=RecordingTrainer, num_train_epochs=3, regenerate="once")
    trainer.train()
    assert trainer.sage_engine.round == 1
    first = torch.cat([i for i, _ in trainer.seen[0]]).sort().values
    last = torch.cat([i for i, _ in trainer.seen[2]]).sort().values
    assert torch.equal(first, last) and (last < 0).all()
    assert [h["sage/agreement"] is not None for h in trainer.state.log_history if "sage/agreement" in h]


def test_length_grouping_follows_the_current_entries(tmp_path):
    trainer = make_trainer(tmp_path, num_train_epochs=1, train_sampling_strategy="group_by_length")
    sampler = trainer._get_train_sampler()
    buffer = trainer.sage_engine.buffer
    lengths = torch.tensor([len(x) for x in buffer.real["input_ids"]])
    for sources in (torch.arange(96), torch.arange(96).flip(0) % 7):  # any refill
        buffer.source.copy_(sources)
        order = list(iter(sampler))
        assert sorted(order) == list(range(96))
        current = lengths[buffer.source]
        assert current[order[0]] == current.max()  # the longest current entry leads, as in LengthGroupedSampler




# ---- labelling precision -----------------------------------------------------------------------------------
def test_bfloat16_round_passes_are_close_to_float32_and_auto_follows_the_hardware(tmp_path, monkeypatch):
    from sage_hf.rounds import config as round_config

    labels, scores = {}, {}
    for precision in ("float32", "bfloat16"):
        trainer = make_trainer(tmp_path / precision, n=64, synthetic_count=16, round_precision=precision)
        engine = trainer.sage_engine
        scores[precision] = torch.from_numpy(engine.score(trainer.model)[0])
        engine.run_round(trainer.model, np.linspace(0, 1, 64, dtype=np.float32), np.zeros(64, bool), epoch=0.0)
        labels[precision] = engine.buffer.contents().teacher_logits
    assert not torch.equal(labels["float32"], labels["bfloat16"])  # the autocast did run
    torch.testing.assert_close(labels["bfloat16"], labels["float32"], rtol=0.05, atol=0.05)
    assert not torch.equal(scores["float32"], scores["bfloat16"])
    torch.testing.assert_close(scores["bfloat16"], scores["float32"], rtol=0.1, atol=0.02)
    for native, resolved in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(round_config, "native_bf16", lambda device, native=native: native)
        config = round_config.RoundConfig.from_args(sage_args(tmp_path, round_precision="auto"))
        assert config.round_precision == resolved
    with pytest.raises(ValueError, match="round_precision"):
        sage_args(tmp_path, round_precision="float16")


# ---- one step: score -> stop rule -> round --------------------------------------------------------------------
def test_difficulty_is_the_soft_target_loss_whatever_the_training_weights(tmp_path):
    from sage_hf.losses import kd_loss_per_example
    from sage_hf.rounds.config import RoundConfig

    trainer = make_trainer(tmp_path, alpha_kd=0.5, alpha_hard=2.0, temperature=3.0, kd_loss="kl")
    config = trainer.sage_engine.config
    assert config == RoundConfig.from_args(trainer.args)
    assert (config.difficulty_kd_loss, config.difficulty_temperature) == ("kl", 3.0)
    losses, _ = trainer.sage_engine.score(trainer.model)
    batch = trainer.data_collator([{k: v[i] for k, v in trainer.sage_engine.features.items()} for i in range(96)])
    with torch.no_grad():
        vectors = trainer.teacher.layer1(batch["input_ids"], batch["attention_mask"])
        logits = trainer.model(inputs_embeds=vectors, attention_mask=batch["attention_mask"]).logits
    expected = kd_loss_per_example(logits, trainer.sage_engine.teacher_logits, temperature=3.0, kind="kl")
    np.testing.assert_allclose(losses, expected.numpy(), atol=1e-5)


def test_step_reports_what_the_callback_logs_and_plots(tmp_path):
    trainer = make_trainer(tmp_path, regenerate="once")
    engine = trainer.sage_engine
    first = engine.step(trainer.model, 0.0)
    assert first.generated and not first.stopped and first.round == 1
    assert first.logs()["sage/round"] == 1 and first.coords is engine.map.embedding_
    assert len(first.points) == len(first.anchors) == 96 and first.losses.shape == (96,)
    assert engine.history == [first.record()]
    later = engine.step(trainer.model, 1.0)  # regenerate='once': scored only
    assert not later.generated and set(later.logs()) == {"sage/agreement", "sage/mean_loss"}
    last = engine.step(trainer.model, 3.0, last_epoch=True)
    assert not last.generated and last.stop_reason.startswith("epoch limit reached") and len(engine.history) == 1
    engine.config = dataclasses.replace(engine.config, agreement_threshold=1e-9)
    stopped = engine.step(trainer.model, 3.0)
    assert stopped.stopped and stopped.logs()["sage/stopped"] == 1.0 and stopped.stop_reason.startswith("agreement")
