"""A small SAGE run for tests/test_crash_resume.py: resumes from output_dir when it holds checkpoints.

    python sage_crash_run.py OUTPUT_DIR TESTS_DIR

SAGE_CRASH=label:R kills the process (SIGKILL) inside the teacher labelling of round R; SAGE_CRASH=save:S kills
it while checkpoint-S is written, after its weights and before its optimizer state. The result (per-round digests,
final eval metrics) goes to OUTPUT_DIR/result.json.
"""

import json
import logging
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[2])

from sage_hf import SageStudentForSequenceClassification, SageTrainer, SageTrainingArguments  # noqa: E402
from sage_hf.rounds.engine import SageEngine  # noqa: E402

from testing_utils import tiny_dataset, tiny_teacher  # noqa: E402

logging.basicConfig(level=logging.WARNING)
logging.getLogger("sage_hf").setLevel(logging.INFO)
out_dir = Path(sys.argv[1])
where, _, at = os.environ.get("SAGE_CRASH", ":").partition(":")


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class CrashingTrainer(SageTrainer):
    def _save_optimizer_and_scheduler(self, output_dir):
        if where == "save" and self.state.global_step == int(at):
            die()  # the weights are written, nothing after them
        super()._save_optimizer_and_scheduler(output_dir)


label = SageEngine.label


def crashing_label(engine, entries):
    if where == "label" and engine.round == int(at):
        die()
    return label(engine, entries)


SageEngine.label = crashing_label

teacher = tiny_teacher("bert", num_layers=2, sharpen=20.0, dropout=0.0)
student = SageStudentForSequenceClassification.from_teacher(teacher, num_layers=1, init="random")
# 48 real + 24 synthetic entries: 5 steps an epoch; checkpoints every 3 steps, so most fall inside an epoch.
args = SageTrainingArguments(output_dir=str(out_dir), per_device_train_batch_size=16, num_train_epochs=3,
                             learning_rate=2e-3, report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="steps",
                             save_steps=3, logging_strategy="no", eval_strategy="no", seed=0, data_seed=0,
                             reducer="pca", sample_neighbors=5, synthetic_count=24,
                             map_cache_dir=str(out_dir / "maps"),
                             save_round_plots=False, decode_examples=0, agreement_threshold=1.0)
trainer = CrashingTrainer(model=student, args=args, teacher_model=teacher, train_dataset=tiny_dataset(48),
                          eval_dataset=tiny_dataset(32, seed=1))
trainer.train(resume_from_checkpoint=any(out_dir.glob("checkpoint-*")))
result = {"digests": [h["digest"] for h in trainer.sage_engine.history],
          "scored_by": [h["scored_by"] for h in trainer.sage_engine.history],
          "metrics": trainer.evaluate(), "global_step": trainer.state.global_step}
(out_dir / "result.json").write_text(json.dumps(result))
