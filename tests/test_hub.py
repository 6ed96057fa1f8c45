"""Pushing an exported student to a Hub and loading it back from there, against the local Hub double.

The checks a user cares about: what `from_pretrained("<user>/<repo>")` and `pipeline(...)` load from the Hub gives
the logits of the model that was pushed; weights travel through LFS; a wrong or missing token is refused; the token
is never written to the Hub, to the logs or to storage hosts; `private` and `revision` reach the Hub.
"""

from __future__ import annotations

import contextlib
import io
import logging
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from sage_hf import SageStudentForSequenceClassification, TeacherInterface, export_student
from sage_hf.publishing.hub import REDACTED, push_folder_to_hub, redact, strip_tokens

from fixtures.hub_server import HubServer
from testing_utils import tiny_teacher, tiny_tokenizer

TEXTS = ["w5 w6 w7 w8 w9", "w10 w11"]
MODEL_CARD = """---
library_name: transformers
pipeline_tag: text-classification
tags:
- sage-hf
- distillation
---

# Tiny SAGE student

Distilled with sage-hf from a random BERT teacher, for the Hub round-trip test.

![loss](loss.png)
"""


def tiny_png(width: int = 4, height: int = 3) -> bytes:
    """A valid RGB PNG, built by hand so the test needs no imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\0" + b"".join(bytes((x * 60, y * 80, 200)) for x in range(width)) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def student_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported student (weights moved off the teacher's), its tokenizer, a model card and a PNG plot."""
    root = tmp_path_factory.mktemp("student")
    teacher = TeacherInterface(tiny_teacher("bert", num_labels=2, sharpen=5.0))
    teacher.model.config.id2label = {0: "negative", 1: "positive"}
    teacher.model.config.label2id = {"negative": 0, "positive": 1}
    student = SageStudentForSequenceClassification.from_teacher(teacher).eval()
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.02 * torch.randn_like(p))
    folder = root / "student"
    export_student(student, teacher, folder, tokenizer=tiny_tokenizer(root))
    (folder / "README.md").write_text(MODEL_CARD)
    (folder / "loss.png").write_bytes(tiny_png())
    return folder


def logits_of(model, tokenizer) -> torch.Tensor:
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**enc).logits


