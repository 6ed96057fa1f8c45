"""One SAGE step: score -> stop rule -> round (map -> select -> sample -> synthesise -> label -> fill the buffer).

The map and sampling steps run only for methods that read map points (`shift`, `interpolate`).

`SageEngine` owns everything that outlives a round: the real examples, their pooled layer-1 vectors and
cached teacher logits, the fitted map (fitted once per teacher, dataset and reducer settings, cached on disk)
and the training buffer. Every random choice of round r comes from `default_rng([seed, r])`, so every rank
of a distributed run, and a resumed run, draws the same synthetic set.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..maps.cache import fit_or_load_reducer
from .anchors import select_anchors
from .buffer import SageTrainBuffer, SyntheticSet, entry_batch
from .candidates import keep_best, label_keeping_score
from .config import RoundConfig
from .decode import decode_synthetic
from .sampling import sample_near_anchors
from .scoring import TrainingPassScores, by_length, difficulty_and_agreement, pooled_layer1, score_examples
from .synthesis import ProposalContext, get_synthesis

logger = logging.getLogger(__name__)

STATE_TENSORS = "sage_state.safetensors"  # the buffer's entries
STATE_JSON = "sage_state.json"  # round, history, stop reason, settings
_PASS_PREFIX = "training_pass."  # the epoch's training-pass scores, in the same safetensors file
# Settings a resumed run must share with its checkpoint, or its later rounds draw another synthetic set.
# Device-dependent or budget settings (round_precision, max_rounds, num_train_epochs, ...) may change on resume.
_DRAW_FIELDS = ("seed", "pooling", "difficulty_kd_loss", "difficulty_temperature", "score_pass", "anchor_policy",
                "anchor_fraction", "sample_neighbors", "jitter", "shift_scale", "synthetic_count", "regenerate",
                "synthesis", "synthesis_mode", "synthesis_start_epoch", "adversarial_steps", "adversarial_radius",
                "adversarial_through_teacher", "swap_fraction", "swap_candidates", "swap_shared_words",
                "candidates_per_anchor", "candidate_choice")


@dataclass
class RoundReport:
    """What one `SageEngine.step` did; `record()` is its history entry, the rest feeds logs and the plot."""

    round: int
    epoch: float
    synthetic_count: int
    agreement: float
    mean_loss: float
    anchors_mean_loss: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    digest: str | None = None
    anchor_fallback: bool = False
    label_kept: float | None = None  # label_preserving choice: share of anchors whose kept candidate has their label
    decoded: list[str] = field(default_factory=list)
    scored_by: str = "scoring pass"  # or "training pass": the epoch's own losses
    generated: bool = True  # False: scored only (stopped, regenerate='once', max_rounds or the last epoch)
    stopped: bool = False  # the agreement threshold was reached: training should stop
    stop_reason: str | None = None
    # plot inputs, never recorded
    losses: np.ndarray | None = field(default=None, repr=False)
    coords: np.ndarray | None = field(default=None, repr=False)  # None: the method fits no map
    anchors: np.ndarray | None = field(default=None, repr=False)
    points: np.ndarray | None = field(default=None, repr=False)
    axis_label: str = "umap"

    _RECORDED = ("round", "epoch", "synthetic_count", "agreement", "mean_loss", "anchors_mean_loss", "seconds",
                 "digest", "anchor_fallback", "label_kept", "decoded", "scored_by")

    def record(self) -> dict:
        return {k: getattr(self, k) for k in self._RECORDED}

    def logs(self) -> dict[str, float]:
        """The metrics `Trainer.log` gets."""
        logs = {"sage/agreement": self.agreement, "sage/mean_loss": self.mean_loss}
        if self.stopped:
            logs["sage/stopped"] = 1.0
        if self.generated:
            logs = {"sage/round": self.round, **logs, "sage/anchors_mean_loss": self.anchors_mean_loss,
                    "sage/synthetic": self.synthetic_count}
            if self.label_kept is not None:
                logs["sage/label_kept"] = self.label_kept
            logs.update({f"sage/seconds_{k}": v for k, v in self.seconds.items()})
        return logs

    def line(self) -> str:
        secs = " ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
        anchors = "n/a" if self.anchors_mean_loss is None else f"{self.anchors_mean_loss:.4f}"
        return (f"SAGE round {self.round} (epoch {self.epoch:.2f}): agreement {self.agreement:.4f}, mean loss "
                f"{self.mean_loss:.4f} (scored by the {self.scored_by}), anchors' mean loss {anchors}, "
                f"{self.synthetic_count} synthetic; {secs}; set {self.digest}")


class SageEngine:
    """The rounds of one training run: `step` is called before the first epoch and after every epoch."""

    def __init__(self, teacher, real_features: dict[str, list], teacher_logits: torch.Tensor, labels: list | None,
                 config: RoundConfig, *, map_cache_dir: str | Path | None = None, map_key: str = "", tokenizer=None):
        n = len(real_features["input_ids"])
        config.check_data(n, teacher.width)
        self.config = config
        self.teacher = teacher
        self.features = real_features
        self.teacher_logits = teacher_logits.float()
        self.tokenizer = tokenizer
        self.method = get_synthesis(config.synthesis)
        self.n_real = n
        self.synthetic_count = config.synthetic_count if config.synthetic_count is not None else n
        length = self.synthetic_count if config.synthesis_mode == "replace" else n + self.synthetic_count
        self.sizes = {"hidden": teacher.width, "tokens": max(len(ids) for ids in real_features["input_ids"])}
        self.buffer = SageTrainBuffer(real_features, labels, length, self.teacher_logits.shape[-1], self.method,
                                      self.sizes)
        self.buffer.fill(self._real_entries(np.arange(length) % n))
        self.real_lengths = torch.tensor([len(ids) for ids in real_features["input_ids"]])
        # Filled by SageTrainer.compute_loss when every real example is trained on each epoch.
        self.training_pass = TrainingPassScores(n, config.difficulty_kwargs())
        self.scored_by = "scoring pass"
        self.map_cache_dir = map_cache_dir
        self.map_key = map_key
        self.round = 0
        self.history: list[dict] = []
        self.stop_reason: str | None = None
        self.restored = False
        self.pooled: np.ndarray | None = None
        self.map = None  # the fitted reducer
        self._restored_map_key: str | None = None

    @property
    def observes_training(self) -> bool:
        """Whether the training pass should record scores: real examples are in every epoch (augment, mix)."""
        return self.config.score_pass == "auto" and self.config.synthesis_mode != "replace"

    def _real_entries(self, indices) -> SyntheticSet:
        return SyntheticSet.real(indices, self.teacher_logits, self.method, self.sizes)

    # ---- map: fitted once -----------------------------------------------------------------------------
    def ensure_map(self) -> float:
        """Pool the real examples and fit (or load) the reducer, once; returns the seconds spent."""
        if self.map is not None:
            return 0.0
        start = time.perf_counter()
        cfg = self.config
        self.pooled = pooled_layer1(self.teacher, self.features, cfg.teacher_batch_size, cfg.pooling,
                                    show_progress=self._is_main())
        extra = f"{self.map_key}|pooling={cfg.pooling}|interface={self.teacher.interface_layer}"
        self.map = fit_or_load_reducer(cfg.reducer, self.pooled, self.map_cache_dir, extra_key=extra)
        if self._restored_map_key not in (None, self.map.cache_key):
            logger.warning("The map differs from the one the checkpoint was trained with (other teacher, data or "
                           "pooling): later rounds sample from the new map.")
        return time.perf_counter() - start

    # ---- one step: score -> stop rule -> round ----------------------------------------------------------
    def step(self, student, epoch: float, *, accelerator=None, global_step: int | None = None,
             last_epoch: bool = False) -> RoundReport:
        """Score the student; stop at the agreement threshold, else run a round when one is due."""
        cfg = self.config
        start = time.perf_counter()
        losses, agreement = self.score(student, accelerator)
        score_seconds = time.perf_counter() - start
        rate = float(agreement.mean())
        if epoch > 0 and rate >= cfg.agreement_threshold:
            self.stop_reason = (f"agreement {rate:.4f} >= {cfg.agreement_threshold} with the teacher on the real "
                                f"training set after epoch {epoch:.2f}")
            logger.info("SAGE stops: %s", self.stop_reason)
            return self._scored_only(epoch, losses, rate, score_seconds, stopped=True)
        started = epoch + 1e-6 >= cfg.synthesis_start_epoch  # before: the synthetic slots hold real examples
        due = started and (self.round == 0 or (cfg.regenerate == "every_epoch" and self.round < cfg.max_rounds
                                               and not last_epoch))
        if not started and self._is_main():
            logger.info("SAGE round deferred: epoch %d trains on real examples only (synthesis_start_epoch=%d)",
                        int(round(epoch)) + 1, cfg.synthesis_start_epoch)
        if not due:
            if last_epoch and self.stop_reason is None:
                self.stop_reason = f"epoch limit reached ({cfg.num_train_epochs:g} epochs, {self.round} rounds)"
            return self._scored_only(epoch, losses, rate, score_seconds)
        report = self.run_round(student, losses, agreement, epoch=epoch, step=global_step, score_seconds=score_seconds)
        if self._is_main():
            logger.info(report.line())
            for text in report.decoded:
                logger.info("  synthetic example reads like: %s", text)
        return report

    def _scored_only(self, epoch, losses, rate, score_seconds, stopped=False) -> RoundReport:
        return RoundReport(round=self.round, epoch=epoch, synthetic_count=0, agreement=rate,
                           mean_loss=float(losses.mean()), seconds={"score": score_seconds}, generated=False,
                           stopped=stopped, stop_reason=self.stop_reason, scored_by=self.scored_by)

    def score(self, student, accelerator=None) -> tuple[np.ndarray, np.ndarray]:
        """Difficulty (soft-target loss) and agreement on every real example.

        From the epoch's training pass where it met every real example (on some rank); otherwise (replace mode,
        before any training, a truncated or resumed epoch without its saved scores, score_pass='always') from a
        separate pass in which each rank scores a shard.
        """
        observed = self.training_pass.complete(accelerator) if self.observes_training else None
        self.training_pass.reset()
        self.scored_by = "scoring pass" if observed is None else "training pass"
        if observed is not None:
            return observed
        rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
        indices = np.arange(rank, self.n_real, world)
        with self.config.inference_autocast(next(student.parameters()).device):
            losses, agree = score_examples(student, self.teacher, self.features, self.teacher_logits, indices,
                                           batch_size=self.config.teacher_batch_size,
                                           loss_kwargs=self.config.difficulty_kwargs(),
                                           show_progress=self._is_main())
        if world > 1:
            from accelerate.utils import gather_object

            parts = gather_object([(indices, losses, agree)])
            full_l, full_a = np.empty(self.n_real, np.float32), np.empty(self.n_real, bool)
            for idx, l_part, a_part in parts:
                full_l[idx], full_a[idx] = l_part, a_part
            return full_l, full_a
        return losses.astype(np.float32), agree.astype(bool)

    def run_round(self, student, losses: np.ndarray, agreement: np.ndarray, epoch: float, step: int | None = None,
                  score_seconds: float = 0.0) -> RoundReport:
        """Select anchors by `losses`, sample near them, synthesise, label, and refill the buffer."""
        cfg = self.config
        self.round += 1
        uses_map = self.method.uses_map  # swap, adversarial and repeat read no map point: fit and sample nothing
        seconds = {"score": score_seconds, "map": self.ensure_map() if uses_map else 0.0}
        rng = np.random.default_rng([cfg.seed, self.round])

        start = time.perf_counter()
        if np.isnan(losses).any():
            bad = np.flatnonzero(np.isnan(losses))[:10].tolist()
            raise FloatingPointError(f"NaN distillation loss at step {step} for real examples {bad}: the student "
                                     "diverged (lower the learning rate, or check the inputs).")
        classes = self.teacher_logits.argmax(-1).numpy() if self.teacher_logits.shape[-1] > 1 else None
        selection = select_anchors(losses, self.synthetic_count, policy=cfg.anchor_policy,
                                   fraction=cfg.anchor_fraction, rng=rng, classes=classes)
        points = sample_near_anchors(self.map, selection.indices, k=cfg.sample_neighbors, jitter=cfg.jitter,
                                     rng=rng) if uses_map else None
        seconds["sample"] = time.perf_counter() - start

        ctx = ProposalContext(anchors=selection.indices, points=points, map=self.map if uses_map else None,
                              pooled=self.pooled if uses_map else None,
                              teacher=self.teacher, student=student, features=self.features, rng=rng, config=cfg,
                              show_progress=self._is_main(), teacher_logits=self.teacher_logits)
        anchors = torch.as_tensor(selection.indices, dtype=torch.long)
        m = len(anchors)
        synthetic = best = None
        for _ in range(cfg.candidates_per_anchor):  # each proposal draws anew from `rng`
            candidate = self._propose_and_label(ctx, anchors, seconds)
            if cfg.candidates_per_anchor == 1:
                synthetic = candidate
                continue
            start = time.perf_counter()
            if cfg.candidate_choice == "label_preserving":
                score = label_keeping_score(self.teacher_logits[anchors], candidate.teacher_logits)
            else:
                score = self.difficulty(student, candidate)
            synthetic, best = keep_best(synthetic, best, candidate, score)
            seconds["choose"] = seconds.get("choose", 0.0) + time.perf_counter() - start
        label_kept = None
        if cfg.candidate_choice == "label_preserving" and best is not None and self.teacher_logits.shape[-1] > 1:
            label_kept = float((best == 0).float().mean())
            logger.info("Round %d: %.1f%% of anchors kept a candidate with their teacher label (of %d candidates)",
                        self.round, 100.0 * label_kept, cfg.candidates_per_anchor)

        if cfg.synthesis_mode != "replace":  # augment and mix: the real entries first, then the synthetic ones
            synthetic = SyntheticSet.concat(self._real_entries(np.arange(self.n_real)), synthetic)
        self.buffer.fill(synthetic)
        report = RoundReport(round=self.round, epoch=epoch, synthetic_count=m, agreement=float(agreement.mean()),
                             mean_loss=float(losses.mean()), anchors_mean_loss=float(selection.mean_loss),
                             seconds=seconds, digest=synthetic.digest(),
                             anchor_fallback=bool(selection.fell_back_to_uniform), label_kept=label_kept,
                             stop_reason=self.stop_reason,
                             losses=losses, coords=self.map.embedding_ if uses_map else None,
                             anchors=selection.indices, points=points.points if uses_map else None,
                             axis_label=cfg.reducer.name, scored_by=self.scored_by)
        report.decoded = self._decode(synthetic)
        self.history.append(report.record())
        return report

    def _propose_and_label(self, ctx: ProposalContext, anchors: torch.Tensor, seconds: dict) -> SyntheticSet:
        """One synthetic entry per anchor, labelled by the teacher; adds its time to `seconds`."""
        start = time.perf_counter()
        entries = SyntheticSet(anchors, torch.zeros(len(anchors), self.teacher_logits.shape[-1]),
                               torch.ones(len(anchors), dtype=torch.bool), self.method.propose(ctx))
        seconds["invert"] = seconds.get("invert", 0.0) + time.perf_counter() - start
        start = time.perf_counter()
        if self.method.labels_from_cache:
            entries.teacher_logits = self.teacher_logits[anchors].clone()
        else:
            entries.teacher_logits = self.label(entries)
        seconds["label"] = seconds.get("label", 0.0) + time.perf_counter() - start
        return entries

    def label(self, entries: SyntheticSet) -> torch.Tensor:
        """Teacher logits of synthetic entries (real ones keep their cached logits), from layer 1."""
        return self._logits_of(entries, self.teacher.logits_from_layer1, next(self.teacher.parameters()).device)

    def difficulty(self, student, entries: SyntheticSet) -> torch.Tensor:
        """Per entry, the student's soft-target loss against the entry's teacher logits (dropout off)."""
        dtype = next(student.parameters()).dtype

        def forward(vectors, mask):
            return student(inputs_embeds=vectors.to(dtype), attention_mask=mask).logits

        was_training = student.training
        student.eval()
        try:
            logits = self._logits_of(entries, forward, next(student.parameters()).device)
        finally:
            student.train(was_training)
        losses, _ = difficulty_and_agreement(logits, entries.teacher_logits, self.config.difficulty_kwargs())
        return losses

    def _logits_of(self, entries: SyntheticSet, forward, device) -> torch.Tensor:
        """`forward(layer-1 vectors, mask)` of every entry, float32 on the CPU, rows in entry order.

        In inference mode (and `round_precision`), in batches of `teacher_batch_size` entries of similar length.
        """
        out = torch.zeros(len(entries), self.teacher_logits.shape[-1])
        lengths = self.method.lengths(self.real_lengths, entries.source, entries.columns)
        for rows in by_length(lengths.numpy(), self.config.teacher_batch_size):
            batch = entry_batch(self.features, entries, self.method, rows.tolist())
            with torch.inference_mode(), self.config.inference_autocast(device):
                vectors, mask = self.method.materialise(self.teacher, {k: v.to(device) for k, v in batch.items()})
                out[torch.from_numpy(rows)] = forward(vectors, mask).float().cpu()
        return out

    def _decode(self, entries: SyntheticSet) -> list[str]:
        if not self.config.decode_examples or self.tokenizer is None or self.teacher.interface_layer != 0:
            return []
        try:
            return decode_synthetic(self.teacher, self.tokenizer, self.features, entries, self.method,
                                    self.config.decode_examples)
        except Exception as err:  # decoding is for reading only; never let it stop training
            logger.warning("Could not decode synthetic examples: %s", err)
            return []

    # ---- checkpoint state: safetensors + JSON, nothing unpickled ---------------------------------------
    def state_dict(self) -> dict:
        """The JSON part of the checkpoint state (the buffer's tensors go to a safetensors file)."""
        return {"round": self.round, "history": self.history, "stop_reason": self.stop_reason,
                **{name: getattr(self.config, name) for name in _DRAW_FIELDS},
                "reducer_settings": dataclasses.asdict(self.config.reducer),
                "reducer_fit_fields": self.config.reducer.fit_fields(),
                "map_cache_key": getattr(self.map, "cache_key", self._restored_map_key)}

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        tensors = self.buffer.contents().tensors()
        tensors.update({_PASS_PREFIX + k: v for k, v in self.training_pass.tensors().items()})
        save_file(tensors, folder / STATE_TENSORS)
        # Written after the tensors and atomically: a JSON that reads back means the state is complete.
        partial = folder / f"{STATE_JSON}.partial"
        partial.write_text(json.dumps(self.state_dict(), indent=1))
        os.replace(partial, folder / STATE_JSON)

    def load(self, folder: str | Path) -> bool:
        """Restore the state saved in checkpoint `folder`; False when it has none (a run without SAGE)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / STATE_JSON).is_file():
            return False
        state = json.loads((folder / STATE_JSON).read_text())
        saved, ours = state["reducer_fit_fields"], self.config.reducer.fit_fields()
        if saved != ours:
            raise ValueError(f"Cannot resume from {folder}: it was trained with reducer settings {saved}, but this "
                             f"run asks for {ours}. Resume with the checkpoint's settings or start a new output_dir.")
        for name in _DRAW_FIELDS:  # a checkpoint older than a field's record cannot be checked on it
            if name in state and state[name] != getattr(self.config, name):
                raise ValueError(f"Cannot resume from {folder}: it was trained with {name}={state[name]!r}, but this "
                                 f"run asks for {name}={getattr(self.config, name)!r}: later rounds would draw "
                                 "another synthetic set. Resume with the checkpoint's setting or start a new "
                                 "output_dir.")
        tensors = load_file(folder / STATE_TENSORS)
        buffer = {k: v for k, v in tensors.items() if not k.startswith(_PASS_PREFIX)}
        self.buffer.fill(SyntheticSet.from_tensors(buffer))
        # A checkpoint written mid-epoch carries that epoch's scores so far: the resumed epoch completes them.
        self.training_pass.load_tensors({k[len(_PASS_PREFIX):]: v for k, v in tensors.items()
                                         if k.startswith(_PASS_PREFIX)})
        self.round, self.history, self.stop_reason = state["round"], state["history"], state["stop_reason"]
        self._restored_map_key = state["map_cache_key"]
        self.restored = True
        logger.info("Resumed SAGE at round %d from %s (set %s)", self.round, folder, self.buffer.contents().digest())
        return True

    @staticmethod
    def _is_main() -> bool:
        from accelerate import PartialState

        return PartialState().is_main_process
