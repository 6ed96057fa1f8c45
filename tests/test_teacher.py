"""The teacher runs from its layer-1 vectors, exactly, in every supported family."""

import pytest
import torch
from transformers import AutoModel, GPT2Config, GPT2ForSequenceClassification

from sage_hf import TeacherInterface, UnsupportedArchitectureError
from sage_hf.models.teacher import position_offset

from testing_utils import FAMILIES, family_batch, padded_batch, tiny_config, tiny_teacher


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("interface_layer", [0, 2, 4])
def test_logits_from_layer1_equal_teacher_logits(family, attn, interface_layer):
    model = tiny_teacher(family, attn=attn)
    teacher = TeacherInterface(model, interface_layer)
    ids, mask, tt = family_batch(family)
    kwargs = {} if tt is None else {"token_type_ids": tt}
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask, **kwargs).logits
        vectors = teacher.layer1(ids, mask, tt)
        logits = teacher.logits_from_layer1(vectors, mask)
    assert vectors.shape == (*ids.shape, teacher.width)
    torch.testing.assert_close(logits, reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_inputs_embeds_is_not_the_layer1_interface(family):
    """Why the interface exists: feeding layer-1 vectors as `inputs_embeds` re-adds positions."""
    model = tiny_teacher(family, sharpen=100.0)
    teacher = TeacherInterface(model)
    ids, mask, tt = family_batch(family)
    with torch.no_grad():
        vectors = teacher.layer1(ids, mask, tt)
        right = teacher.logits_from_layer1(vectors, mask)
        if family == "electra":  # its embedding width differs from the hidden size: inputs_embeds cannot even run
            with pytest.raises(RuntimeError):
                model(inputs_embeds=vectors, attention_mask=mask)
            return
        naive = model(inputs_embeds=vectors, attention_mask=mask).logits
    assert (naive - right).abs().max() > 1e-3


def test_layer1_is_the_embedding_module_output():
    model = tiny_teacher("bert")
    ids, mask, tt = padded_batch()
    with torch.no_grad():
        expected = model.bert.embeddings(input_ids=ids, token_type_ids=tt)
        got = TeacherInterface(model).layer1(ids, mask, tt)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_interface_layer_k_is_the_output_of_layer_k():
    model = tiny_teacher("bert")
    ids, mask, tt = padded_batch()
    with torch.no_grad():
        out = model.bert(input_ids=ids, attention_mask=mask, token_type_ids=tt, output_hidden_states=True)
        hidden = out.hidden_states
        got = TeacherInterface(model, 3).layer1(ids, mask, tt)
    torch.testing.assert_close(got, hidden[3], atol=1e-6, rtol=0)


def test_teacher_modules_are_restored_after_a_call():
    model = tiny_teacher("electra")
    layers, embeddings = model.electra.encoder.layer, model.electra.embeddings
    teacher = TeacherInterface(model, 2)
    ids, mask, tt = padded_batch()
    teacher(ids, mask, tt)
    assert model.electra.encoder.layer is layers and model.electra.embeddings is embeddings


def test_unsupported_architecture_names_the_supported_ones():
    model = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    expected = r"Unsupported teacher architecture 'gpt2'.*bert.*distilbert.*electra.*roberta"
    with pytest.raises(UnsupportedArchitectureError, match=expected):
        TeacherInterface(model)


def test_interface_layer_beyond_depth():
    expected = r"interface_layer=5 is beyond the teacher's depth: it has 4 transformer layers"
    with pytest.raises(ValueError, match=expected):
        TeacherInterface(tiny_teacher("bert"), interface_layer=5)


def test_teacher_without_head_cannot_give_logits():
    headless = AutoModel.from_config(tiny_config("bert"))
    teacher = TeacherInterface(headless)
    ids, mask, tt = padded_batch()
    vectors = teacher.layer1(ids, mask, tt)  # the input layer still works
    with pytest.raises(ValueError, match="has no sequence-classification head"):
        teacher.logits_from_layer1(vectors, mask)


@pytest.mark.parametrize("family", FAMILIES)
def test_position_offset_is_the_first_position_id_the_model_uses(family):
    """RoBERTa-likes number positions from pad_token_id + 1; rebuilding inputs position by position needs that."""
    model = tiny_teacher(family)
    ids = padded_batch()[0][:1]  # the unpadded row
    embeddings = TeacherInterface(model).base.embeddings
    positions = torch.arange(ids.shape[1]).unsqueeze(0) + position_offset(model.config)
    with torch.no_grad():
        torch.testing.assert_close(embeddings(input_ids=ids, position_ids=positions), embeddings(input_ids=ids))
    assert position_offset(model.config) == (2 if family == "roberta" else 0)


def test_position_offset_of_a_model_type_sage_does_not_know_is_zero():
    assert position_offset(GPT2Config()) == 0