@contextlib.contextmanager
def captured_logs(*names: str) -> Iterator[io.StringIO]:
    """Everything the named loggers emit at DEBUG, whether or not they propagate to the root logger."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)


def test_push_then_from_pretrained_and_pipeline_give_the_pushed_logits(
        local_hub: HubServer, student_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture):
    hub = local_hub
    repo_id = f"{hub.user}/tiny-sage-student"
    monkeypatch.setattr(constants, "HF_DEBUG", True)  # huggingface_hub then logs every request as a curl command
    with captured_logs("", "huggingface_hub", "transformers", "sage_hf") as logs:
        url = push_folder_to_hub(student_folder, repo_id, token=hub.token)
        remote = AutoModelForSequenceClassification.from_pretrained(repo_id)
        remote_tok = AutoTokenizer.from_pretrained(repo_id)
        downloads = len(hub.requests)
        # A fresh cache, so the pipeline downloads everything again instead of reusing the files fetched above.
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "second_cache"))
        clf = pipeline("text-classification", model=repo_id, device=-1)
        scores = clf(TEXTS, top_k=None, function_to_apply="none")

    assert url.startswith(f"{hub.endpoint}/{repo_id}/commit/")
    files = hub.files(repo_id)
    local_files = {p.name: p.read_bytes() for p in student_folder.iterdir()}
    assert {name: files[name] for name in local_files} == local_files
    # Weights and the (binary) plot went through LFS: uploaded to storage, which never saw the token.
    assert {"model.safetensors", "loss.png"} <= hub.lfs_paths(repo_id)
    assert "config.json" not in hub.lfs_paths(repo_id)
    storage = [r for r in hub.requests if r.origin == "storage"]
    assert {r.method for r in storage} == {"PUT", "GET"} and not any(r.authenticated for r in storage)
    weight_downloads = [r for r in hub.requests[downloads:] if r.origin == "storage" and r.method == "GET"]
    assert len(weight_downloads) == 1  # the pipeline fetched the weights itself

    local = AutoModelForSequenceClassification.from_pretrained(student_folder)
    local_tok = AutoTokenizer.from_pretrained(student_folder)
    expected = logits_of(local, local_tok)
    torch.testing.assert_close(logits_of(remote, remote_tok), expected, atol=0, rtol=0)
    label2id = local.config.label2id
    from_pipeline = torch.tensor([[next(s["score"] for s in row if label2id[s["label"]] == i)
                                   for i in range(len(label2id))] for row in scores])
    torch.testing.assert_close(from_pipeline, expected, atol=1e-6, rtol=0)

    info = HfApi(endpoint=hub.endpoint).model_info(repo_id)
    assert info.pipeline_tag == "text-classification" and not info.private
    assert {"README.md", "loss.png", "model.safetensors", "tokenizer.json"} <= {s.rfilename for s in info.siblings}

    # The token is nowhere: not pushed, not stored, not logged, not printed.
    secret = hub.token.encode()
    assert not any(secret in blob for blob in hub.stored_objects())
    out, err = capfd.readouterr()
    text = logs.getvalue()
    assert "curl" in text and hub.token not in text and hub.token not in out + err


def test_wrong_or_missing_token_is_refused(local_hub: HubServer, student_folder: Path):
    hub = local_hub
    wrong = "hf_" + "x" * 34
    with pytest.raises(HfHubHTTPError) as refused:
        push_folder_to_hub(student_folder, f"{hub.user}/refused", token=wrong)
    assert refused.value.response.status_code == 401 and wrong not in str(refused.value)
    with pytest.raises(HfHubHTTPError) as anonymous:  # no token given and none cached: the Hub must refuse
        push_folder_to_hub(student_folder, f"{hub.user}/refused")
    assert anonymous.value.response.status_code == 401
    assert hub.repos == {}

    push_folder_to_hub(student_folder, f"{hub.user}/accepted", token=hub.token)
    writes = [r for r in hub.requests if r.origin == "hub" and r.method == "POST" and r.status == 200]
    assert writes and all(r.authenticated for r in writes)
    with pytest.raises(HfHubHTTPError) as other:  # a valid token does not open someone else's namespace
        push_folder_to_hub(student_folder, "someone-else/student", token=hub.token)
    assert other.value.response.status_code == 403


def test_private_repo_and_branch(local_hub: HubServer, student_folder: Path):
    hub = local_hub
    repo_id = f"{hub.user}/private-student"
    push_folder_to_hub(student_folder, repo_id, token=hub.token, private=True, revision="v1",
                       commit_message="SAGE student v1")
    assert hub.create_payloads[-1]["visibility"] == "private" and hub.repos[repo_id].private
    api = HfApi(endpoint=hub.endpoint)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(repo_id, token=False)
    assert api.model_info(repo_id, revision="v1", token=hub.token).private
    assert set(hub.files(repo_id)) == {".gitattributes"}  # main untouched, the student is on v1
    commit = hub.repos[repo_id].commits[hub.repos[repo_id].branches["v1"]]
    assert commit.title == "SAGE student v1"

    remote = AutoModelForSequenceClassification.from_pretrained(repo_id, revision="v1", token=hub.token)
    tok = AutoTokenizer.from_pretrained(student_folder)
    local = AutoModelForSequenceClassification.from_pretrained(student_folder)
    torch.testing.assert_close(logits_of(remote, tok), logits_of(local, tok), atol=0, rtol=0)

    push_folder_to_hub(student_folder, f"{hub.user}/public-student", token=hub.token)
    assert hub.create_payloads[-1]["visibility"] == "public"


def test_push_through_the_default_xet_pipeline_for_regular_files(local_hub: HubServer, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch):
    """With hf_xet installed (the default), upload_folder takes its pipelined path: text files commit as usual."""
    pytest.importorskip("hf_xet")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    (tmp_path / "README.md").write_text(MODEL_CARD)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    repo_id = f"{local_hub.user}/card-only"
    url = push_folder_to_hub(tmp_path, repo_id, token=local_hub.token)
    assert url.startswith(f"{local_hub.endpoint}/{repo_id}/commit/")
    assert local_hub.files(repo_id)["README.md"] == MODEL_CARD.encode()


def test_push_honours_hf_endpoint_set_after_import(local_hub: HubServer, student_folder: Path,
                                                   monkeypatch: pytest.MonkeyPatch):
    """huggingface_hub froze its endpoint at import; the push still goes where HF_ENDPOINT says now."""
    monkeypatch.setattr(constants, "ENDPOINT", "https://huggingface.co")
    repo_id = f"{local_hub.user}/late-endpoint"
    url = push_folder_to_hub(student_folder, repo_id, token=local_hub.token)
    assert url.startswith(local_hub.endpoint) and "model.safetensors" in local_hub.lfs_paths(repo_id)


def test_push_refuses_offline_mode_and_empty_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(NotADirectoryError):
        push_folder_to_hub(tmp_path / "missing", "user/repo")
    with pytest.raises(FileNotFoundError):
        push_folder_to_hub(tmp_path, "user/repo")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError):
        push_folder_to_hub(tmp_path, "no-namespace")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        push_folder_to_hub(tmp_path, "user/repo", token="hf_" + "a" * 34)


def test_redaction_hides_tokens_in_text():
    token = "hf_" + "Z" * 34
    assert redact(f"push with {token} now", token) == f"push with {REDACTED} now"
    assert token not in redact(f"Authorization: Bearer {token}")
    assert token not in redact(f"token={token}")  # recognised without being told
    assert redact("hf_hub_download and hf_transfer stay readable") == "hf_hub_download and hf_transfer stay readable"


def test_strip_tokens_keeps_the_token_out_of_pickled_training_arguments(tmp_path: Path):
    """transformers' Trainer pickles its arguments to training_args.bin, and push_to_hub uploads that file."""
    from transformers import TrainingArguments

    token = "hf_" + "Q" * 34
    args = TrainingArguments(output_dir=str(tmp_path), hub_token=token, push_to_hub=True, hub_model_id="me/student",
                             report_to=[], use_cpu=True)
    torch.save(args, tmp_path / "raw.bin")
    assert token.encode() in (tmp_path / "raw.bin").read_bytes()  # why the helper exists
    torch.save(strip_tokens(args), tmp_path / "clean.bin")
    assert token.encode() not in (tmp_path / "clean.bin").read_bytes()
    assert args.hub_token == token and strip_tokens(args).hub_model_id == "me/student"
