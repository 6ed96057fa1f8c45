"""Task data in one layout (the Hub's GLUE columns), whatever its source."""

from sage_hf.data.glue import (
    GLUE_TASKS,
    GlueTask,
    get_task,
    infer_text_columns,
    load_custom,
    load_glue,
    validate_labels,
)

__all__ = [
    "GLUE_TASKS",
    "GlueTask",
    "get_task",
    "infer_text_columns",
    "load_custom",
    "load_glue",
    "validate_labels",
]
