"""Is a name a Hugging Face Hub id or a path on this machine? One answer for every loader and card."""

from __future__ import annotations

import os
import re

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def looks_like_hub_id(name: str | os.PathLike | None) -> bool:
    """'bert-base-uncased' or 'owner/name', and not a file or folder here (local paths must never reach metadata)."""
    if not name:
        return False
    name = os.fspath(name)
    if os.path.exists(name) or name.startswith((".", "/", "~")):
        return False
    return _HUB_ID.fullmatch(name) is not None
