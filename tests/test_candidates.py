"""candidates_per_anchor: K synthetic candidates per anchor; the one the student finds hardest kept, or the first
that keeps its anchor's teacher label (candidate_choice)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_swap import framed_dataset, swap_trainer

from sage_hf.losses import kd_loss_per_example
from sage_hf.rounds.buffer import SyntheticSet
from sage_hf.rounds.candidates import keep_best, label_keeping_score

from testing_utils import digests, sage_args, tiny_teacher

LOSSES = np.linspace(0.0, 1.0, 64, dtype=np.float32)


def recorded_round(tmp_path, **overrides):
    """One swap round, recording every candidate the method proposed (in order) and its engine difficulty."""
    trainer = swap_trainer(tmp_path, **overrides)
    engine = trainer.sage_engine
    proposed, scored = [], []
    propose, difficulty = engine.method.propose, engine.difficulty
    engine.method.propose = lambda ctx: proposed.append(propose(ctx)) or proposed[-1]
    engine.difficulty = lambda student, entries: scored.append(difficulty(student, entries)) or scored[-1]
    engine.run_round(trainer.model, LOSSES, np.zeros(64, bool), epoch=0.0)
    return trainer, engine, engine.buffer.contents(), proposed, scored


def undecided_teacher():
    """A tiny random teacher whose logits are centred on the swap tests' data and scaled: a random BERT's pooled
    output barely depends on its input, so without this every sentence and every swap gets the same label."""
    teacher = tiny_teacher("bert", num_layers=2, dropout=0.0)
    data = framed_dataset()
    head = teacher.classifier
    with torch.no_grad():
        head.weight.mul_(1000.0)
        logits = torch.stack([teacher(input_ids=torch.tensor([ids])).logits[0] for ids in data["input_ids"]])
        head.bias.sub_(logits.mean(0))
    return teacher


def direct_difficulty(trainer, engine, swap_ids: torch.Tensor, slot: int, source: int) -> tuple[float, torch.Tensor]:
    """The student's soft-target loss on one swapped sentence, from plain teacher and student calls."""
    ids = torch.tensor(engine.features["input_ids"][source])
    n = len(ids)
    new = torch.where(swap_ids[slot, :n] > 0, swap_ids[slot, :n].long(), ids).unsqueeze(0)
    mask = torch.ones_like(new)
    teacher, student = engine.teacher, trainer.model
    student.eval()
    with torch.no_grad():
        vectors = teacher.layer1(new, mask)
        target = teacher.logits_from_layer1(vectors, mask)
        logits = student(inputs_embeds=vectors, attention_mask=mask).logits
    cfg = engine.config
    loss = kd_loss_per_example(logits, target, cfg.difficulty_temperature, cfg.difficulty_kd_loss)
    return float(loss[0]), target[0]


def test_the_kept_candidate_is_the_hardest_drawn_and_labelled_by_the_teacher(tmp_path):
    trainer, engine, entries, proposed, scored = recorded_round(tmp_path, candidates_per_anchor=3)
    assert len(proposed) == 3 and len(scored) == 3
    assert trainer.model.training, "choosing puts the student back in training mode"
    chosen_from = []
    for slot in range(16):
        source = int(entries.source[slot])
        direct = [direct_difficulty(trainer, engine, p["swap_ids"], slot, source) for p in proposed]
        for k, (loss, _) in enumerate(direct):  # the engine's difficulty is the plain calls' loss
            assert scored[k][slot].item() == pytest.approx(loss, abs=1e-5)
        best = int(np.argmax([loss for loss, _ in direct]))  # the first of equals
        chosen_from.append(best)
        assert torch.equal(entries.columns["swap_ids"][slot], proposed[best]["swap_ids"][slot])
        torch.testing.assert_close(entries.teacher_logits[slot], direct[best][1], rtol=0, atol=1e-5)
    assert len(set(chosen_from)) > 1, "different anchors keep different candidates"
    assert bool(entries.synthetic.all())


def test_one_candidate_draws_what_the_first_of_several_draws(tmp_path):
    _, _, one, _, scored = recorded_round(tmp_path / "one")
    assert scored == [], "a single candidate is never scored by the student"
    _, _, _, proposed, _ = recorded_round(tmp_path / "three", candidates_per_anchor=3)
    assert torch.equal(one.columns["swap_ids"], proposed[0]["swap_ids"])
    assert not torch.equal(proposed[0]["swap_ids"], proposed[1]["swap_ids"])


