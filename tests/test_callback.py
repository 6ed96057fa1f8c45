"""SageCallback: a round before the progress bar starts, and resuming with callback states restored."""

import shutil

import torch
from sage_testing import digests, make_trainer
from transformers.trainer_callback import ProgressCallback

from sage_hf.rounds.callback import SageCallback


def test_round_one_runs_before_the_progress_bar_starts(tmp_path):
    """Otherwise the bar's ETA counts the whole first round inside step 1."""
    trainer = make_trainer(tmp_path, num_train_epochs=1, disable_tqdm=False)
    bar = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, ProgressCallback))
    rounds_when_the_bar_starts = []
    original = bar.on_train_begin
    bar.on_train_begin = lambda *a, **kw: (rounds_when_the_bar_starts.append(trainer.sage_engine.round),
                                           original(*a, **kw))[1]
    trainer.train()
    assert rounds_when_the_bar_starts == [1]


def test_resume_with_restored_callback_states_continues_the_same_rounds(tmp_path):
    full = make_trainer(tmp_path / "full", num_train_epochs=4, save_strategy="epoch")
    full.train()
    resumed_dir = tmp_path / "resumed" / "out"
    resumed_dir.mkdir(parents=True)
    shutil.copytree(tmp_path / "full" / "out" / "checkpoint-12", resumed_dir / "checkpoint-12")
    resumed = make_trainer(tmp_path / "resumed", num_train_epochs=4, save_strategy="epoch",
                           restore_callback_states_from_checkpoint=True)
    resumed.train(resume_from_checkpoint=True)
    assert digests(resumed) == digests(full) and resumed.sage_engine.round == full.sage_engine.round == 4
    sage_callbacks = [cb for cb in resumed.callback_handler.callbacks if isinstance(cb, SageCallback)]
    assert len(sage_callbacks) == 1 and sage_callbacks[0].trainer is resumed
    for key, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, full.model.state_dict()[key], atol=1e-6, rtol=0, msg=key)
