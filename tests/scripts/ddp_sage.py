"""Launched with 2 processes by tests/test_distributed.py: SAGE rounds under DDP, digests reported per rank."""

import json
import sys
from pathlib import Path

import torch.distributed as dist

sys.path.insert(0, sys.argv[2])

from sage_hf import SageStudentForSequenceClassification, SageTrainer, SageTrainingArguments  # noqa: E402

from testing_utils import tiny_dataset, tiny_teacher  # noqa: E402


class RecordingSageTrainer(SageTrainer):
    """Records the example ids of every training batch this rank trains on, per epoch."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            self.__dict__.setdefault("seen", {}).setdefault(int(self.state.epoch or 0), []).extend(
                inputs["example_id"].tolist())
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


out_dir = sys.argv[1]
mode = sys.argv[3] if len(sys.argv) > 3 else "augment"
teacher = tiny_teacher("bert", num_layers=2, sharpen=20.0, dropout=0.0)
student = SageStudentForSequenceClassification.from_teacher(teacher, num_layers=1, init="random")
args = SageTrainingArguments(output_dir=out_dir, per_device_train_batch_size=8, num_train_epochs=3, learning_rate=2e-3,
                             report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="epoch", seed=0,
                             logging_strategy="no", ddp_backend="gloo", reducer="pca", n_neighbors=10,
                             sample_neighbors=5, map_cache_dir=f"{out_dir}/maps", save_round_plots=False,
                             decode_examples=0, agreement_threshold=1.0, synthesis_mode=mode)
trainer = RecordingSageTrainer(model=student, args=args, teacher_model=teacher, train_dataset=tiny_dataset(64))
trainer.train()
last_checkpoint = Path(out_dir, f"checkpoint-{trainer.state.global_step}")
report = {"rank": trainer.args.process_index, "world_size": trainer.args.world_size,
          "digests": [h["digest"] for h in trainer.sage_engine.history],
          "agreements": [h["agreement"] for h in trainer.sage_engine.history],
          "buffer_digest": trainer.sage_engine.buffer.contents().digest(), "global_step": trainer.state.global_step,
          "checkpoint_files": sorted(p.name for p in last_checkpoint.iterdir()),
          "seen": trainer.seen}
with open(f"{out_dir}/sage_rank{report['rank']}.json", "w") as f:
    json.dump(report, f)
if dist.is_initialized():  # leave together: a rank exiting with gloo threads still up can abort
    dist.barrier()
    dist.destroy_process_group()
