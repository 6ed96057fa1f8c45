"""Run the frozen teacher once over a dataset and keep its logits, so KD epochs need no teacher forward."""

from __future__ import annotations

import logging

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .collator import SageDataCollator
from .models.teacher import as_teacher

logger = logging.getLogger(__name__)

_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "inputs_embeds")


@torch.no_grad()
def compute_teacher_logits(
    teacher, dataset, batch_size: int = 64, tokenizer=None, device=None, desc: str = "Teacher logits"
) -> torch.Tensor:
    """Teacher logits for every row of `dataset` (in order), shape (len(dataset), num_labels), on the CPU."""
    t = as_teacher(teacher)
    if len(dataset) == 0:
        raise ValueError("Cannot compute teacher logits for an empty dataset.")
    device = device or t.model.device
    columns = [c for c in _MODEL_INPUTS if c in dataset.column_names]
    if "input_ids" not in columns and "inputs_embeds" not in columns:
        raise ValueError(
            f"The dataset has neither 'input_ids' nor 'inputs_embeds' (columns: {dataset.column_names}): "
            "tokenize it first."
        )
    rows = dataset.select_columns(columns).with_format(None)
    loader = DataLoader(rows, batch_size=batch_size, shuffle=False, collate_fn=SageDataCollator(tokenizer))
    was_training = t.training
    t.eval()
    out = []
    for batch in tqdm(loader, desc=desc, disable=len(loader) < 2):
        batch = {k: v.to(device) for k, v in batch.items()}
        if "inputs_embeds" in batch:
            logits = t.logits_from_layer1(batch["inputs_embeds"], batch["attention_mask"])
        else:
            logits = t(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        out.append(logits.float().cpu())
    t.train(was_training)
    return torch.cat(out)


def cache_teacher_logits(teacher, dataset, batch_size: int = 64, tokenizer=None, device=None,
                         column: str = "teacher_logits"):
    """`dataset` with a `teacher_logits` column added (replacing any stale one)."""
    logits = compute_teacher_logits(teacher, dataset, batch_size, tokenizer, device)
    if column in dataset.column_names:
        dataset = dataset.remove_columns(column)
    logger.info("Cached teacher logits for %d examples.", len(dataset))
    return dataset.add_column(column, logits.numpy().tolist())
