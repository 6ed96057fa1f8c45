"""Small SAGE runs shared by the round, synthesis, callback and checkpoint-state tests."""

from __future__ import annotations

import shutil

import torch

from sage_hf import SageStudentForSequenceClassification, SageTrainer, SageTrainingArguments, TeacherInterface

from conftest import tiny_dataset, tiny_teacher


def sage_args(tmp_path, **overrides):
    defaults = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=16, num_train_epochs=3,
                    learning_rate=2e-3, report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no",
                    logging_strategy="no", seed=0, data_seed=0, reducer="pca", n_neighbors=10, sample_neighbors=5,
                    map_cache_dir=str(tmp_path / "maps"), save_round_plots=False, decode_examples=0,
                    agreement_threshold=1.0, synthesis_mode="replace")
    defaults.update(overrides)
    return SageTrainingArguments(**defaults)


class RecordingTrainer(SageTrainer):
    """Records, per epoch, the example ids and shift norms of every training batch."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            seen = self.__dict__.setdefault("seen", {})
            epoch = int(self.state.epoch or 0)
            seen.setdefault(epoch, []).append((inputs["example_id"].cpu(), inputs["shift"].norm(dim=-1).cpu()))
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def make_trainer(tmp_path, n=96, cls=SageTrainer, **overrides):
    teacher = TeacherInterface(tiny_teacher("bert", num_layers=2, sharpen=20.0, dropout=0.0))
    student = SageStudentForSequenceClassification.from_teacher(teacher, num_layers=1, init="random")
    return cls(model=student, args=sage_args(tmp_path, **overrides), teacher_model=teacher,
               train_dataset=tiny_dataset(n))


def digests(trainer) -> list[str]:
    return [h["digest"] for h in trainer.sage_engine.history]


def uninterrupted_and_resumed(tmp_path, **overrides):
    """A 4-epoch run, and a fresh trainer continuing its checkpoint after epoch 2 (6 steps per epoch)."""
    full = make_trainer(tmp_path / "full", num_train_epochs=4, save_strategy="epoch")
    full.train()
    resumed_dir = tmp_path / "resumed" / "out"
    resumed_dir.mkdir(parents=True)
    shutil.copytree(tmp_path / "full" / "out" / "checkpoint-12", resumed_dir / "checkpoint-12")
    resumed = make_trainer(tmp_path / "resumed", num_train_epochs=4, save_strategy="epoch", **overrides)
    resumed.train(resume_from_checkpoint=True)
    return full, resumed


def assert_same_weights(a, b) -> None:
    expected = b.model.state_dict()
    for key, value in a.model.state_dict().items():
        torch.testing.assert_close(value, expected[key], atol=1e-6, rtol=0, msg=key)
