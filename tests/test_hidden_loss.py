"""Intermediate-layer distillation: the layer map, the loss, and training with it."""

from __future__ import annotations

import pytest
import torch

from sage_hf import SageStudentForSequenceClassification, SageTrainer, as_teacher
from sage_hf.hidden_loss import default_layer_map, hidden_state_loss, parse_layer_map

from testing_utils import make_trainer, sage_args, tiny_dataset, tiny_teacher


def test_default_layer_map_spreads_student_layers_over_the_teacher():
    assert default_layer_map(3, 6) == [(1, 2), (2, 4), (3, 6)]
    assert default_layer_map(2, 2) == [(1, 1), (2, 2)]
    assert parse_layer_map("1:2, 2:4") == [(1, 2), (2, 4)]
    with pytest.raises(ValueError, match="Cannot map"):
        default_layer_map(4, 2)
    for bad in ("1-2", "", "1:2:3", "a:b", "1:-1"):
        with pytest.raises(ValueError, match="student:teacher layer pairs"):
            parse_layer_map(bad)


def test_loss_ignores_padding_and_averages_layers():
    mask = torch.tensor([[1, 1, 0]])
    s = [torch.zeros(1, 3, 2), torch.zeros(1, 3, 2)]
    t = [torch.zeros(1, 3, 2), torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])]
    assert float(hidden_state_loss(s, t, mask, [(1, 1)], "mse")) == pytest.approx((1 + 9) / 2)
    t2 = [torch.zeros(1, 3, 2), torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])]
    s2 = [torch.zeros(1, 3, 2), torch.tensor([[[1.0, 0.0], [1.0, 0.0], [-5.0, 5.0]]])]
    assert float(hidden_state_loss(s2, t2, mask, [(1, 1)], "cosine")) == pytest.approx((0 + 1) / 2)
    assert float(hidden_state_loss(s2, t2, mask, [(1, 1), (0, 0)], "cosine")) == pytest.approx((0.5 + 1) / 2)
    with pytest.raises(ValueError, match="hidden_loss"):
        hidden_state_loss(s, t, mask, [(1, 1)], "l1")


def test_student_copied_from_the_first_teacher_layers_matches_them_exactly():
    teacher = as_teacher(tiny_teacher("bert", num_layers=4, dropout=0.0))
    student = SageStudentForSequenceClassification.from_teacher(teacher, layers=[0, 1]).eval()
    ids = torch.randint(5, 90, (2, 6))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    with torch.no_grad():
        x = teacher.layer1(ids, mask)
        s_hidden = student(inputs_embeds=x, attention_mask=mask, output_hidden_states=True).hidden_states
        t_out = teacher.from_layer1(x, mask, output_hidden_states=True)
    assert len(s_hidden) == 3 and len(t_out.hidden_states) == 5
    torch.testing.assert_close(t_out.logits, teacher.logits_from_layer1(x, mask), rtol=0, atol=1e-6)
    assert torch.all(hidden_state_loss(s_hidden, t_out.hidden_states, mask, [(1, 1), (2, 2)], "mse") < 1e-10)
    assert torch.all(hidden_state_loss(s_hidden, t_out.hidden_states, mask, [(1, 2)], "mse") > 1e-6)


def _hidden_gap(trainer) -> float:
    """Mean hidden-state loss (student layer 1 vs teacher layer 2) of the trainer's student on its real examples."""
    total, count = 0.0, 0
    trainer.model.eval()
    with torch.no_grad():
        for batch in trainer.get_train_dataloader():
            vectors, mask, _, teacher_hidden = trainer._layer1_and_teacher(batch, hidden=True)
            out = trainer.model(inputs_embeds=vectors, attention_mask=mask, output_hidden_states=True)
            loss = hidden_state_loss(out.hidden_states, teacher_hidden, mask, [(1, 2)], "mse")
            total, count = total + float(loss.sum()), count + len(loss)
    return total / count


def test_training_with_the_hidden_loss_brings_student_states_to_the_teacher(tmp_path):
    teacher = as_teacher(tiny_teacher("bert", num_layers=2, sharpen=20.0, dropout=0.0))

    def run(name, **overrides):
        torch.manual_seed(0)
        student = SageStudentForSequenceClassification.from_teacher(teacher, num_layers=1, init="random")
        args = sage_args(tmp_path / name, sage=False, num_train_epochs=4, **overrides)
        trainer = SageTrainer(model=student, args=args, teacher_model=teacher, train_dataset=tiny_dataset(96))
        before = _hidden_gap(trainer)
        trainer.train()
        return before, _hidden_gap(trainer)

    before, plain = run("plain")
    before_h, matched = run("hidden", hidden_loss="mse", alpha_hidden=1.0)
    assert before == pytest.approx(before_h)
    assert matched < 0.5 * plain, "the hidden-state loss is what brings the student's states to the teacher's"


def test_hidden_loss_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="alpha_hidden must be >= 0"):
        sage_args(tmp_path, hidden_loss="mse", alpha_hidden=-1.0)
    with pytest.raises(ValueError, match="student:teacher layer pairs"):
        sage_args(tmp_path, hidden_loss="mse", hidden_layer_map="1->2")
    with pytest.raises(ValueError, match="pair 2:2 is out of range: the student has 1 layers and the teacher 2"):
        make_trainer(tmp_path, hidden_loss="mse", hidden_layer_map="2:2")
    assert make_trainer(tmp_path, hidden_loss="mse")._layer_map == [(1, 2)]
    assert make_trainer(tmp_path, hidden_loss="none", hidden_layer_map="1:1")._layer_map == []
    with pytest.raises(ValueError, match="Unknown hidden_loss 'auto': choose one of mse, cosine"):
        hidden_state_loss([torch.zeros(1, 2, 4)] * 2, [torch.zeros(1, 2, 4)] * 2, torch.ones(1, 2), [(1, 1)], "auto")


def test_auto_matches_hidden_states_for_a_classifier_and_not_for_a_regression_head(tmp_path, caplog):
    """Hidden-state matching never helped STS-B in the protocol runs, so "auto" leaves one-score heads to logits."""
    caplog.set_level("INFO", logger="sage_hf.trainer")
    teacher = as_teacher(tiny_teacher("bert", num_layers=2, dropout=0.0))
    regression = as_teacher(tiny_teacher("bert", num_layers=2, dropout=0.0, num_labels=1))
    for interface, expected_kind, expected_map in ((teacher, "mse", [(1, 2)]), (regression, "none", [])):
        student = SageStudentForSequenceClassification.from_teacher(interface, num_layers=1)
        args = sage_args(tmp_path, sage=False, hidden_loss="auto")
        trainer = SageTrainer(model=student, args=args, teacher_model=interface, train_dataset=tiny_dataset(8))
        assert (trainer._hidden_loss, trainer._layer_map) == (expected_kind, expected_map)
    assert "hidden_loss='auto' is 'none' for a one-score regression head" in caplog.text
    student = SageStudentForSequenceClassification.from_teacher(regression, num_layers=1)
    trainer = SageTrainer(model=student, args=sage_args(tmp_path, sage=False, hidden_loss="mse"),
                          teacher_model=regression, train_dataset=tiny_dataset(8))
    assert (trainer._hidden_loss, trainer._layer_map) == ("mse", [(1, 2)])  # asked for by name: matched
