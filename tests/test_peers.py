"""Smoke runs of the peer toolkits (benchmarks/peers.py) on a tiny random BERT: slow, never in CI.

    python -m pytest -q -m slow tests/test_peers.py
"""

from __future__ import annotations

import sys

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from testing_utils import REPO, tiny_config, tiny_dataset, tiny_teacher

sys.path.insert(0, str(REPO / "benchmarks"))
import peers  # noqa: E402

pytestmark = pytest.mark.slow

TEMPERATURE = 2.0


def _teacher_student(num_labels: int = 3):
    teacher = tiny_teacher("bert", seed=0, attn="eager", sharpen=200.0, dropout=0.0,  # KL at T=2 ~0.3 before training
                           num_labels=num_labels)
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.eval()
    torch.manual_seed(1)
    student = AutoModelForSequenceClassification.from_config(
        tiny_config("bert", num_layers=2, dropout=0.0, num_labels=num_labels), attn_implementation="eager")
    return teacher, student


def _data(n: int = 30):
    data = tiny_dataset(n=n, seed=0)
    return data.map(lambda row: {"token_type_ids": [0] * len(row["input_ids"])})


def _kd_loss(teacher, student, data) -> float:
    """Mean KL(teacher || student) at TEMPERATURE over `data`, one example at a time (no padding)."""
    student.eval()
    total = 0.0
    with torch.no_grad():
        for row in data:
            inputs = {k: torch.tensor([row[k]]) for k in ("input_ids", "attention_mask", "token_type_ids")}
            log_p_s = torch.log_softmax(student(**inputs).logits / TEMPERATURE, -1)
            p_t = torch.softmax(teacher(**inputs).logits / TEMPERATURE, -1)
            total += float(torch.sum(p_t * (torch.log(p_t) - log_p_s)))
    return total / len(data)


@pytest.mark.parametrize("name", peers.PEERS)
def test_peer_smoke(name):
    pytest.importorskip(peers._PACKAGE[name])
    teacher, student = _teacher_student()
    data = _data()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    loss_before = _kd_loss(teacher, student, data)

    out = peers.run_peer(name, teacher, student, data, num_train_epochs=8, learning_rate=3e-3, batch_size=8,
                         temperature=TEMPERATURE, seed=0)

    assert out["model"] is student
    assert out["steps"] == 8 * 4  # ceil(30 / 8) = 4 batches an epoch
    assert out["train_s"] > 0
    assert out["peer_version"] == f"{peers._PACKAGE[name]} {peers.peer_versions()[peers._PACKAGE[name]]}"
    changed = [k for k, v in student.state_dict().items() if not torch.equal(v, before[k])]
    assert any("encoder.layer" in k for k in changed) and any("classifier" in k for k in changed)
    assert all(torch.equal(v, teacher_before[k]) for k, v in teacher.state_dict().items())
    assert not teacher.training, "the frozen teacher comes back in eval mode (no dropout in later dev passes)"
    loss_after = _kd_loss(teacher, student, data)
    assert loss_after < 0.8 * loss_before, (loss_before, loss_after)


@pytest.mark.parametrize("name", peers.PEERS)
def test_peer_max_steps_and_collate_fn(name):
    pytest.importorskip(peers._PACKAGE[name])
    teacher, student = _teacher_student()
    data = _data(12)
    calls = []

    def collate(features):  # a caller's collator that also returns labels: they must be dropped
        calls.append(len(features))
        batch = peers._pad_collate(0)(features)
        batch["labels"] = torch.tensor([f["label"] for f in features])
        return batch

    out = peers.run_peer(name, teacher, student, data, num_train_epochs=100, learning_rate=1e-3, batch_size=4,
                         temperature=TEMPERATURE, seed=0, max_steps=5, collate_fn=collate)
    assert out["steps"] == 5 and calls and all(c == 4 for c in calls)


@pytest.mark.parametrize("name", peers.PEERS)
def test_peers_distil_a_regression_score(name):
    """STS-B: one score per pair, where a softmax loss is constant; the student's score must move to the teacher's."""
    pytest.importorskip(peers._PACKAGE[name])
    teacher, student = _teacher_student(num_labels=1)
    data = _data()

    def gap():
        with torch.no_grad():
            batch = peers._pad_collate(0)([{k: row[k] for k in ("input_ids", "attention_mask")} for row in data])
            return float(torch.mean((student(**batch).logits - teacher(**batch).logits) ** 2))

    before = gap()
    peers.run_peer(name, teacher, student, data, num_train_epochs=8, learning_rate=3e-3, batch_size=8,
                   temperature=TEMPERATURE, seed=0)
    assert gap() < 0.5 * before, (before, gap())


def test_logit_kd_peers_train_identically():
    """TextBrewer's soft cross-entropy and torchdistill's KL differ by the teacher's entropy only: same gradients,
    so under the shared recipe (seed, batches, optimiser, schedule) the two students come out the same."""
    pytest.importorskip("textbrewer")
    pytest.importorskip("torchdistill")
    students = []
    for name in ("textbrewer_kd", "torchdistill_kd"):
        teacher, student = _teacher_student()
        peers.run_peer(name, teacher, student, _data(), num_train_epochs=2, learning_rate=3e-3, batch_size=8,
                       temperature=TEMPERATURE, seed=0)
        students.append(torch.cat([p.detach().flatten() for p in student.parameters()]))
    assert torch.allclose(students[0], students[1], atol=1e-5)


def test_hidden_matches_map_layers_uniformly():
    teacher, student = _teacher_student()
    matches = peers._hidden_matches(teacher, student)
    assert [(m["layer_S"], m["layer_T"]) for m in matches] == [(0, 0), (1, 2), (2, 4)]
    assert all(m["loss"] == "hidden_mse" and "proj" not in m for m in matches)


def test_unknown_peer_raises_value_error():
    teacher, student = _teacher_student()
    with pytest.raises(ValueError, match="unknown peer"):
        peers.run_peer("distiller_x", teacher, student, _data(4), num_train_epochs=1, learning_rate=1e-3,
                       batch_size=2, temperature=TEMPERATURE, seed=0)


def test_missing_peer_raises_peer_unavailable(monkeypatch):
    monkeypatch.setattr(peers, "_version", lambda dist: None)
    teacher, student = _teacher_student()
    with pytest.raises(peers.PeerUnavailable, match="not installed"):
        peers.run_peer("torchdistill_kd", teacher, student, _data(4), num_train_epochs=1, learning_rate=1e-3,
                       batch_size=2, temperature=TEMPERATURE, seed=0)


def test_broken_peer_reason_is_short_and_versioned(monkeypatch):
    pytest.importorskip("torchdistill")
    import torchdistill.losses.mid_level as mid_level

    def broken(*args, **kwargs):
        raise TypeError("KDLoss.__init__() got an unexpected keyword argument 'student_module_path'\n" + "x" * 400)

    monkeypatch.setattr(mid_level, "KDLoss", broken)
    teacher, student = _teacher_student()
    with pytest.raises(peers.PeerUnavailable) as err:
        peers.run_peer("torchdistill_kd", teacher, student, _data(4), num_train_epochs=1, learning_rate=1e-3,
                       batch_size=2, temperature=TEMPERATURE, seed=0)
    text = str(err.value)
    assert len(text) <= 300 and "torchdistill" in text and "torch " in text and "TypeError" in text
