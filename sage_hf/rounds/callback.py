"""`SageCallback`: runs a SAGE round after the warm-up and after every epoch, and applies the stop rule."""

from __future__ import annotations

import logging
import os
import time

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from .decode import decode_synthetic
from ..publishing.plots import plot_round

logger = logging.getLogger(__name__)


class SageCallback(TrainerCallback, ExportableState):
    """Swaps the next epoch's training set in place (see `SageTrainBuffer`) and stops at teacher agreement."""

    def __init__(self, trainer):
        self.trainer = trainer

    @property
    def engine(self):
        return self.trainer.sage_engine

    # ---- hooks ---------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.engine.restored:
            return control
        self._round(args, state, control, epoch=0.0)
        return control

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        last_epoch = state.global_step >= state.max_steps
        regenerate = (args.regenerate == "every_epoch" and self.engine.round < args.max_rounds and not last_epoch)
        self._round(args, state, control, epoch=state.epoch, generate=regenerate)
        return control

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            if os.path.isdir(folder):
                self.engine.save(folder)
        return control

    # ---- one round -----------------------------------------------------------------------------------
    def _log(self, control, logs: dict) -> None:
        # Trainer.log() clears control.should_log; keep the epoch's own training-loss log that may be due.
        should_log = control.should_log
        self.trainer.log(logs)
        control.should_log = should_log

    def _round(self, args, state, control, epoch: float, generate: bool = True):
        trainer, engine = self.trainer, self.engine
        student = trainer.accelerator.unwrap_model(trainer.model)
        start = time.perf_counter()
        losses, agreement = engine.score(student, trainer.accelerator)
        score_s = time.perf_counter() - start
        rate = float(agreement.mean())
        if epoch > 0 and rate >= args.agreement_threshold:
            engine.stop_reason = (f"agreement {rate:.4f} >= {args.agreement_threshold} with the teacher on the real "
                                  f"training set after epoch {epoch:.2f}")
            control.should_training_stop = True
            logger.info("SAGE stops: %s", engine.stop_reason)
            self._log(control, {"sage/agreement": rate, "sage/mean_loss": float(losses.mean()), "sage/stopped": 1.0})
            return
        if not generate:
            if state.global_step >= state.max_steps and engine.stop_reason is None:
                engine.stop_reason = f"epoch limit reached ({args.num_train_epochs:g} epochs, {engine.round} rounds)"
            self._log(control, {"sage/agreement": rate, "sage/mean_loss": float(losses.mean())})
            return
        report = engine.run_round(student, losses, agreement, epoch=epoch, step=state.global_step, score_seconds=score_s)
        if args.decode_examples and trainer.processing_class is not None and trainer.teacher.interface_layer == 0:
            try:
                report.decoded = decode_synthetic(engine, trainer.processing_class, args.decode_examples)
                engine.history[-1]["decoded"] = report.decoded
            except Exception as err:  # decoding is for reading only; never let it stop training
                logger.warning("Could not decode synthetic examples: %s", err)
        if state.is_world_process_zero:
            logger.info(report.line())
            for text in report.decoded:
                logger.info("  synthetic example reads like: %s", text)
            if args.save_round_plots:
                path = os.path.join(args.output_dir, "sage_rounds", f"round_{report.round:02d}.png")
                plot_round(engine, losses, path, title=f"SAGE round {report.round} (epoch {epoch:.2f})")
        logs = {"sage/round": report.round, "sage/agreement": report.agreement, "sage/mean_loss": report.mean_loss,
                "sage/anchors_mean_loss": report.anchors_mean_loss, "sage/synthetic": report.synthetic_count}
        logs.update({f"sage/seconds_{k}": v for k, v in report.seconds.items()})
        self._log(control, logs)

    # ---- ExportableState: saved in trainer_state.json with every checkpoint --------------------------
    def state(self) -> dict:
        e = self.engine
        return {"args": {}, "attributes": {"round": e.round, "stop_reason": e.stop_reason,
                                           "map_cache_key": getattr(e.reducer, "cache_key", None)}}
