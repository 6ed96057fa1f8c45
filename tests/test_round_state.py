"""SAGE state in checkpoints: safetensors + JSON (nothing unpickled), and resuming the same rounds."""

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sage_hf.rounds.engine import _DRAW_FIELDS

from testing_utils import assert_same_weights, digests, make_trainer, uninterrupted_and_resumed

SAGE_HF = Path(__file__).resolve().parents[1] / "sage_hf"


def test_checkpoint_state_is_safetensors_and_json(tmp_path):
    trainer = make_trainer(tmp_path, num_train_epochs=1, save_strategy="epoch", synthesis="interpolate")
    trainer.train()
    folder = tmp_path / "out" / "checkpoint-6"
    assert not (folder / "sage_state.pt").exists()
    state = json.loads((folder / "sage_state.json").read_text())
    assert state["round"] == 1 and state["synthesis"] == "interpolate" and len(state["history"]) == 1
    assert state["reducer_fit_fields"] == {"name": "pca", "n_components": 2, "seed": 0}
    assert state["map_cache_key"] == trainer.sage_engine.map.cache_key
    tensors = load_file(folder / "sage_state.safetensors")
    entries = trainer.sage_engine.buffer.contents()
    assert set(tensors) == {"source", "teacher_logits", "synthetic", "columns.partner", "columns.mix",
                            "training_pass.losses", "training_pass.agree", "training_pass.seen"}
    torch.testing.assert_close(tensors["columns.mix"], entries.columns["mix"], atol=0, rtol=0)


def test_no_pickle_on_the_rounds_load_paths():
    owned = [SAGE_HF / "trainer.py", *sorted((SAGE_HF / "rounds").rglob("*.py"))]
    for path in owned:
        text = path.read_text()
        assert "weights_only=False" not in text and "pickle.load" not in text, path


def test_resume_after_epoch_two_matches_an_uninterrupted_run(tmp_path):
    full, resumed = uninterrupted_and_resumed(tmp_path)
    assert digests(resumed) == digests(full)
    assert_same_weights(resumed, full)


def test_resume_before_a_deferred_first_round_draws_the_same_sets(tmp_path):
    # checkpoint after epoch 2, the first round after epoch 3: the resumed run must still defer, then draw alike
    full, resumed = uninterrupted_and_resumed(tmp_path, shared={"synthesis_start_epoch": 3})
    assert [h["epoch"] for h in full.sage_engine.history] == [3.0]
    assert digests(resumed) == digests(full)
    assert_same_weights(resumed, full)


def test_resume_with_other_reducer_settings_names_both(tmp_path):
    first = make_trainer(tmp_path, num_train_epochs=1, save_strategy="epoch")
    first.train()
    other = make_trainer(tmp_path, num_train_epochs=2, save_strategy="epoch", n_components=3)
    message = r"reducer settings \{.*'n_components': 2.*\}, but this run asks for \{.*'n_components': 3"
    with pytest.raises(ValueError, match=message):
        other.train(resume_from_checkpoint=True)


def test_resuming_reducer_none_with_another_n_components_is_allowed(tmp_path):
    """`none` ignores n_components, so the checkpoint's map is the same map."""
    first = make_trainer(tmp_path, num_train_epochs=1, save_strategy="epoch", reducer="none")
    first.train()
    again = make_trainer(tmp_path, num_train_epochs=2, save_strategy="epoch", reducer="none", n_components=3)
    again.train(resume_from_checkpoint=True)
    assert digests(again) == digests(first) and again.state.global_step == 12


def test_resume_with_another_synthesis_names_both(tmp_path):
    make_trainer(tmp_path, num_train_epochs=1, save_strategy="epoch").train()
    other = make_trainer(tmp_path, num_train_epochs=2, save_strategy="epoch", synthesis="interpolate")
    with pytest.raises(ValueError, match="synthesis='shift', but this run asks for synthesis='interpolate'"):
        other.train(resume_from_checkpoint=True)


def test_resume_with_another_candidate_choice_names_both(tmp_path):
    settings = dict(synthesis="swap", candidates_per_anchor=2, save_strategy="epoch")
    make_trainer(tmp_path, num_train_epochs=1, **settings).train()
    state = json.loads((tmp_path / "out" / "checkpoint-6" / "sage_state.json").read_text())
    assert (state["candidates_per_anchor"], state["candidate_choice"]) == (2, "hardest")
    other = make_trainer(tmp_path, num_train_epochs=2, candidate_choice="label_preserving", **settings)
    with pytest.raises(ValueError, match="candidate_choice='hardest', but this run asks for "
                                         "candidate_choice='label_preserving'"):
        other.train(resume_from_checkpoint=True)


def test_resume_with_another_anchor_fraction_is_refused(tmp_path):
    make_trainer(tmp_path, num_train_epochs=1, save_strategy="epoch").train()
    other = make_trainer(tmp_path, num_train_epochs=2, save_strategy="epoch", anchor_fraction=0.5)
    with pytest.raises(ValueError, match="anchor_fraction=0.2, but this run asks for anchor_fraction=0.5"):
        other.train(resume_from_checkpoint=True)


def test_a_checkpoint_older_than_a_recorded_setting_still_resumes(tmp_path):
    first = make_trainer(tmp_path, num_train_epochs=1, save_strategy="epoch")
    first.train()
    path = tmp_path / "out" / "checkpoint-6" / "sage_state.json"
    state = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in state.items() if k not in _DRAW_FIELDS}))
    again = make_trainer(tmp_path, num_train_epochs=2, save_strategy="epoch")
    again.train(resume_from_checkpoint=True)
    assert digests(again) == digests(first) and again.state.global_step == 12


def test_a_checkpoint_from_another_map_is_named_when_the_next_round_runs(tmp_path, caplog):
    make_trainer(tmp_path / "first", num_train_epochs=3, save_strategy="epoch").train()
    folder = tmp_path / "resumed" / "out" / "checkpoint-6"
    shutil.copytree(tmp_path / "first" / "out" / "checkpoint-6", folder)
    state = json.loads((folder / "sage_state.json").read_text())
    (folder / "sage_state.json").write_text(json.dumps({**state, "map_cache_key": "another-map"}))
    resumed = make_trainer(tmp_path / "resumed", num_train_epochs=3, save_strategy="epoch")
    with caplog.at_level(logging.WARNING, logger="sage_hf"):
        resumed.train(resume_from_checkpoint=True)
    assert any("differs from the one the checkpoint was trained with" in r.getMessage() for r in caplog.records)
