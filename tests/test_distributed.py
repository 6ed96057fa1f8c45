"""A 2-process CPU (gloo) SageTrainer run ends with identical student weights on both ranks."""

import json
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def launch_two_processes(script: str, tmp_path: Path, report: str, *extra: str) -> list[dict]:
    """Run tests/scripts/<script> as 2 gloo processes; return each rank's JSON report."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(TESTS / "scripts" / script), str(tmp_path), str(TESTS), *extra]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return [json.loads((tmp_path / f"{report}{r}.json").read_text()) for r in (0, 1)]


def test_two_process_training_keeps_ranks_in_sync(tmp_path):
    reports = launch_two_processes("ddp_train.py", tmp_path, "rank")
    assert [r["world_size"] for r in reports] == [2, 2]
    assert [r["dist_world_size"] for r in reports] == [2, 2]
    # 32 examples, 2 ranks x 4 per device = 8 per step, 2 epochs
    assert [r["global_step"] for r in reports] == [8, 8]
    assert reports[0]["weights_sha256"] == reports[1]["weights_sha256"]
    assert reports[0]["teacher_wrapped"] == "TeacherInterface"  # never DDP-wrapped: it has no gradients


def test_two_process_sage_rounds_draw_the_same_synthetic_set_on_every_rank(tmp_path):
    reports = launch_two_processes("ddp_sage.py", tmp_path, "sage_rank")
    assert [r["world_size"] for r in reports] == [2, 2]
    assert len(reports[0]["digests"]) == 3  # a round before epoch 1 and after epochs 1 and 2
    assert reports[0]["digests"] == reports[1]["digests"]
    assert reports[0]["agreements"] == reports[1]["agreements"]  # scores gathered from both shards
    assert reports[0]["buffer_digest"] == reports[1]["buffer_digest"]
    assert [r["global_step"] for r in reports] == [24, 24]  # (64 real + 64 synthetic) / (2 ranks x 8) x 3 epochs
    # every rank saw the checkpoint the main process wrote, with the SAGE state and the arguments in it
    assert {"sage_state.json", "sage_state.safetensors", "training_args.bin"} <= set(reports[1]["checkpoint_files"])
    for epoch in ("0", "1", "2"):  # the ranks' shards of each epoch: every buffer entry once (synthetic: -1 - slot)
        ids = sorted(reports[0]["seen"][epoch] + reports[1]["seen"][epoch])
        assert ids == sorted(list(range(64)) + list(range(-128, -64)))


def test_two_process_mix_batches_carry_synthetic_examples_on_every_rank(tmp_path):
    reports = launch_two_processes("ddp_sage.py", tmp_path, "sage_rank", "mix")
    assert reports[0]["digests"] == reports[1]["digests"] and len(reports[0]["digests"]) == 3
    assert reports[0]["buffer_digest"] == reports[1]["buffer_digest"]
    assert [r["global_step"] for r in reports] == [12, 12]  # 64 real / (2 ranks x 8) x 3 epochs: KD's steps
    for epoch in ("0", "1", "2"):
        for report in reports:  # each rank's batches carry synthetic examples beside its real ones
            seen = report["seen"][epoch]
            assert sum(i >= 0 for i in seen) == 32 and sum(i < 0 for i in seen) == 32
        ids = sorted(reports[0]["seen"][epoch] + reports[1]["seen"][epoch])
        assert ids == sorted(list(range(64)) + list(range(-128, -64))), "every entry once per epoch, on one rank"
