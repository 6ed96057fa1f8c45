"""SageCallback: a round before the progress bar starts, and resuming with callback states restored."""

from transformers.trainer_callback import ProgressCallback

from sage_hf.rounds.callback import SageCallback

from testing_utils import assert_same_weights, digests, make_trainer, uninterrupted_and_resumed


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
    full, resumed = uninterrupted_and_resumed(tmp_path, restore_callback_states_from_checkpoint=True)
    assert digests(resumed) == digests(full) and resumed.sage_engine.round == full.sage_engine.round == 4
    sage_callbacks = [cb for cb in resumed.callback_handler.callbacks if isinstance(cb, SageCallback)]
    assert len(sage_callbacks) == 1 and sage_callbacks[0].trainer is resumed
    assert_same_weights(resumed, full)
