"""Synthesis methods: the registry, `shift` and `interpolate`, and reading synthetic examples back as tokens."""

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors
from transformers import HfArgumentParser

from sage_hf import SageTrainer, SageTrainingArguments, TeacherInterface
from sage_hf.rounds.decode import nearest_tokens
from sage_hf.rounds.synthesis import SYNTHESIS_METHODS, get_synthesis, synthesis_methods

from testing_utils import make_trainer, sage_args, tiny_dataset, tiny_teacher, tiny_tokenizer


# ---- the registry ------------------------------------------------------------------------------------------
def test_registry_names_the_built_in_methods_and_their_columns():
    assert SYNTHESIS_METHODS == ("shift", "interpolate", "adversarial", "repeat", "swap")
    assert [m.name for m in synthesis_methods()][:3] == ["shift", "interpolate", "adversarial"]
    assert [m.name for m in synthesis_methods() if m.uses_map] == ["shift", "interpolate"]
    assert set(get_synthesis("shift").columns()) == {"shift"}
    assert set(get_synthesis("interpolate").columns()) == {"partner", "mix"}
    assert set(get_synthesis("adversarial").columns()) == {"delta"}
    message = "Unknown synthesis 'mixup': choose one of shift, interpolate, adversarial, repeat"
    with pytest.raises(ValueError, match=message):
        get_synthesis("mixup")


def test_help_lists_the_choices_of_every_choice_field():
    text = " ".join(HfArgumentParser(SageTrainingArguments).format_help().split())
    for choices in ("--synthesis {shift,interpolate,adversarial,repeat,swap}", "--hidden_loss {auto,none,mse,cosine}",
                    "--reducer {umap,pca,none}", "--kd_loss {kl,mse}",
                    "--synthesis_mode {replace,augment,mix}", "--regenerate {every_epoch,once}",
                    "--pooling {mean,first}", "--reducer_metric {euclidean,cosine}",
                    "--anchor_policy {top,weighted,random,balanced}", "--inversion_backend {fast,umap-learn}"):
        assert choices in text
    with pytest.raises(SystemExit):
        HfArgumentParser(SageTrainingArguments).parse_args_into_dataclasses(["--output_dir", "x", "--synthesis",
                                                                              "mixup"])


def test_shift_is_the_inverted_point_minus_the_anchors_pooled_vector(tmp_path):
    trainer = make_trainer(tmp_path, n=64, synthetic_count=16, shift_scale=0.5)
    engine = trainer.sage_engine
    report = engine.run_round(trainer.model, np.linspace(0.0, 1.0, 64, dtype=np.float32), np.zeros(64, bool),
                              epoch=0.0)
    entries = engine.buffer.contents()
    expected = (engine.map.inverse(report.points.astype(np.float32)) - engine.pooled[report.anchors]) * 0.5
    torch.testing.assert_close(entries.columns["shift"], torch.as_tensor(expected, dtype=torch.float32),
                               atol=1e-5, rtol=0)


# ---- reading synthetic examples ------------------------------------------------------------------------------
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


def test_interpolated_examples_decode_too(tmp_path):
    teacher = TeacherInterface(tiny_teacher("bert", num_layers=2, sharpen=20.0))
    trainer = SageTrainer(args=sage_args(tmp_path, num_train_epochs=1, decode_examples=2, synthesis="interpolate"),
                          teacher_model=teacher, train_dataset=tiny_dataset(96),
                          processing_class=tiny_tokenizer(tmp_path))
    trainer.train()
    decoded = trainer.sage_engine.history[0]["decoded"]
    assert len(decoded) == 2 and all("=>" in d for d in decoded)


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
    partner, mix = entries.columns["partner"], entries.columns["mix"]
    assert (partner != entries.source).all() and set(entries.columns) == {"partner", "mix"}  # no shift stored
    assert ((mix > 0) & (mix < 1)).all()
    coords = engine.map.embedding_
    neighbours = NearestNeighbors(n_neighbors=6).fit(coords).kneighbors(coords[entries.source.numpy()],
                                                                         return_distance=False)
    assert all(int(p) in row for p, row in zip(partner, neighbours)), "partners are the anchors' map neighbours"
    ids = engine.features["input_ids"]
    with torch.no_grad():
        for slot in range(24):
            a, b, t = int(entries.source[slot]), int(partner[slot]), float(mix[slot])
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
    vectors, mask, logits, _ = trainer._layer1_and_teacher(batch)
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


def test_repeat_copies_the_anchors_with_their_cached_teacher_logits_and_runs_no_teacher(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, n=64, synthesis="repeat", synthesis_mode="augment", synthetic_count=16)
    engine = trainer.sage_engine
    calls = []
    original = engine.teacher.logits_from_layer1
    monkeypatch.setattr(engine.teacher, "logits_from_layer1", lambda *a, **k: calls.append(1) or original(*a, **k))
    losses = np.linspace(0.0, 1.0, 64, dtype=np.float32)
    engine.run_round(trainer.model, losses, np.zeros(64, bool), epoch=0.0)
    entries = engine.buffer.contents()
    synthetic = entries.synthetic.nonzero().flatten()
    assert len(synthetic) == 16 and not calls, "a copy keeps its anchor's cached label"
    anchors = entries.source[synthetic]
    assert set(anchors.tolist()) <= set(np.argsort(losses)[-13:].tolist())  # the top 20% by loss
    torch.testing.assert_close(entries.teacher_logits[synthetic], engine.teacher_logits[anchors], rtol=0, atol=0)
    batch = trainer.data_collator([engine.buffer[int(i)] for i in synthetic[:4]])
    batch.pop("teacher_logits")
    _, _, logits, _ = trainer._layer1_and_teacher(batch)
    torch.testing.assert_close(logits, engine.teacher_logits[anchors[:4]], rtol=0, atol=1e-5)

