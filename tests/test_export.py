"""An exported student is a standard transformers model that loads without sage_hf."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

from sage_hf import SageStudentForSequenceClassification, TeacherInterface, export_student

from testing_utils import FAMILIES, family_batch, tiny_teacher, tiny_tokenizer

EXPECTED_CLASS = {
    "bert": "BertForSequenceClassification",
    "roberta": "RobertaForSequenceClassification",
    "distilbert": "DistilBertForSequenceClassification",
    "electra": "ElectraForSequenceClassification",
}


@pytest.mark.parametrize("interface_layer", [0, 1])
@pytest.mark.parametrize("family", FAMILIES)
def test_exported_logits_equal_student_on_layer1(family, interface_layer):
    teacher = TeacherInterface(tiny_teacher(family), interface_layer)
    student = SageStudentForSequenceClassification.from_teacher(teacher).eval()
    with torch.no_grad():  # move the student away from its teacher copy so the check means something
        for p in student.parameters():
            p.add_(0.01 * torch.randn_like(p))
    exported = export_student(student, teacher)
    assert type(exported).__name__ == EXPECTED_CLASS[family]
    ids, mask, tt = family_batch(family)
    kwargs = {} if tt is None else {"token_type_ids": tt}
    with torch.no_grad():
        expected = student(inputs_embeds=teacher.layer1(ids, mask, tt), attention_mask=mask).logits
        got = exported(input_ids=ids, attention_mask=mask, **kwargs).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    layers = getattr(exported.config, "n_layers", getattr(exported.config, "num_hidden_layers", None))
    assert layers == interface_layer + student.config.num_layers


CLEAN_PROCESS = r"""
import json, sys, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
path = sys.argv[1]
model = AutoModelForSequenceClassification.from_pretrained(path).eval()
tok = AutoTokenizer.from_pretrained(path)
enc = tok(["w5 w6 w7 w8", "w9 w10"], padding=True, return_tensors="pt")
with torch.no_grad():
    logits = model(**enc).logits.tolist()
clf = pipeline("text-classification", model=path, device=-1)
preds = clf(["w5 w6 w7 w8", "w9 w10"])
print(json.dumps({"class": type(model).__name__, "logits": logits, "preds": preds,
                  "sage_imported": any(m.startswith("sage_hf") for m in sys.modules)}))
"""


def test_exported_student_loads_in_a_process_without_sage_hf(tmp_path):
    teacher = TeacherInterface(tiny_teacher("bert", num_labels=2, sharpen=20.0))
    teacher.model.config.id2label = {0: "negative", 1: "positive"}
    teacher.model.config.label2id = {"negative": 0, "positive": 1}
    student = SageStudentForSequenceClassification.from_teacher(teacher).eval()
    tokenizer = tiny_tokenizer(tmp_path)
    out = tmp_path / "student"
    export_student(student, teacher, out, tokenizer=tokenizer)
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))

    result = subprocess.run([sys.executable, "-c", CLEAN_PROCESS, str(out)], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["class"] == "BertForSequenceClassification"
    assert report["sage_imported"] is False
    enc = tokenizer(["w5 w6 w7 w8", "w9 w10"], padding=True, return_tensors="pt")
    with torch.no_grad():
        vectors = teacher.layer1(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
        expected = student(inputs_embeds=vectors, attention_mask=enc["attention_mask"]).logits
    torch.testing.assert_close(torch.tensor(report["logits"]), expected, atol=1e-5, rtol=0)
    labels = [expected[i].argmax().item() for i in range(2)]
    assert [p["label"] for p in report["preds"]] == [["negative", "positive"][i] for i in labels]


def test_export_refuses_a_student_of_another_width():
    teacher = TeacherInterface(tiny_teacher("bert"))
    student = SageStudentForSequenceClassification.from_teacher(teacher)
    wide = TeacherInterface(AutoModelForSequenceClassification.from_config(
        BertForSequenceClassification.config_class(hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                                   intermediate_size=37, vocab_size=99, num_labels=3)))
    with pytest.raises(ValueError, match="Student hidden size 32 differs from the teacher's layer-1 width 48"):
        export_student(student, wide)
