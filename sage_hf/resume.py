"""Which checkpoint a resumed run loads: the last complete one; a folder half-written by a killed save is skipped.

A checkpoint is written in place: SAGE's tensors, then (atomically) sage_state.json, then Trainer's weights,
optimizer, scheduler and RNG states, and last trainer_state.json. A checkpoint is complete when those JSON files
read back: everything written before them is there. Trainer deletes older checkpoints (save_total_limit) only after
trainer_state.json, so a complete one always remains.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


def incomplete_reason(folder: str | os.PathLike, sage: bool = True) -> str | None:
    """Why `folder` is not a complete checkpoint, or None when it is."""
    from transformers.trainer import TRAINER_STATE_NAME

    from .rounds.engine import STATE_JSON

    for name in [TRAINER_STATE_NAME] + ([STATE_JSON] if sage else []):
        try:
            json.loads(Path(folder, name).read_text())
        except (OSError, ValueError):
            return f"no readable {name}"
    return None


def checkpoints_newest_first(output_dir: str | os.PathLike) -> list[str]:
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    folders = Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*") if os.path.isdir(output_dir) else []
    steps = {str(f): int(f.name.rsplit("-", 1)[1]) for f in folders
             if f.is_dir() and f.name.rsplit("-", 1)[1].isdigit()}
    return sorted(steps, key=steps.get, reverse=True)


def resolve_checkpoint(output_dir, resume_from_checkpoint, sage: bool = True) -> str | None:
    """`True`: the newest complete checkpoint in `output_dir`; a path: that one, if complete."""
    if resume_from_checkpoint is True:
        for folder in checkpoints_newest_first(output_dir):
            reason = incomplete_reason(folder, sage)
            if reason is None:
                return folder
            logger.warning("Skipping the half-written checkpoint %s (%s); it is never loaded.", folder, reason)
        raise ValueError(f"No complete checkpoint found in output_dir ({output_dir}) to resume from.")
    if resume_from_checkpoint:
        # A named checkpoint may come from a run without SAGE: its SAGE state is only needed once it was begun.
        begun = sage and any(Path(resume_from_checkpoint).glob("sage_state*"))
        reason = incomplete_reason(resume_from_checkpoint, begun)
        if reason is not None:
            raise ValueError(f"The checkpoint {resume_from_checkpoint} is half-written ({reason}): resume from an "
                             "earlier one, or pass resume_from_checkpoint=True to take the last complete one.")
    return resume_from_checkpoint or None
