"""A SAGE run killed with SIGKILL (mid-round, mid-checkpoint) and rerun ends where an uninterrupted run ends."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sage_hf.resume import resolve_checkpoint

TESTS = Path(__file__).resolve().parent
SCRIPT = TESTS / "scripts" / "sage_crash_run.py"


def _run(out: Path, crash: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    env.pop("SAGE_CRASH", None)
    if crash:
        env["SAGE_CRASH"] = crash
    return subprocess.run([sys.executable, str(SCRIPT), str(out), str(TESTS)], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("full") / "out"
    done = _run(out)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def _assert_same_end(result: dict, expected: dict) -> None:
    assert result["digests"] == expected["digests"] and len(expected["digests"]) == 3
    assert result["global_step"] == expected["global_step"]
    for key, value in expected["metrics"].items():
        if key.endswith(("_runtime", "_per_second")):
            continue
        assert result["metrics"][key] == pytest.approx(value, abs=1e-6), key


def test_killed_in_the_middle_of_a_round_resumes_to_the_same_end(tmp_path, uninterrupted):
    out = tmp_path / "out"
    killed = _run(out, crash="label:2")  # inside round 2's labelling, after epoch 1 (step 5)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not (out / "result.json").exists() and (out / "checkpoint-3").is_dir()
    resumed = _run(out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    _assert_same_end(result, uninterrupted)
    # checkpoint-3 was written mid-epoch with that epoch's training-pass scores so far; the rerun completes them.
    assert result["scored_by"] == uninterrupted["scored_by"] == ["scoring pass", "training pass", "training pass"]


def test_killed_while_writing_a_checkpoint_skips_it_and_resumes_to_the_same_end(tmp_path, uninterrupted):
    out = tmp_path / "out"
    killed = _run(out, crash="save:9")
    assert killed.returncode == -9, killed.stderr[-3000:]
    half = out / "checkpoint-9"
    assert half.is_dir() and any(half.iterdir()) and not (half / "trainer_state.json").exists()
    resumed = _run(out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Skipping the half-written checkpoint {half}" in resumed.stderr
    assert f"Resumed SAGE at round 2 from {out / 'checkpoint-6'}" in resumed.stderr
    _assert_same_end(json.loads((out / "result.json").read_text()), uninterrupted)


def test_a_half_written_checkpoint_is_never_chosen(tmp_path):
    for step, files in ((2, ["trainer_state.json", "sage_state.json"]), (4, ["trainer_state.json"]), (6, [])):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name in files:
            (folder / name).write_text("{}")
    (tmp_path / "checkpoint-6" / "model.safetensors").write_bytes(b"half")
    assert resolve_checkpoint(tmp_path, True) == str(tmp_path / "checkpoint-2")
    assert resolve_checkpoint(tmp_path, True, sage=False) == str(tmp_path / "checkpoint-4")
    (tmp_path / "checkpoint-4" / "sage_state.safetensors").write_bytes(b"half")
    with pytest.raises(ValueError, match="half-written .*sage_state.json.*resume_from_checkpoint=True"):
        resolve_checkpoint(tmp_path, str(tmp_path / "checkpoint-4"))
    with pytest.raises(ValueError, match="No complete checkpoint"):
        resolve_checkpoint(tmp_path / "checkpoint-6", True)
