"""synthesis='swap': anchors with some tokens swapped for embedding neighbours, labelled by the teacher."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset

from sage_hf import SageStudentForSequenceClassification, SageTrainer, TeacherInterface
from sage_hf.rounds.anchors import apportion
from sage_hf.rounds.buffer import entry_batch
from sage_hf.rounds.synthesis.swap import cached_neighbour_ids, nearest_neighbour_ids, special_token_ids

from testing_utils import VOCAB, digests, sage_args, tiny_teacher

CLS, SEP = 2, 3


def framed_dataset(n: int = 64, seed: int = 0) -> Dataset:
    """Sentences framed like a BERT tokenizer's: [CLS] words [SEP]."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        words = torch.randint(5, VOCAB, (int(torch.randint(3, 10, (1,), generator=g)),), generator=g).tolist()
        ids = [CLS, *words, SEP]
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "label": i % 3})
    return Dataset.from_list(rows)


def paired_dataset(n: int = 64, seed: int = 0) -> Dataset:
    """Pairs framed like a BERT tokenizer's, [CLS] a [SEP] b [SEP], b a shuffled copy of a with one new word."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        a = torch.randint(5, VOCAB, (int(torch.randint(4, 9, (1,), generator=g)),), generator=g)
        b = [*a[torch.randperm(len(a), generator=g)].tolist(), int(torch.randint(5, VOCAB, (1,), generator=g))]
        ids = [CLS, *a.tolist(), SEP, *b, SEP]
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "label": i % 3})
    return Dataset.from_list(rows)


def swap_trainer(tmp_path, dataset=None, teacher=None, **overrides) -> SageTrainer:
    teacher = TeacherInterface(teacher if teacher is not None else
                               tiny_teacher("bert", num_layers=2, sharpen=20.0, dropout=0.0))
    student = SageStudentForSequenceClassification.from_teacher(teacher, num_layers=1, init="random")
    settings = dict(synthesis="swap", synthetic_count=16, **overrides)
    return SageTrainer(model=student, args=sage_args(tmp_path, **settings), teacher_model=teacher,
                       train_dataset=dataset if dataset is not None else framed_dataset())


def one_round(tmp_path, dataset=None, **overrides):
    trainer = swap_trainer(tmp_path, dataset, **overrides)
    engine = trainer.sage_engine
    engine.run_round(trainer.model, np.linspace(0.0, 1.0, 64, dtype=np.float32), np.zeros(64, bool), epoch=0.0)
    return trainer, engine, engine.buffer.contents()


def test_framing_tokens_are_found_in_the_data():
    assert special_token_ids({"input_ids": [[2, 7, 8, 3], [2, 9, 3, 10, 3], [2, 11, 3]]}) == {2, 3}
    # no framing: no id starts or ends half the examples
    assert special_token_ids({"input_ids": [[5, 6], [7, 8], [9, 10]]}) == set()


def test_neighbours_are_the_nearest_by_cosine_without_self_or_banned_ids():
    table = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.8, 0.3], [-1.0, -0.1]])
    got = nearest_neighbour_ids(table, torch.tensor([0, 2]), k=2, banned=torch.tensor([1]))
    assert got.tolist() == [[3, 2], [3, 0]]


def test_neighbours_are_remembered_across_rounds_until_the_table_changes():
    g = torch.Generator().manual_seed(0)
    table = torch.nn.Parameter(torch.randn(50, 8, generator=g), requires_grad=False)
    banned = torch.tensor([0, 2])
    first = cached_neighbour_ids(table, np.array([5, 7]), 4, banned)
    assert torch.equal(first, nearest_neighbour_ids(table, torch.tensor([5, 7]), 4, banned))
    # a later round: known ids from memory, new ones searched, same answers as a fresh search
    again = cached_neighbour_ids(table, np.array([7, 9, 5]), 4, banned)
    assert torch.equal(again, nearest_neighbour_ids(table, torch.tensor([7, 9, 5]), 4, banned))
    with torch.no_grad():  # the table edited in place: nothing stale is returned
        table[5] = -table[5]
    assert torch.equal(cached_neighbour_ids(table, np.array([5]), 4, banned),
                       nearest_neighbour_ids(table, torch.tensor([5]), 4, banned))
    assert cached_neighbour_ids(table, np.array([], dtype=np.int64), 4, banned).shape == (0, 4)


def test_swapped_tokens_are_content_neighbours_and_labelled_by_the_teacher_from_layer1(tmp_path):
    trainer, engine, entries = one_round(tmp_path, swap_fraction=0.5, swap_candidates=4)
    teacher, ids_of = engine.teacher, engine.features["input_ids"]
    table = teacher.model.get_input_embeddings().weight.detach()
    assert bool(entries.synthetic.all()) and len(entries) == 16
    swapped = content = 0
    for slot in range(16):
        ids = torch.tensor(ids_of[int(entries.source[slot])])
        n = len(ids)
        swap = entries.columns["swap_ids"][slot].long()
        assert torch.all(swap[n:] == 0), "padding positions are never written"
        assert swap[0] == 0 and swap[n - 1] == 0, "[CLS] and [SEP] are kept"
        where = torch.nonzero(swap[:n]).flatten()
        assert len(where) >= 1, "every entry changes at least one token"
        swapped, content = swapped + len(where), content + n - 2
        allowed = nearest_neighbour_ids(table, ids[where], k=4, banned=torch.tensor([0, CLS, SEP]))
        for j, pos in enumerate(where.tolist()):
            assert int(swap[pos]) != int(ids[pos]) and int(swap[pos]) in allowed[j].tolist()
        new = torch.where(swap[:n] > 0, swap[:n], ids).unsqueeze(0)
        mask = torch.ones_like(new)
        with torch.no_grad():
            from_layer1 = teacher.logits_from_layer1(teacher.layer1(new, mask), mask)
            direct = teacher.model(input_ids=new, attention_mask=mask).logits
        torch.testing.assert_close(entries.teacher_logits[slot], from_layer1[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(entries.teacher_logits[slot], direct[0], rtol=0, atol=1e-5)
    assert 0.35 < swapped / content < 0.7  # swap_fraction=0.5, at least one per entry


def test_the_trainer_trains_on_exactly_what_the_teacher_labelled(tmp_path):
    trainer, engine, entries = one_round(tmp_path)
    batch = entry_batch(engine.features, entries, engine.method, range(16))
    batch.pop("teacher_logits")
    _, _, logits, _ = trainer._layer1_and_teacher(batch)
    torch.testing.assert_close(logits, entries.teacher_logits, rtol=0, atol=1e-5)


def test_real_entries_are_untouched_in_augment_mode(tmp_path):
    trainer, engine, entries = one_round(tmp_path, synthesis_mode="augment")
    real = ~entries.synthetic
    assert int(real.sum()) == 64 and torch.all(entries.columns["swap_ids"][real] == 0)
    torch.testing.assert_close(entries.teacher_logits[real], engine.teacher_logits, rtol=0, atol=0)


def test_same_seed_same_swapped_sets(tmp_path):
    runs = [swap_trainer(tmp_path / name, num_train_epochs=2, seed=seed) for name, seed in
            (("a", 0), ("b", 0), ("c", 1))]
    for trainer in runs:
        trainer.train()
    assert digests(runs[0]) == digests(runs[1])
    assert digests(runs[0]) != digests(runs[2])


def test_swap_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"swap_fraction must be in \(0, 1\]"):
        sage_args(tmp_path, synthesis="swap", swap_fraction=0.0)
    with pytest.raises(ValueError, match="swap_candidates must be >= 1"):
        sage_args(tmp_path, synthesis="swap", swap_candidates=0)


def test_in_a_pair_a_swapped_word_changes_alike_wherever_it_occurs(tmp_path):
    _, engine, entries = one_round(tmp_path / "shared", paired_dataset(), swap_shared_words=True)
    ids_of = engine.features["input_ids"]
    for slot in range(16):
        ids = torch.tensor(ids_of[int(entries.source[slot])])
        swap = entries.columns["swap_ids"][slot, :len(ids)].long()
        assert swap[0] == 0 and swap[-1] == 0 and swap[ids == SEP].eq(0).all(), "framing and separator kept"
        where = torch.nonzero(swap).flatten()
        assert len(where) >= 1
        for word in ids[where].unique():
            at = ids == word
            assert swap[at].gt(0).all(), "every occurrence of a swapped word is swapped"
            assert swap[at].unique().numel() == 1, "for the same neighbour"
    # the default swaps each position on its own: the pair's shared words drift apart
    _, engine, apart = one_round(tmp_path / "apart", paired_dataset())
    split = 0
    for slot in range(16):
        ids = torch.tensor(ids_of[int(apart.source[slot])])
        swap = apart.columns["swap_ids"][slot, :len(ids)]
        split += sum(swap[ids == word].unique().numel() > 1 for word in ids[swap > 0].unique())
    assert split > 0


def test_shared_words_leave_single_sentences_draw_for_draw_as_they_were(tmp_path):
    _, _, on = one_round(tmp_path / "on", swap_shared_words=True)
    _, _, off = one_round(tmp_path / "off", swap_shared_words=False)
    assert torch.equal(on.columns["swap_ids"], off.columns["swap_ids"]) and torch.equal(on.source, off.source)


def test_swap_fits_no_map_and_its_round_plot_ranks_examples_by_loss(tmp_path):
    trainer = swap_trainer(tmp_path, num_train_epochs=1, save_round_plots=True)
    trainer.train()
    engine = trainer.sage_engine
    assert engine.map is None and engine.pooled is None, "swap reads no map point: no map is fitted"
    assert engine.history[0]["seconds"]["map"] == 0.0
    assert (tmp_path / "out" / "sage_rounds" / "round_01.png").stat().st_size > 1000


def test_balanced_anchors_follow_the_teachers_classes(tmp_path):
    _, engine, entries = one_round(tmp_path, anchor_policy="balanced")
    classes = engine.teacher_logits.argmax(-1).numpy()
    expected = apportion(16, np.bincount(classes, minlength=engine.teacher_logits.shape[-1]))
    assert np.bincount(classes[entries.source.numpy()], minlength=len(expected)).tolist() == expected.tolist()
