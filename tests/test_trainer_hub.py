"""SageTrainer.push_to_hub and hub_strategy pushes publish the standard student, never the token."""

import torch
from transformers import AutoModelForSequenceClassification, pipeline

from sage_hf import SageTrainer, SageTrainingArguments, TeacherInterface

from testing_utils import tiny_dataset, tiny_teacher, tiny_tokenizer


def make_trainer(tmp_path, hub, **overrides):
    args = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=16, num_train_epochs=2,
                learning_rate=2e-3, report_to=[], use_cpu=True, disable_tqdm=True, logging_strategy="no", seed=0,
                reducer="pca", n_neighbors=10, sample_neighbors=5, map_cache_dir=str(tmp_path / "maps"),
                decode_examples=0, agreement_threshold=1.0, hub_model_id=f"{hub.user}/tiny-sage",
                hub_token=hub.token, save_strategy="no")
    args.update(overrides)
    teacher = TeacherInterface(tiny_teacher("bert", num_layers=2, num_labels=2, sharpen=20.0, dropout=0.0))
    return SageTrainer(args=SageTrainingArguments(**args), teacher_model=teacher,
                       train_dataset=tiny_dataset(64, num_labels=2), processing_class=tiny_tokenizer(tmp_path))


def test_push_to_hub_publishes_the_standard_student(tmp_path, local_hub):
    trainer = make_trainer(tmp_path, local_hub)
    trainer.train()
    trainer.push_to_hub()
    files = local_hub.files(f"{local_hub.user}/tiny-sage")
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= set(files)
    assert b'"BertForSequenceClassification"' in files["config.json"]
    assert all(local_hub.token.encode() not in blob for blob in local_hub.stored_objects())
    model = AutoModelForSequenceClassification.from_pretrained(f"{local_hub.user}/tiny-sage")
    enc = trainer.processing_class(["w5 w6 w7", "w9 w10"], padding=True, return_tensors="pt")
    student = trainer.model.eval()
    with torch.no_grad():
        expected = student(inputs_embeds=trainer.teacher.layer1(enc["input_ids"], enc["attention_mask"],
                                                                enc["token_type_ids"]),
                           attention_mask=enc["attention_mask"]).logits
        got = model.eval()(**enc).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert len(pipeline("text-classification", model=f"{local_hub.user}/tiny-sage")(["w5 w6"])) == 1


def test_hub_strategy_pushes_during_training_and_no_saved_file_has_the_token(tmp_path, local_hub):
    trainer = make_trainer(tmp_path, local_hub, push_to_hub=True, save_strategy="epoch", hub_strategy="every_save")
    trainer.train()
    repo = local_hub.repos[f"{local_hub.user}/tiny-sage"]
    messages = [commit.title for commit in repo.commits.values()]
    assert sum("Training in progress" in m for m in messages) >= 2  # one per epoch's save
    assert "model.safetensors" in local_hub.files(f"{local_hub.user}/tiny-sage")
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert local_hub.token.encode() not in path.read_bytes(), path
