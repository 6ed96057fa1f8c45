"""One SAGE round: score -> map -> select -> sample -> invert -> label -> fill the next epoch's buffer.

`SageEngine` owns everything that outlives a round: the real examples, their pooled layer-1 vectors and
cached teacher logits, the fitted map (fitted once per teacher, dataset and reducer settings, cached on disk)
and the training buffer. Every random choice of round r comes from `default_rng([seed, r])`, so every rank
of a distributed run, and a resumed run, draws the same synthetic set.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .anchors import select_anchors
from ..collator import SageDataCollator
from .scoring import pooled_layer1, score_examples
from ..maps.cache import fit_or_load_reducer
from ..maps.reducers import ReducerSettings
from .sampling import sample_near_anchors
from .buffer import SageTrainBuffer, SyntheticSet, materialise

logger = logging.getLogger(__name__)

STATE_FILE = "sage_state.pt"


@dataclass
class RoundReport:
    round: int
    epoch: float
    synthetic_count: int
    agreement: float
    mean_loss: float
    anchors_mean_loss: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    digest: str | None = None
    anchor_fallback: bool = False
    decoded: list[str] = field(default_factory=list)

    def line(self) -> str:
        secs = " ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
        anchors = "n/a" if self.anchors_mean_loss is None else f"{self.anchors_mean_loss:.4f}"
        return (f"SAGE round {self.round} (epoch {self.epoch:.2f}): agreement {self.agreement:.4f}, mean loss "
                f"{self.mean_loss:.4f}, anchors' mean loss {anchors}, {self.synthetic_count} synthetic; {secs}; "
                f"set {self.digest}")


def reducer_settings_from_args(args) -> ReducerSettings:
    return ReducerSettings(name=args.reducer, n_components=args.n_components, n_neighbors=args.n_neighbors,
                           metric=args.reducer_metric, seed=args.seed, inverse_backend=args.inversion_backend)


class SageEngine:
    def __init__(self, teacher, real_features: dict[str, list], teacher_logits: torch.Tensor, labels: list | None,
                 args, map_cache_dir: str | Path | None = None, map_key: str = ""):
        n = len(real_features["input_ids"])
        if n == 0:
            raise ValueError("The training dataset is empty: SAGE needs real examples to start from.")
        self.teacher = teacher
        self.features = real_features
        self.teacher_logits = teacher_logits.float()
        self.args = args
        self.n_real = n
        self.settings = reducer_settings_from_args(args)
        if args.reducer == "umap" and args.n_neighbors >= n:
            raise ValueError(f"n_neighbors={args.n_neighbors} must be smaller than the number of training examples "
                             f"({n}): lower --n_neighbors or use more data.")
        if args.n_components > teacher.width:
            raise ValueError(f"n_components={args.n_components} is larger than the layer-1 vector width "
                             f"({teacher.width}).")
        if args.sample_neighbors >= n:
            raise ValueError(f"sample_neighbors={args.sample_neighbors} must be smaller than the number of training "
                             f"examples ({n}).")
        self.synthetic_count = args.synthetic_count if args.synthetic_count is not None else n
        length = self.synthetic_count if args.synthesis_mode == "replace" else n + self.synthetic_count
        self.buffer = SageTrainBuffer(real_features, labels, length, teacher.width, self.teacher_logits.shape[-1],
                                      pairs=args.synthesis == "interpolate")
        self.buffer.fill(SyntheticSet.real(np.arange(length) % n, self.teacher_logits, teacher.width))
        self.map_cache_dir = map_cache_dir
        self.map_key = map_key
        self.round = 0
        self.history: list[dict] = []
        self.stop_reason: str | None = None
        self.restored = False
        self.pooled: np.ndarray | None = None
        self.reducer = None
        self.last_points: np.ndarray | None = None
        self.last_anchors: np.ndarray | None = None

    # ---- map: fitted once -----------------------------------------------------------------------------
    def ensure_map(self) -> float:
        """Pool the real examples and fit (or load) the reducer, once; returns the seconds spent."""
        if self.reducer is not None:
            return 0.0
        start = time.perf_counter()
        show = self._is_main()
        self.pooled = pooled_layer1(self.teacher, self.features, self.args.teacher_batch_size, self.args.pooling,
                                    show_progress=show)
        extra = f"{self.map_key}|pooling={self.args.pooling}|interface={self.teacher.interface_layer}"
        self.reducer = fit_or_load_reducer(self.settings, self.pooled, self.map_cache_dir, extra_key=extra)
        return time.perf_counter() - start

    @property
    def coords(self) -> np.ndarray:
        return self.reducer.embedding_

    # ---- score -----------------------------------------------------------------------------------------
    def score(self, student, accelerator=None) -> tuple[np.ndarray, np.ndarray]:
        """Losses and agreement on every real example; each rank scores a shard, then all gather."""
        rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
        indices = np.arange(rank, self.n_real, world)
        losses, agree = score_examples(student, self.teacher, self.features, self.teacher_logits, indices,
                                       batch_size=self.args.teacher_batch_size, loss_kwargs=self._loss_kwargs(),
                                       show_progress=self._is_main())
        if world > 1:
            from accelerate.utils import gather_object

            parts = gather_object([(indices, losses, agree)])
            full_l, full_a = np.empty(self.n_real, np.float32), np.empty(self.n_real, bool)
            for idx, l_part, a_part in parts:
                full_l[idx], full_a[idx] = l_part, a_part
            return full_l, full_a
        return losses.astype(np.float32), agree.astype(bool)

    def _loss_kwargs(self) -> dict:
        a = self.args
        return {"temperature": a.temperature, "kind": a.kd_loss, "alpha_kd": 1.0, "alpha_hard": 0.0}

    # ---- one round -------------------------------------------------------------------------------------
    def run_round(self, student, losses: np.ndarray, agreement: np.ndarray, epoch: float, step: int | None = None,
                  score_seconds: float = 0.0) -> RoundReport:
        self.round += 1
        args = self.args
        seconds = {"score": score_seconds, "map": self.ensure_map()}
        rng = np.random.default_rng([args.seed, self.round])

        start = time.perf_counter()
        if np.isnan(losses).any():
            bad = np.flatnonzero(np.isnan(losses))[:10].tolist()
            raise FloatingPointError(f"NaN distillation loss at step {step} for real examples {bad}: the student "
                                     "diverged (lower the learning rate, or check the inputs).")
        selection = select_anchors(losses, self.synthetic_count, policy=args.anchor_policy,
                                   fraction=args.anchor_fraction, rng=rng)
        points = sample_near_anchors(self.reducer, selection.indices, k=args.sample_neighbors, jitter=args.jitter,
                                     rng=rng)
        seconds["sample"] = time.perf_counter() - start

        start = time.perf_counter()
        anchors = torch.as_tensor(selection.indices, dtype=torch.long)
        m = len(anchors)
        if args.synthesis == "interpolate":
            # Invert at the sequence level: the sampler's own anchor -> neighbour position, token by token.
            shift = torch.zeros(m, self.teacher.width)
            partner = torch.as_tensor(points.neighbour_idx, dtype=torch.long)
            mix = torch.as_tensor(points.t, dtype=torch.float32)
        else:
            inverted = self.reducer.inverse(points.points.astype(np.float32))
            shift = torch.as_tensor(inverted - self.pooled[selection.indices], dtype=torch.float32) * args.shift_scale
            partner, mix = anchors.clone(), torch.zeros(m)
        synthetic = SyntheticSet(anchors, shift, torch.zeros(m, self.teacher_logits.shape[-1]),
                                 torch.ones(m, dtype=torch.bool), partner, mix)
        seconds["invert"] = time.perf_counter() - start

        start = time.perf_counter()
        synthetic.teacher_logits = self.label(synthetic)
        seconds["label"] = time.perf_counter() - start

        if args.synthesis_mode == "augment":
            synthetic = SyntheticSet.concat(SyntheticSet.real(np.arange(self.n_real), self.teacher_logits,
                                                              self.teacher.width), synthetic)
        self.buffer.fill(synthetic)
        self.last_points, self.last_anchors = points.points, selection.indices
        report = RoundReport(round=self.round, epoch=epoch, synthetic_count=len(anchors),
                             agreement=float(agreement.mean()), mean_loss=float(losses.mean()),
                             anchors_mean_loss=float(selection.mean_loss), seconds=seconds,
                             digest=synthetic.digest(), anchor_fallback=bool(selection.fell_back_to_uniform))
        self.history.append(dataclasses.asdict(report))
        return report

    @torch.no_grad()
    def label(self, entries: SyntheticSet) -> torch.Tensor:
        """Teacher logits of synthetic examples, run from layer 1 in batches."""
        out = [self.teacher.logits_from_layer1(*self.materialise(entries, start, start + self.args.teacher_batch_size))
               .float().cpu() for start in range(0, len(entries), self.args.teacher_batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.teacher_logits.shape[-1])

    def materialise(self, entries: SyntheticSet, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer-1 vectors and mask of entries[start:stop], on the teacher's device."""
        device = next(self.teacher.parameters()).device
        rows = range(start, min(stop, len(entries)))
        items = []
        for i in rows:
            src, partner = int(entries.source[i]), int(entries.partner[i])
            item = {k: v[src] for k, v in self.features.items()}
            if self.buffer.pairs:
                item.update({f"partner_{k}": v[partner] for k, v in self.features.items()})
            items.append(item)
        batch = {k: v.to(device) for k, v in SageDataCollator()(items).items()}
        batch["shift"] = entries.shift[start:stop].to(device)
        if self.buffer.pairs:
            batch["mix"] = entries.mix[start:stop].to(device)
        return materialise(self.teacher, batch)

    # ---- checkpoint state -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"round": self.round, "history": self.history, "stop_reason": self.stop_reason,
                "buffer": dataclasses.asdict(self.buffer.contents()),
                "reducer_settings": dataclasses.asdict(self.settings),
                "map_cache_key": getattr(self.reducer, "cache_key", None)}

    def save(self, folder: str | Path) -> None:
        torch.save(self.state_dict(), Path(folder) / STATE_FILE)

    def load(self, folder: str | Path) -> bool:
        path = Path(folder) / STATE_FILE
        if not path.is_file():
            return False
        state = torch.load(path, weights_only=False)
        ours = dataclasses.asdict(self.settings)
        theirs = state["reducer_settings"]
        keys = ("name", "n_components", "n_neighbors", "metric", "seed")
        if any(ours[k] != theirs[k] for k in keys):
            mine = {k: ours[k] for k in keys}
            saved = {k: theirs[k] for k in keys}
            raise ValueError(f"Cannot resume from {folder}: it was trained with reducer settings {saved}, "
                             f"but this run asks for {mine}.")
        self.round, self.history, self.stop_reason = state["round"], state["history"], state["stop_reason"]
        self.buffer.fill(SyntheticSet(**state["buffer"]))
        self.restored = True
        logger.info("Resumed SAGE at round %d from %s (set %s)", self.round, folder, self.buffer.contents().digest())
        return True

    @staticmethod
    def _is_main() -> bool:
        from accelerate import PartialState

        return PartialState().is_main_process
