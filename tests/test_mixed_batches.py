"""synthesis_mode='mix': every batch holds a full batch of real examples plus its share of the synthetic ones."""

import pytest
import torch

from sage_hf import SageTrainingArguments
from sage_hf.rounds.mixed_batches import MixedBatchSampler

from testing_utils import RecordingTrainer, make_trainer


@pytest.mark.parametrize("group_by_length", [False, True])
def test_each_batch_is_real_examples_plus_a_share_of_the_synthetic_ones(tmp_path, group_by_length):
    trainer = make_trainer(tmp_path, n=96, synthesis_mode="mix", synthetic_count=40, num_train_epochs=1)
    buffer = trainer.sage_engine.buffer
    assert len(buffer) == 96 + 40
    torch.manual_seed(0)
    lengths = trainer.sage_engine.real_lengths if group_by_length else None
    sampler = MixedBatchSampler(buffer, 96, 16, real_lengths=lengths)
    batches = list(sampler)
    assert len(sampler) == len(batches) == 6
    assert [sum(i < 96 for i in b) for b in batches] == [16] * 6
    assert [sum(i >= 96 for i in b) for b in batches] == [7, 6, 7, 7, 6, 7]
    assert sorted(i for b in batches for i in b) == list(range(136)), "every entry exactly once an epoch"
    torch.manual_seed(0)
    assert list(sampler) == batches, "the order comes from torch's (seeded) generator"
    assert list(sampler) != batches, "and is drawn anew each epoch"


def test_a_short_last_batch_and_fewer_synthetic_entries_than_batches(tmp_path):
    trainer = make_trainer(tmp_path, n=50, synthesis_mode="mix", synthetic_count=3, num_train_epochs=1)
    batches = list(MixedBatchSampler(trainer.sage_engine.buffer, 50, 16))
    assert [sum(i < 50 for i in b) for b in batches] == [16, 16, 16, 2]
    assert sorted(i for b in batches for i in b if i >= 50) == [50, 51, 52]
    with pytest.raises(ValueError, match=r"n_real must be in \[1, 53\], got 0"):
        MixedBatchSampler(trainer.sage_engine.buffer, 0, 16)


def test_mix_mode_trains_every_real_example_each_epoch_with_the_synthetic_ones_beside(tmp_path):
    trainer = make_trainer(tmp_path, n=96, cls=RecordingTrainer, synthesis_mode="mix", synthetic_count=32,
                           num_train_epochs=2)
    trainer.train()
    assert trainer.state.global_step == 2 * 6, "an epoch is one pass over the real set: as many steps as plain KD"
    history = trainer.sage_engine.history
    assert [h["round"] for h in history] == [1, 2]
    for epoch in (0, 1):
        per_batch = [ids for ids, _ in trainer.seen[epoch]]
        assert [int((ids >= 0).sum()) for ids in per_batch] == [16] * 6
        assert [int((ids < 0).sum()) for ids in per_batch] == [5, 6, 5, 5, 6, 5]
        ids = torch.cat(per_batch)
        assert sorted(ids[ids >= 0].tolist()) == list(range(96))
        assert sorted((-ids[ids < 0] - 1).tolist()) == list(range(96, 128)), "each synthetic entry once"
    # the synthetic entries trained on in epoch 2 are the ones round 2 put in the buffer
    buffer = trainer.sage_engine.buffer
    ids, norms = (torch.cat(x) for x in zip(*trainer.seen[1]))
    slots = -ids[ids < 0] - 1
    torch.testing.assert_close(norms[ids < 0], buffer.columns["shift"][slots].norm(dim=-1), atol=1e-5, rtol=0)


def test_mix_mode_is_deterministic_under_a_seed(tmp_path):
    runs = []
    for name in ("a", "b"):
        trainer = make_trainer(tmp_path / name, n=64, cls=RecordingTrainer, synthesis_mode="mix",
                               synthetic_count=16, num_train_epochs=2)
        trainer.train()
        runs.append(([ids.tolist() for ids, _ in trainer.seen[1]], [h["digest"] for h in trainer.sage_engine.history]))
    assert runs[0] == runs[1]


def test_mix_mode_needs_synthetic_examples():
    with pytest.raises(ValueError, match="synthetic_count=0 with synthesis_mode='mix' leaves nothing to mix"):
        SageTrainingArguments(output_dir="x", synthesis_mode="mix", synthetic_count=0)
