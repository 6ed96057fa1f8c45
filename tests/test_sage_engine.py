"""Issue 3: SAGE rounds swap the training set each epoch, deterministically, resumably."""

import json
import logging
import shutil

import numpy as np
import pytest
import torch

from sage_hf import SageStudentForSequenceClassification, SageTrainer, SageTrainingArguments, TeacherInterface
from sage_hf.rounds.decode import nearest_tokens
from conftest import tiny_dataset, tiny_teacher, tiny_tokenizer


def sage_args(tmp_path, **overrides):
    defaults = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=16, num_train_epochs=3,
                    learning_rate=2e-3, report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no",
                    logging_strategy="no", seed=0, data_seed=0, reducer="pca", n_neighbors=10, sample_neighbors=5,
                    map_cache_dir=str(tmp_path / "maps"), save_round_plots=False, decode_examples=0,
                    agreement_threshold=1.0, synthesis_mode="replace")
    defaults.update(overrides)
    return SageTrainingArguments(**defaults)


class RecordingTrainer(SageTrainer):
    """Records, per epoch, the example ids and shift norms of every training batch."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            seen = self.__dict__.setdefault("seen", {})
            epoch = int(self.state.epoch or 0)
            seen.setdefault(epoch, []).append((inputs["example_id"].cpu(), inputs["shift"].norm(dim=-1).cpu()))
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def make_trainer(tmp_path, n=96, cls=SageTrainer, **overrides):
    teacher = TeacherInterface(tiny_teacher("bert", num_layers=2, sharpen=20.0, dropout=0.0))
    student = SageStudentForSequenceClassification.from_teacher(teacher, num_layers=1, init="random")
    return cls(model=student, args=sage_args(tmp_path, **overrides), teacher_model=teacher,
               train_dataset=tiny_dataset(n))


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
    expected = buffer.shift.norm(dim=-1)
    assert all(abs(norms_seen[i] - float(expected[i])) < 1e-5 for i in range(96))


def test_augment_is_the_default_mode():
    assert SageTrainingArguments(output_dir="x").synthesis_mode == "augment"


def test_augment_mode_trains_on_real_plus_synthetic(tmp_path):
    trainer = make_trainer(tmp_path, cls=RecordingTrainer, synthesis_mode="augment", synthetic_count=32,
                           num_train_epochs=2)
    trainer.train()
    ids = torch.cat([i for i, _ in trainer.seen[1]])
    assert len(ids) == 96 + 32 and (ids >= 0).sum() == 96 and (ids < 0).sum() == 32


def test_persistent_workers_see_each_new_set(tmp_path):
    trainer = make_trainer(tmp_path, cls=RecordingTrainer, dataloader_num_workers=2,
                           dataloader_persistent_workers=True, num_train_epochs=2)
    trainer.train()
    seen = trainer.seen[1]
    buffer = trainer.sage_engine.buffer
    ids = torch.cat([i for i, _ in seen])
    norms = torch.cat([s for _, s in seen])
    expected = buffer.shift.norm(dim=-1)[(-ids - 1)]
    torch.testing.assert_close(norms, expected, atol=1e-5, rtol=0)  # not round 1's stale shifts


def test_same_seed_same_synthetic_sets(tmp_path):
    a = make_trainer(tmp_path / "a", num_train_epochs=2)
    a.train()
    b = make_trainer(tmp_path / "b", num_train_epochs=2)
    b.train()
    assert [h["digest"] for h in a.sage_engine.history] == [h["digest"] for h in b.sage_engine.history]
    c = make_trainer(tmp_path / "c", num_train_epochs=2, seed=1)
    c.train()
    assert a.sage_engine.history[0]["digest"] != c.sage_engine.history[0]["digest"]


def test_stop_rule_stops_and_records_why(tmp_path):
    trainer = make_trainer(tmp_path, num_train_epochs=5, agreement_threshold=0.05, save_strategy="epoch")
    trainer.train()
    assert trainer.state.epoch == 1.0
    assert trainer.sage_engine.stop_reason.startswith("agreement ")
    state = json.loads((tmp_path / "out" / "checkpoint-6" / "trainer_state.json").read_text())
    saved = state["stateful_callbacks"]["SageCallback"]["attributes"]
    assert saved["stop_reason"].startswith("agreement ") and saved["round"] == 1


def test_map_is_fitted_once_and_reused_from_disk(tmp_path):
    a = make_trainer(tmp_path, num_train_epochs=2, reducer="umap")
    a.train()
    assert a.sage_engine.reducer.loaded_from_cache is False
    b = make_trainer(tmp_path, num_train_epochs=1, reducer="umap")
    b.train()
    assert b.sage_engine.reducer.loaded_from_cache is True
    assert b.sage_engine.reducer.cache_key == a.sage_engine.reducer.cache_key


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


def test_resume_after_epoch_two_matches_an_uninterrupted_run(tmp_path):
    full = make_trainer(tmp_path / "full", num_train_epochs=4, save_strategy="epoch")
    full.train()
    full_weights = {k: v.clone() for k, v in full.model.state_dict().items()}
    # the checkpoint after epoch 2 (6 steps per epoch), continued in a fresh process-like trainer
    resumed_dir = tmp_path / "resumed" / "out"
    resumed_dir.mkdir(parents=True)
    shutil.copytree(tmp_path / "full" / "out" / "checkpoint-12", resumed_dir / "checkpoint-12")
    resumed = make_trainer(tmp_path / "resumed", num_train_epochs=4, save_strategy="epoch")
    resumed.train(resume_from_checkpoint=True)
    assert [h["digest"] for h in resumed.sage_engine.history] == [h["digest"] for h in full.sage_engine.history]
    for key, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, full_weights[key], atol=1e-6, rtol=0, msg=key)


def test_resume_with_other_reducer_settings_names_both(tmp_path):
    first = make_trainer(tmp_path, num_train_epochs=1, save_strategy="epoch")
    first.train()
    other = make_trainer(tmp_path, num_train_epochs=2, save_strategy="epoch", n_components=3)
    with pytest.raises(ValueError, match=r"reducer settings \{.*'n_components': 2.*\}, but this run asks for \{.*'n_components': 3"):
        other.train(resume_from_checkpoint=True)


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


def test_decoding_an_unshifted_sequence_gives_back_its_tokens():
    teacher = TeacherInterface(tiny_teacher("bert", num_layers=2))
    ids = torch.tensor([2, 17, 42, 88, 3])
    with torch.no_grad():
        vectors = teacher.layer1(ids[None], torch.ones(1, 5, dtype=torch.long))[0]
    assert nearest_tokens(teacher, vectors) == ids.tolist()


def test_decoded_examples_in_the_round_log(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path)
    teacher = TeacherInterface(tiny_teacher("bert", num_layers=2, sharpen=20.0))
    trainer = SageTrainer(args=sage_args(tmp_path, num_train_epochs=1, decode_examples=2), teacher_model=teacher,
                          train_dataset=tiny_dataset(96), processing_class=tokenizer)
    trainer.train()
    decoded = trainer.sage_engine.history[0]["decoded"]
    assert len(decoded) == 2 and all("=>" in d for d in decoded)


# ---- bad input ---------------------------------------------------------------------------------------
def test_n_neighbors_larger_than_the_data_says_how_many(tmp_path):
    with pytest.raises(ValueError, match=r"n_neighbors=100 must be smaller than the number of training examples \(96\)"):
        make_trainer(tmp_path, reducer="umap", n_neighbors=100)


@pytest.mark.parametrize("overrides, message", [
    ({"reducer": "tsne"}, "Unknown reducer 'tsne': choose one of umap, pca, none"),
    ({"anchor_policy": "hardest"}, "Unknown anchor_policy 'hardest': choose one of top, weighted, random"),
    ({"n_components": 0}, "n_components must be >= 1"),
    ({"synthesis": "mixup"}, "Unknown synthesis 'mixup': choose one of shift, interpolate"),
    ({"synthetic_count": 0}, "synthetic_count=0 with synthesis_mode='replace'"),
    ({"warmup_source": "/nonexistent/wiki.raw"}, "The warm-up source '/nonexistent/wiki.raw' does not exist"),
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


# ---- synthesis="interpolate": the sampler's anchor -> neighbour position applied to whole sequences ----------
def _padded_layer1(teacher, ids: list[int], length: int):
    ids_t = torch.tensor([ids + [0] * (length - len(ids))])
    mask = torch.tensor([[1] * len(ids) + [0] * (length - len(ids))])
    return teacher.layer1(ids_t, mask, None), mask


def test_interpolated_examples_mix_anchor_and_neighbour_token_by_token(tmp_path):
    trainer = make_trainer(tmp_path, n=64, synthesis="interpolate", synthetic_count=24)
    engine, teacher = trainer.sage_engine, trainer.teacher
    losses = np.linspace(0.0, 1.0, 64, dtype=np.float32)
    engine.run_round(trainer.model, losses, np.zeros(64, bool), epoch=0.0)
    entries = engine.buffer.contents()
    assert bool(entries.synthetic.all()) and len(entries) == 24
    assert (entries.partner != entries.source).all() and (entries.shift == 0).all()
    assert ((entries.mix > 0) & (entries.mix < 1)).all()
    neighbours = engine.reducer.neighbors(engine.coords[entries.source.numpy()], 6)
    assert all(int(p) in row for p, row in zip(entries.partner, neighbours)), "partners are the anchors' map neighbours"
    ids = engine.features["input_ids"]
    with torch.no_grad():
        for slot in range(24):
            a, b, t = int(entries.source[slot]), int(entries.partner[slot]), float(entries.mix[slot])
            length = max(len(ids[a]), len(ids[b]))
            va, ma = _padded_layer1(teacher, ids[a], length)
            vb, mb = _padded_layer1(teacher, ids[b], length)
            expected = teacher.logits_from_layer1((1 - t) * va + t * vb, torch.maximum(ma, mb))[0]
            assert torch.allclose(entries.teacher_logits[slot], expected, atol=1e-5)


def test_the_trainer_builds_the_interpolated_example_the_teacher_labelled(tmp_path):
    trainer = make_trainer(tmp_path, n=64, synthesis="interpolate", synthesis_mode="augment", synthetic_count=16)
    engine = trainer.sage_engine
    engine.run_round(trainer.model, np.linspace(0.0, 1.0, 64, dtype=np.float32), np.zeros(64, bool), epoch=0.0)
    slots = list(range(60, 80))  # real entries, then synthetic ones
    batch = trainer.data_collator([engine.buffer[i] for i in slots])
    assert batch["partner_input_ids"].shape == batch["input_ids"].shape
    batch.pop("teacher_logits")  # make the trainer run the teacher on what it built
    vectors, mask, logits = trainer._layer1_and_teacher_logits(batch)
    assert torch.allclose(logits, engine.buffer.teacher_logits[slots], atol=1e-5)
    real = batch["example_id"] >= 0
    assert int(real.sum()) == 4
    lengths = torch.tensor([len(engine.features["input_ids"][int(s)]) for s in engine.buffer.source[slots][real]])
    assert mask[real].sum(-1).tolist() == lengths.tolist(), "a real entry keeps its own tokens only"


def test_interpolate_trains_and_lowers_the_loss(tmp_path):
    trainer = make_trainer(tmp_path, n=96, synthesis="interpolate", synthesis_mode="augment", num_train_epochs=3,
                           logging_strategy="epoch")
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(trainer.sage_engine.history) == 3 and losses[-1] < losses[0]
