"""Launched with 2 processes by tests/test_distributed.py: a short SageTrainer run, then a report per rank."""

import hashlib
import json
import sys

sys.path.insert(0, sys.argv[2])  # the tests folder, for conftest's tiny models

import torch.distributed as dist  # noqa: E402

from sage_hf import SageStudentForSequenceClassification, SageTrainer, SageTrainingArguments  # noqa: E402

from testing_utils import tiny_dataset, tiny_teacher  # noqa: E402

out_dir = sys.argv[1]
teacher = tiny_teacher("bert", num_layers=2, sharpen=10.0)
student = SageStudentForSequenceClassification.from_teacher(teacher, num_layers=1)
args = SageTrainingArguments(output_dir=out_dir, per_device_train_batch_size=4, num_train_epochs=2, learning_rate=1e-3,
                             report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no", seed=0,
                             logging_strategy="no", ddp_backend="gloo", sage=False)
trainer = SageTrainer(model=student, args=args, teacher_model=teacher, train_dataset=tiny_dataset(32))
trainer.train()
digest = hashlib.sha256()
for key, value in sorted(trainer.model.state_dict().items()):
    digest.update(key.encode())
    digest.update(value.detach().cpu().numpy().tobytes())
report = {
    "rank": trainer.args.process_index,
    "world_size": trainer.args.world_size,
    "dist_world_size": dist.get_world_size() if dist.is_initialized() else 1,
    "global_step": trainer.state.global_step,
    "weights_sha256": digest.hexdigest(),
    "teacher_wrapped": type(trainer.teacher).__name__,
}
with open(f"{out_dir}/rank{report['rank']}.json", "w") as f:
    json.dump(report, f)
if dist.is_initialized():  # leave together: a rank exiting with gloo threads still up can abort
    dist.barrier()
    dist.destroy_process_group()
