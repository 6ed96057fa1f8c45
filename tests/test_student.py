"""The headless student: a teacher-family stack that reads layer-1 vectors, saved and loaded like any model."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from sage_hf import SageStudentConfig, SageStudentForSequenceClassification, TeacherInterface, default_teacher_layers

from testing_utils import FAMILIES, family_batch, tiny_teacher


def test_default_layers_are_every_other_one():
    assert default_teacher_layers(12) == [0, 2, 4, 6, 8, 10]
    assert default_teacher_layers(6, 3) == [0, 2, 4]
    assert default_teacher_layers(4, 1) == [0]


@pytest.mark.parametrize("family", FAMILIES)
def test_student_has_no_embedding_module(family):
    student = SageStudentForSequenceClassification.from_teacher(tiny_teacher(family))
    names = [n for n, _ in student.named_parameters()]
    assert not any("embeddings" in n for n in names), names
    assert student.config.num_layers == 2 and student.config.teacher_layers == [0, 2]


@pytest.mark.parametrize("family", FAMILIES)
def test_student_with_every_teacher_layer_is_the_teacher(family):
    model = tiny_teacher(family)
    teacher = TeacherInterface(model)
    student = SageStudentForSequenceClassification.from_teacher(teacher, layers=[0, 1, 2, 3]).eval()
    ids, mask, tt = family_batch(family)
    with torch.no_grad():
        vectors = teacher.layer1(ids, mask, tt)
        torch.testing.assert_close(student(inputs_embeds=vectors, attention_mask=mask).logits,
                                   teacher.logits_from_layer1(vectors, mask), atol=1e-5, rtol=0)


def test_random_init_differs_from_teacher_copy():
    model = tiny_teacher("bert")
    copied = SageStudentForSequenceClassification.from_teacher(model, num_layers=2)
    random = SageStudentForSequenceClassification.from_teacher(model, num_layers=2, init="random")
    assert random.config.teacher_layers is None
    a = copied.backbone.bert.encoder.layer[1].output.dense.weight
    b = random.backbone.bert.encoder.layer[1].output.dense.weight
    torch.testing.assert_close(a, model.bert.encoder.layer[2].output.dense.weight)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_load_round_trip_is_identical(family, tmp_path):
    model = tiny_teacher(family)
    teacher = TeacherInterface(model)
    student = SageStudentForSequenceClassification.from_teacher(teacher).eval()
    student.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert AutoConfig.from_pretrained(tmp_path).model_type == "sage_student"
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, SageStudentForSequenceClassification)
    ids, mask, tt = family_batch(family)
    with torch.no_grad():
        vectors = teacher.layer1(ids, mask, tt)
        a = student(inputs_embeds=vectors, attention_mask=mask).logits
        b = loaded(inputs_embeds=vectors, attention_mask=mask).logits
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_regression_student_uses_mse():
    model = tiny_teacher("bert", num_labels=1)
    student = SageStudentForSequenceClassification.from_teacher(model)
    vectors = torch.randn(3, 5, 32)
    labels = torch.tensor([0.5, 1.0, 4.0])
    out = student(inputs_embeds=vectors, labels=labels)
    assert out.logits.shape == (3, 1)
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1), labels))


def test_classification_student_loss_is_cross_entropy():
    student = SageStudentForSequenceClassification.from_teacher(tiny_teacher("roberta"))
    out = student(inputs_embeds=torch.randn(4, 6, 32), labels=torch.tensor([0, 1, 2, 1]))
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2, 1])))


def test_student_deeper_than_teacher_is_refused():
    with pytest.raises(ValueError, match="cannot be built from a teacher with 4 layers"):
        SageStudentForSequenceClassification.from_teacher(tiny_teacher("bert"), num_layers=5)
    with pytest.raises(ValueError, match="cannot be built from a teacher with 4 layers"):
        SageStudentForSequenceClassification.from_teacher(tiny_teacher("bert"), layers=[0, 1, 2, 3, 3])


def test_student_layer_indices_out_of_range():
    with pytest.raises(ValueError, match=r"Student layer indices \[7\] are out of range"):
        SageStudentForSequenceClassification.from_teacher(tiny_teacher("bert"), layers=[0, 7])


def test_student_config_round_trips_through_dict():
    student = SageStudentForSequenceClassification.from_teacher(tiny_teacher("distilbert"))
    cfg = SageStudentConfig.from_dict(student.config.to_dict())
    assert cfg.hidden_size == 32 and cfg.num_layers == 2 and cfg.backbone().model_type == "distilbert"
