"""Test helpers: tiny random models, batches, data sets and tokenizers, built from configs like transformers' own
model testers (no network, no downloads), and the small SAGE runs several test files share."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    DistilBertConfig,
    ElectraConfig,
    RobertaConfig,
)

from sage_hf import SageStudentForSequenceClassification, SageTrainer, SageTrainingArguments, TeacherInterface

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


def tiny_tokenizer(tmp_path: Path):
    """A word-level BERT tokenizer over a 99-token vocabulary ('w5' ... 'w98'), written to `tmp_path`."""
    from transformers import BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(5, VOCAB)]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizer(vocab=str(vocab), do_lower_case=True)  # `vocab_file=` is ignored in transformers 5
    assert len(tokenizer) == VOCAB and tokenizer("w5 w6")["input_ids"] == [2, 5, 6, 3]
    return tokenizer


def clustered(n: int, seed: int = 0, width: int = HIDDEN, n_clusters: int = 6) -> np.ndarray:
    """Well-separated Gaussian clusters: structure UMAP can find in a few hundred points."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).normal(size=(n_clusters, width)) * 3
    return (centres[rng.integers(0, n_clusters, n)] + rng.normal(size=(n, width))).astype(np.float32)


def write_sst2(folder: Path, n_train=64, n_dev=32, seed=0):
    """SST-2 layout; the label is whether the sentence has more 'low' words (w5..w50) than 'high' ones."""
    g = torch.Generator().manual_seed(seed)
    (folder / "SST-2").mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("dev", n_dev)):
        rows = ["sentence\tlabel"]
        for _ in range(n):
            ids = torch.randint(5, 99, (int(torch.randint(4, 10, (1,), generator=g)),), generator=g).tolist()
            label = int(sum(i < 52 for i in ids) > len(ids) / 2)
            rows.append(" ".join(f"w{i}" for i in ids) + f"\t{label}")
        (folder / "SST-2" / f"{name}.tsv").write_text("\n".join(rows) + "\n")
    return folder


# ---- small SAGE runs ----------------------------------------------------------------------------------------
def sage_args(tmp_path, **overrides):
    defaults = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=16, num_train_epochs=3,
                    learning_rate=2e-3, report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no",
                    logging_strategy="no", seed=0, data_seed=0, reducer="pca", n_neighbors=10, sample_neighbors=5,
                    map_cache_dir=str(tmp_path / "maps"), save_round_plots=False, decode_examples=0,
                    agreement_threshold=1.0, synthesis="shift", synthesis_mode="replace",
                    hidden_loss="none", round_precision="float32")
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


def uninterrupted_and_resumed(tmp_path, shared=None, **overrides):
    """A 4-epoch run, and a fresh trainer continuing its checkpoint after epoch 2 (6 steps per epoch); `shared`
    settings go to both, `overrides` to the resumed one only."""
    shared = shared or {}
    full = make_trainer(tmp_path / "full", num_train_epochs=4, save_strategy="epoch", **shared)
    full.train()
    resumed_dir = tmp_path / "resumed" / "out"
    resumed_dir.mkdir(parents=True)
    shutil.copytree(tmp_path / "full" / "out" / "checkpoint-12", resumed_dir / "checkpoint-12")
    resumed = make_trainer(tmp_path / "resumed", num_train_epochs=4, save_strategy="epoch", **{**shared, **overrides})
    resumed.train(resume_from_checkpoint=True)
    return full, resumed


def assert_same_weights(a, b) -> None:
    expected = b.model.state_dict()
    for key, value in a.model.state_dict().items():
        torch.testing.assert_close(value, expected[key], atol=1e-6, rtol=0, msg=key)
