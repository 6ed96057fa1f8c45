"""synthesis='adversarial': per-token perturbations of the anchors, bounded, labelled by the teacher from layer 1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sage_hf.rounds.buffer import entry_batch

from testing_utils import digests, make_trainer, sage_args


def _round(tmp_path, **overrides):
    trainer = make_trainer(tmp_path, n=64, synthesis="adversarial", synthetic_count=16, **overrides)
    losses = np.linspace(0.0, 1.0, 64, dtype=np.float32)
    trainer.sage_engine.run_round(trainer.model, losses, np.zeros(64, bool), epoch=0.0)
    return trainer, trainer.sage_engine


@pytest.mark.parametrize("through_teacher", [True, False])
def test_perturbed_anchors_are_bounded_and_labelled_by_the_teacher_from_layer1(tmp_path, through_teacher):
    trainer, engine = _round(tmp_path, adversarial_radius=0.2, adversarial_through_teacher=through_teacher)
    entries = engine.buffer.contents()
    assert bool(entries.synthetic.all()) and len(entries) == 16
    teacher, ids = engine.teacher, engine.features["input_ids"]
    for slot in range(16):
        src = int(entries.source[slot])
        n = len(ids[src])
        delta = entries.columns["delta"][slot].float()
        assert torch.all(delta[n:] == 0), "padding positions never move"
        with torch.no_grad():
            x = teacher.layer1(torch.tensor([ids[src]]), torch.ones(1, n, dtype=torch.long))
            limit = 0.2 * x[0].norm(dim=-1)
            assert torch.all(delta[:n].norm(dim=-1) <= limit * 1.001 + 1e-3)  # float16 storage
            assert delta[:n].norm(dim=-1).min() > 0.25 * float(limit.min()), "every real token moved"
            direct = teacher.logits_from_layer1(x + delta[:n].unsqueeze(0), torch.ones(1, n, dtype=torch.long))
        torch.testing.assert_close(entries.teacher_logits[slot], direct[0], rtol=0, atol=1e-5)


def test_the_trainer_trains_on_exactly_what_the_teacher_labelled(tmp_path):
    trainer, engine = _round(tmp_path)
    entries = engine.buffer.contents()
    batch = entry_batch(engine.features, entries, engine.method, range(16))
    batch.pop("teacher_logits")
    _, _, logits, _ = trainer._layer1_and_teacher(batch)
    torch.testing.assert_close(logits, entries.teacher_logits, rtol=0, atol=1e-5)


def test_perturbations_raise_the_students_divergence_from_the_teacher(tmp_path):
    trainer, engine = _round(tmp_path, adversarial_radius=0.3)
    entries = engine.buffer.contents()
    clean = entries.columns["delta"].clone().zero_()
    batch = entry_batch(engine.features, entries, engine.method, range(16))
    kl = []
    for delta in (clean, entries.columns["delta"]):
        batch["delta"] = delta
        with torch.no_grad():
            inputs = {k: v for k, v in batch.items() if k != "teacher_logits"}
            vectors, mask, _, _ = trainer._layer1_and_teacher(inputs)
            s = torch.log_softmax(trainer.model(inputs_embeds=vectors, attention_mask=mask).logits, -1)
            t = torch.log_softmax(trainer.teacher.logits_from_layer1(vectors, mask), -1)
        kl.append(float((t.exp() * (t - s)).sum(-1).mean()))
    assert kl[1] > kl[0]


def test_same_seed_same_adversarial_sets(tmp_path):
    runs = [make_trainer(tmp_path / name, n=64, synthesis="adversarial", synthetic_count=16, num_train_epochs=2,
                         seed=seed) for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    for trainer in runs:
        trainer.train()
    assert digests(runs[0]) == digests(runs[1])
    assert digests(runs[0]) != digests(runs[2])


def test_adversarial_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="adversarial_steps must be >= 1"):
        sage_args(tmp_path, synthesis="adversarial", adversarial_steps=0)
    with pytest.raises(ValueError, match="adversarial_radius must be > 0"):
        sage_args(tmp_path, synthesis="adversarial", adversarial_radius=0.0)
