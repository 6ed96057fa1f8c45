"""The packaged all-MiniLM-L6-v2 loads offline and works as a layer-1 teacher."""

import csv

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sage_hf import SageStudentForSequenceClassification, TeacherInterface, default_teacher_path


def sst2_dev_sentences(glue_dir, n=24):
    with open(glue_dir / "SST-2" / "dev.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows[:n]]


def test_default_teacher_is_minilm_l6():
    path = default_teacher_path()
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    assert model.config.model_type == "bert"
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384


def test_default_teacher_layer1_exactness_on_sst2_and_student(glue_dir):
    path = default_teacher_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    teacher = TeacherInterface(model)
    enc = tokenizer(sst2_dev_sentences(glue_dir), padding=True, truncation=True, max_length=64, return_tensors="pt")
    assert (enc["attention_mask"] == 0).any()  # padded batch
    with torch.no_grad():
        reference = model(**enc).logits
        vectors = teacher.layer1(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
        logits = teacher.logits_from_layer1(vectors, enc["attention_mask"])
    assert vectors.shape[-1] == 384
    torch.testing.assert_close(logits, reference, atol=1e-5, rtol=0)

    student = SageStudentForSequenceClassification.from_teacher(teacher, num_layers=3).eval()
    assert student.config.teacher_layers == [0, 2, 4] and student.config.num_layers == 3
    with torch.no_grad():
        out = student(inputs_embeds=vectors, attention_mask=enc["attention_mask"]).logits
    assert out.shape == (len(enc["input_ids"]), 2) and torch.isfinite(out).all()
