"""Round scores from the training pass (augment mode) or a separate pass, and the inference passes' order."""

import numpy as np
import pytest
import torch

from sage_hf.rounds.scoring import pooled_layer1, score_examples

from testing_utils import make_trainer


def _scored_by(trainer) -> list[str]:
    return [h["scored_by"] for h in trainer.sage_engine.history]


def test_augment_rounds_after_the_first_use_the_training_pass(tmp_path):
    trainer = make_trainer(tmp_path, n=48, synthesis_mode="augment", synthetic_count=24)
    trainer.train()
    assert _scored_by(trainer) == ["scoring pass", "training pass", "training pass"]


def test_score_pass_always_and_replace_mode_score_separately(tmp_path):
    always = make_trainer(tmp_path / "a", n=48, synthesis_mode="augment", synthetic_count=24, score_pass="always")
    always.train()
    replace = make_trainer(tmp_path / "r", n=48, num_train_epochs=2)
    replace.train()
    assert set(_scored_by(always)) == set(_scored_by(replace)) == {"scoring pass"}


def test_an_epoch_that_misses_examples_falls_back_to_a_scoring_pass(tmp_path):
    # 48 real + 24 synthetic = 72 entries; dropping the last partial batch of 16 leaves some real ones unseen.
    trainer = make_trainer(tmp_path, n=48, synthesis_mode="augment", synthetic_count=24, num_train_epochs=2,
                           dataloader_drop_last=True)
    trainer.train()
    assert _scored_by(trainer) == ["scoring pass", "scoring pass"]


def test_training_pass_scores_equal_a_scoring_pass_of_an_unchanged_student(tmp_path):
    trainer = make_trainer(tmp_path, n=48, synthesis_mode="augment", synthetic_count=24, num_train_epochs=1,
                           learning_rate=0.0)
    engine = trainer.sage_engine
    seen = []
    complete = engine.training_pass.complete
    engine.training_pass.complete = lambda accelerator=None: seen.append(complete(accelerator)) or seen[-1]
    trainer.train()
    losses, agree = seen[-1]
    expected_losses, expected_agree = score_examples(trainer.model, engine.teacher, engine.features,
                                                     engine.teacher_logits, range(48),
                                                     loss_kwargs=engine.config.difficulty_kwargs())
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(agree, expected_agree)


def test_sorted_inference_batches_return_rows_in_input_order(tmp_path):
    trainer = make_trainer(tmp_path, n=40, synthesis="interpolate")
    engine, student = trainer.sage_engine, trainer.model
    indices = np.array([5, 3, 39, 0, 17, 22, 8])
    batched = score_examples(student, engine.teacher, engine.features, engine.teacher_logits, indices, batch_size=3)
    single = score_examples(student, engine.teacher, engine.features, engine.teacher_logits, indices, batch_size=1)
    np.testing.assert_allclose(batched[0], single[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(batched[1], single[1])
    np.testing.assert_allclose(pooled_layer1(engine.teacher, engine.features, batch_size=7),
                               pooled_layer1(engine.teacher, engine.features, batch_size=1), rtol=1e-5, atol=1e-6)
    trainer.train()
    entries = engine.buffer.contents()
    wide = dict(vars(engine.config), teacher_batch_size=64)
    engine.config = type(engine.config)(**wide)
    torch.testing.assert_close(engine.label(entries), _label_one_by_one(engine, entries), rtol=1e-5, atol=1e-6)


def _label_one_by_one(engine, entries) -> torch.Tensor:
    from sage_hf.rounds.buffer import entry_batch

    rows = []
    for i in range(len(entries)):
        vectors, mask = engine.method.materialise(engine.teacher, entry_batch(engine.features, entries,
                                                                              engine.method, [i]))
        rows.append(engine.teacher.logits_from_layer1(vectors, mask).detach().float())
    return torch.cat(rows)


def test_real_examples_are_never_labelled_again(tmp_path):
    trainer = make_trainer(tmp_path, n=48, synthesis_mode="augment", synthetic_count=24)
    teacher = trainer.teacher
    rows = []
    original = teacher.logits_from_layer1
    teacher.logits_from_layer1 = lambda vectors, mask, **kw: rows.append(len(vectors)) or original(vectors, mask, **kw)
    trainer.train()
    rounds = len(trainer.sage_engine.history)
    assert rounds == 3 and sum(rows) == 24 * rounds  # only the synthetic entries, once each


def test_gradient_accumulation_still_scores_from_the_training_pass(tmp_path):
    trainer = make_trainer(tmp_path, n=48, synthesis_mode="augment", synthetic_count=24, num_train_epochs=2,
                           per_device_train_batch_size=8, gradient_accumulation_steps=3)
    trainer.train()
    assert _scored_by(trainer) == ["scoring pass", "training pass"]


def test_an_unknown_score_pass_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match="score_pass.*auto.*always"):
        make_trainer(tmp_path, score_pass="never")
