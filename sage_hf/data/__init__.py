"""Task data in one layout (the Hub's GLUE columns), whatever its source; the recipe's stages are in `stages`."""

from .custom import infer_text_columns, load_custom
from .glue import GLUE_TASKS, GlueTask, get_task, load_glue
from .labels import validate_labels

__all__ = [
    "GLUE_TASKS",
    "GlueTask",
    "get_task",
    "infer_text_columns",
    "load_custom",
    "load_glue",
    "validate_labels",
]
