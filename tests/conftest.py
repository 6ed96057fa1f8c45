"""Tiny random models and data, built from configs like transformers' own model testers: no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from fixtures.hub_server import local_hub  # noqa: F401  (the local Hub double, a fixture for every test file)
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    DistilBertConfig,
    ElectraConfig,
    RobertaConfig,
)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SAGE_SHARED_DATA", REPO.parent / "shared" / "data"))
GLUE_DIR = SHARED_DATA / "glue"

VOCAB = 99
HIDDEN = 32


def tiny_config(family: str, num_layers: int = 4, num_labels: int = 3, dropout: float = 0.1):
    common = dict(vocab_size=VOCAB, num_labels=num_labels, max_position_embeddings=64)
    if family == "bert":
        return BertConfig(hidden_size=HIDDEN, num_hidden_layers=num_layers, num_attention_heads=4,
                          intermediate_size=37, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                          type_vocab_size=2, **common)
    if family == "roberta":
        return RobertaConfig(hidden_size=HIDDEN, num_hidden_layers=num_layers, num_attention_heads=4,
                             intermediate_size=37, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                             pad_token_id=1, type_vocab_size=1, **common)
    if family == "distilbert":
        return DistilBertConfig(dim=HIDDEN, n_layers=num_layers, n_heads=4, hidden_dim=37, dropout=dropout,
                                attention_dropout=dropout, seq_classif_dropout=dropout, **common)
    if family == "electra":
        return ElectraConfig(embedding_size=16, hidden_size=HIDDEN, num_hidden_layers=num_layers,
                             num_attention_heads=4, intermediate_size=37, hidden_dropout_prob=dropout,
                             attention_probs_dropout_prob=dropout, type_vocab_size=2, **common)
    raise KeyError(family)


FAMILIES = ["bert", "roberta", "distilbert", "electra"]


def tiny_teacher(family: str = "bert", seed: int = 0, attn: str = "sdpa", sharpen: float = 1.0, **kw):
    """A random teacher; `sharpen` scales its last linear layer so its soft targets are far from uniform."""
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(tiny_config(family, **kw), attn_implementation=attn)
    if sharpen != 1.0:
        last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            last.weight.mul_(sharpen)
    return model.eval()


def padded_batch(seed: int = 0, batch: int = 4, length: int = 11):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    for row in range(1, batch):
        mask[row, length - 2 * row:] = 0
    ids[mask == 0] = 1
    token_type_ids = torch.zeros_like(ids)
    token_type_ids[:, length // 2:] = 1
    return ids, mask * 1, token_type_ids * mask


def family_batch(family: str, seed: int = 0):
    """`padded_batch` with token types only where the family has two segment types."""
    ids, mask, tt = padded_batch(seed)
    return ids, mask, (tt if family in ("bert", "electra") else None)


def tiny_dataset(n: int = 64, seed: int = 0, num_labels: int = 3, min_len: int = 4, max_len: int = 12):
    from datasets import Dataset

    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        length = int(torch.randint(min_len, max_len, (1,), generator=g))
        ids = torch.randint(5, VOCAB, (length,), generator=g).tolist()
        rows.append({"input_ids": ids, "attention_mask": [1] * length, "label": i % num_labels})
    return Dataset.from_list(rows)


@pytest.fixture
def glue_dir() -> Path:
    if not (GLUE_DIR / "SST-2" / "dev.tsv").is_file():
        pytest.skip(f"GLUE data not found under {GLUE_DIR}")
    return GLUE_DIR


def tiny_tokenizer(tmp_path: Path):
    """A word-level BERT tokenizer over a 99-token vocabulary ('w5' ... 'w98'), written to `tmp_path`."""
    from transformers import BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(5, VOCAB)]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizer(vocab=str(vocab), do_lower_case=True)  # `vocab_file=` is ignored in transformers 5
    assert len(tokenizer) == VOCAB and tokenizer("w5 w6")["input_ids"] == [2, 5, 6, 3]
    return tokenizer


@pytest.fixture(autouse=True, scope="session")
def _isolated_sage_cache(tmp_path_factory):
    """Maps and tokenized data that tests cache go to a temporary folder, not the user's ~/.cache."""
    old = os.environ.get("SAGE_HF_CACHE")
    os.environ["SAGE_HF_CACHE"] = str(tmp_path_factory.mktemp("sage_hf_cache"))
    yield
    if old is None:
        os.environ.pop("SAGE_HF_CACHE", None)
    else:
        os.environ["SAGE_HF_CACHE"] = old
