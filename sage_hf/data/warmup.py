"""Warm-up before round 1: logit distillation on unlabeled generic text, the teacher's logits as soft targets.

The paper warms up on Wikipedia + BookCorpus; `wikitext-2-raw` is a Wikipedia-derived stand-in. The source
may be a text file, a folder of text files, or a `datasets` dataset (an object, or a Hub name when online).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..hub_ids import looks_like_hub_id

logger = logging.getLogger(__name__)


def _is_heading_or_blank(line: str) -> bool:
    s = line.strip()
    return not s or (s.startswith("=") and s.endswith("="))


def load_warmup_texts(source, max_samples: int | None = None, min_words: int = 4, seed: int = 0) -> list[str]:
    """Lines of generic text (headings, blanks and very short lines dropped), at most `max_samples`."""
    if hasattr(source, "column_names"):  # a datasets.Dataset
        column = "text" if "text" in source.column_names else source.column_names[0]
        texts = [t for t in source[column] if isinstance(t, str)]
    else:
        path = Path(str(source))
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".raw", ".txt", ""))
            if not files:
                raise FileNotFoundError(f"The warm-up folder {path} holds no .txt or .raw files.")
        elif path.is_file():
            files = [path]
        elif looks_like_hub_id(source):
            import datasets

            return load_warmup_texts(datasets.load_dataset(str(source), split="train"), max_samples, min_words, seed)
        else:
            raise FileNotFoundError(f"The warm-up source '{source}' does not exist (give a text file, a folder of "
                                    "text files, or a datasets dataset).")
        texts = []
        for f in files:
            texts.extend(f.read_text(encoding="utf-8").splitlines())
    texts = [t.strip() for t in texts if not _is_heading_or_blank(t) and len(t.split()) >= min_words]
    if not texts:
        raise ValueError(f"The warm-up source '{source}' contains no usable text lines.")
    if max_samples is not None and len(texts) > max_samples:
        import numpy as np

        keep = np.sort(np.random.default_rng(seed).choice(len(texts), max_samples, replace=False))
        texts = [texts[i] for i in keep]
    logger.info("Warm-up text: %d lines from %s", len(texts), source if isinstance(source, (str, Path)) else "dataset")
    return texts


def tokenized_warmup_dataset(source, tokenizer, max_length: int = 128, max_samples: int | None = None, seed: int = 0):
    from datasets import Dataset

    if tokenizer is None:
        raise ValueError("A warm-up needs a tokenizer: pass processing_class=tokenizer to SageTrainer.")
    texts = load_warmup_texts(source, max_samples=max_samples, seed=seed)
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    return Dataset.from_dict({k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc})
