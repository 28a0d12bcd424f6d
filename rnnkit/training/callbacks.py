"""What happens at the end of each epoch, one concern per callback.

A callback has ``on_epoch_end(trainer, record)`` (``record`` is the epoch's JSON-safe log line:
a non-finite value is ``None``, see ``json_safe``)
and optionally ``on_train_end(trainer)``. The trainer calls them on rank 0 only, in order;
early stopping sets ``trainer.should_stop``, which the trainer then broadcasts to all ranks.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

__all__ = ["Callback", "EarlyStopping", "JsonlLogger", "CurvePlotter", "json_safe"]


def json_safe(obj):
    """``obj`` with every NaN or infinite float (nested in dicts, lists and tuples) replaced by
    ``None``: strict JSON has no NaN or Infinity, and ``json.dumps`` would write them anyway."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


class Callback:
    def on_epoch_end(self, trainer, record: dict) -> None:
        pass

    def on_train_end(self, trainer) -> None:
        pass


class EarlyStopping(Callback):
    """Stop when the monitored dev metric has not improved for ``patience`` epochs.

    The trainer already tracks the best value (it chooses the 'best' checkpoint with it);
    this callback only counts the epochs since.
    """

    def __init__(self, patience: int) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an int >= 1; got {patience!r}")
        self.patience = patience

    def on_epoch_end(self, trainer, record: dict) -> None:
        if trainer.epochs_since_best >= self.patience:
            trainer.should_stop = True
            best = (f"best {trainer.best_value:.4g} at epoch {trainer.best_epoch}"
                    if trainer.best_value is not None else "no epoch had a finite value")
            record["early_stop"] = (f"{trainer.monitor} has not improved for {self.patience} epochs "
                                    f"({best})")


class JsonlLogger(Callback):
    """Append one JSON line per epoch to ``path`` (kept across resumes); non-finite values are
    written as ``null``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_epoch_end(self, trainer, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(json_safe(record), ensure_ascii=False, allow_nan=False) + "\n")


class CurvePlotter(Callback):
    """Learning curves as a PNG: train and dev loss, and every dev metric, per epoch."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_epoch_end(self, trainer, record: dict) -> None:
        plot_history(trainer.history, self.path, title=trainer.name)


def plot_history(history: list[dict], path: str | Path, *, title: str = "") -> Path:
    """Draw ``history`` (the trainer's per-epoch records) into ``path`` (PNG, matplotlib Agg).
    A missing or ``None`` (non-finite) value is a gap in its curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    metrics = sorted({k for r in history for k in r.get("dev", {}) if k != "loss"})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ax = axes[0]
    ax.plot(epochs, [_value(r.get("train_loss")) for r in history], marker="o", label="train loss")
    dev_loss = [_value(r.get("dev", {}).get("loss")) for r in history]
    if any(not math.isnan(v) for v in dev_loss):
        ax.plot(epochs, dev_loss, marker="o", label="dev loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    ax = axes[1]
    for name in metrics:
        ax.plot(epochs, [_value(r.get("dev", {}).get(name)) for r in history], marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("dev metric")
    if metrics:
        ax.legend()
    ax.grid(alpha=0.3)
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _value(v) -> float:
    return math.nan if v is None else float(v)
