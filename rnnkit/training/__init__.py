"""Training: the loop (``Trainer``), its configuration, metrics and per-epoch callbacks."""

from .callbacks import Callback, CurvePlotter, EarlyStopping, JsonlLogger, plot_history
from .metrics import (BleuMetrics, ClassificationMetrics, PerplexityMetrics, RegressionMetrics,
                      TaggingMetrics)
from .options import OptimizerConfig, SchedulerConfig, TrainerConfig
from .trainer import Trainer, evaluate_batches, seed_everything

__all__ = ["Trainer", "evaluate_batches", "TrainerConfig", "OptimizerConfig", "SchedulerConfig", "seed_everything",
           "Callback", "EarlyStopping", "JsonlLogger", "CurvePlotter", "plot_history",
           "ClassificationMetrics", "TaggingMetrics", "PerplexityMetrics", "BleuMetrics",
           "RegressionMetrics"]
