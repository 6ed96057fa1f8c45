"""sage-hf: distil a small, fast student from a frozen teacher with SAGE (arXiv 2508.14783).

Data flow: text -> teacher input layer -> layer-1 vectors -> student; losses -> difficulty map ->
synthetic vectors -> next epoch.
"""

__version__ = "0.1.0"

from .collator import SageDataCollator
from .losses import distillation_loss_per_example, kd_loss_per_example
from .models.export import export_student
from .models.offline import default_teacher_path
from .models.student import SageStudentConfig, SageStudentForSequenceClassification, default_teacher_layers
from .models.teacher import TeacherInterface, UnsupportedArchitectureError, as_teacher
from .teacher_cache import cache_teacher_logits, compute_teacher_logits
from .trainer import SageTrainer
from .training_args import SageTrainingArguments

__all__ = [
    "SageDataCollator",
    "SageStudentConfig",
    "SageStudentForSequenceClassification",
    "SageTrainer",
    "SageTrainingArguments",
    "TeacherInterface",
    "UnsupportedArchitectureError",
    "as_teacher",
    "cache_teacher_logits",
    "compute_teacher_logits",
    "default_teacher_layers",
    "default_teacher_path",
    "distillation_loss_per_example",
    "export_student",
    "kd_loss_per_example",
]
