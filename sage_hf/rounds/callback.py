"""`SageCallback`: turns Trainer events into `SageEngine.step`, logs, `control` and the round plot.

The engine's state (round, history, buffer) is saved into every checkpoint by `SageTrainer._save_checkpoint` and
restored by `SageTrainer.train`, so this callback keeps no state of its own.
"""

from __future__ import annotations

from transformers import TrainerCallback

from ..publishing.plots import plot_round, round_plot_path


class SageCallback(TrainerCallback):
    """A step before the first optimiser step and after every epoch; stops training at teacher agreement."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        if not self.trainer.sage_engine.restored:
            self._step(args, state, control, epoch=0.0)
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        self._step(args, state, control, epoch=state.epoch, last_epoch=state.global_step >= state.max_steps)
        return control

    def _step(self, args, state, control, epoch: float, last_epoch: bool = False) -> None:
        trainer = self.trainer
        report = trainer.sage_engine.step(trainer.accelerator.unwrap_model(trainer.model), epoch,
                                          accelerator=trainer.accelerator, global_step=state.global_step,
                                          last_epoch=last_epoch)
        if report.stopped:
            control.should_training_stop = True
        # Trainer.log() clears control.should_log; keep the epoch's own training-loss log that may be due.
        should_log = control.should_log
        trainer.log(report.logs())
        control.should_log = should_log
        if report.generated and args.save_round_plots and state.is_world_process_zero:
            plot_round(report.coords, report.losses, round_plot_path(args.output_dir, report.round),
                       anchors=report.anchors, points=report.points, axis_label=report.axis_label,
                       title=f"SAGE round {report.round} (epoch {epoch:.2f})")