def test_same_seed_same_chosen_sets(tmp_path):
    runs = [swap_trainer(tmp_path / name, num_train_epochs=2, seed=seed, candidates_per_anchor=3)
            for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    for trainer in runs:
        trainer.train()
    assert digests(runs[0]) == digests(runs[1])
    assert digests(runs[0]) != digests(runs[2])
    assert all("choose" in h["seconds"] for h in runs[0].sage_engine.history)


def test_keep_best_merges_row_by_row_and_a_tie_keeps_the_earlier():
    source = torch.tensor([4, 5, 6])
    a = SyntheticSet(source, torch.zeros(3, 2), torch.ones(3, dtype=torch.bool), {"x": torch.zeros(3, 2)})
    b = SyntheticSet(source, torch.ones(3, 2), torch.ones(3, dtype=torch.bool), {"x": torch.ones(3, 2)})
    kept, hardest = keep_best(None, None, a, torch.tensor([1.0, 2.0, 3.0]))
    kept, hardest = keep_best(kept, hardest, b, torch.tensor([0.5, 2.0, 4.0]))
    assert kept.columns["x"][:, 0].tolist() == [0.0, 0.0, 1.0]
    assert kept.teacher_logits[:, 1].tolist() == [0.0, 0.0, 1.0]
    assert hardest.tolist() == [1.0, 2.0, 4.0]
    other = SyntheticSet(torch.tensor([4, 6, 5]), b.teacher_logits, b.synthetic, b.columns)
    with pytest.raises(ValueError, match="same anchors"):
        keep_best(kept, hardest, other, torch.zeros(3))


def test_candidate_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="candidates_per_anchor must be >= 1"):
        sage_args(tmp_path, candidates_per_anchor=0)
    with pytest.raises(ValueError, match="nothing to choose between"):
        sage_args(tmp_path, synthesis="repeat", synthesis_mode="augment", candidates_per_anchor=2)
    with pytest.raises(ValueError, match="Unknown candidate_choice 'easiest'"):
        sage_args(tmp_path, candidates_per_anchor=2, candidate_choice="easiest")
    with pytest.raises(ValueError, match="nothing to choose between with candidates_per_anchor=1"):
        sage_args(tmp_path, candidate_choice="label_preserving")
    assert sage_args(tmp_path, synthesis="swap", candidates_per_anchor=2).candidates_per_anchor == 2


def test_label_preserving_keeps_the_first_candidate_with_the_anchors_teacher_label(tmp_path):
    # every token swapped: some anchors keep their label in a later candidate only, some in none
    trainer, engine, entries, proposed, scored = recorded_round(tmp_path, candidates_per_anchor=3, swap_fraction=1.0,
                                                                candidate_choice="label_preserving",
                                                                teacher=undecided_teacher())
    assert len(set(engine.teacher_logits.argmax(-1).tolist())) > 1
    assert len(proposed) == 3 and scored == [], "label-preserving choice never runs the student"
    assert len(entries) == 16
    kinds, keeping = set(), 0
    for slot in range(16):
        source = int(entries.source[slot])
        anchor = engine.teacher_logits[source]
        labels = [direct_difficulty(trainer, engine, p["swap_ids"], slot, source)[1] for p in proposed]
        keeps = [int(t.argmax()) == int(anchor.argmax()) for t in labels]
        if any(keeps):
            want = keeps.index(True)
        else:  # none keeps the label: the least moved (KL from the anchor's distribution)
            p = anchor.log_softmax(-1)
            want = int(np.argmin([float((p.exp() * (p - t.log_softmax(-1))).sum()) for t in labels]))
        kinds.add((any(keeps), want))
        keeping += any(keeps)
        assert torch.equal(entries.columns["swap_ids"][slot], proposed[want]["swap_ids"][slot])
        torch.testing.assert_close(entries.teacher_logits[slot], labels[want], rtol=0, atol=1e-5)
    assert {kept for kept, _ in kinds} == {True, False}, "both branches: a candidate keeps the label, none does"
    assert len({want for kept, want in kinds if kept}) > 1, "a later candidate is kept where the first flips"
    assert engine.history[-1]["label_kept"] == pytest.approx(keeping / 16, abs=1e-9), "the round records the share"


def test_label_keeping_score_ranks_same_label_first_then_least_moved():
    anchors = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    candidates = torch.tensor([[1.0, 0.5], [0.0, 0.1], [0.0, 3.0]])
    score = label_keeping_score(anchors, candidates)
    assert score[0] == 0 and score[2] == 0, "the argmax is the anchor's: every such candidate scores 0"
    p, q = anchors[1].log_softmax(-1), candidates[1].log_softmax(-1)
    assert score[1].item() == pytest.approx(-(1 + float((p.exp() * (p - q)).sum())), abs=1e-6)
    farther = label_keeping_score(anchors[1:2], torch.tensor([[0.0, 2.0]]))
    assert farther < score[1] < score[0], "a flip that moved more scores lower"
    regression = label_keeping_score(torch.tensor([[3.0], [3.0]]), torch.tensor([[2.5], [4.0]]))
    assert regression.tolist() == [-0.25, -1.0]
