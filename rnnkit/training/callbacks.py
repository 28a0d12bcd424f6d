"""What happens after each training step and at the end of each epoch, one concern per callback.

A callback has ``on_train_begin(trainer)`` when ``fit`` starts, ``on_step(trainer, record)`` after every training batch (``record``: ``step``,
``epoch``, ``loss``, ``lr``, ``grad_norm`` before clipping and ``grad_norm_clipped`` after it,
``tokens_per_s`` of that batch), ``on_epoch_end(trainer, record)`` (``record`` is the epoch's
JSON-safe log line: a non-finite value is ``None``, see ``json_safe``) and ``on_train_end(trainer)``;
each does nothing unless overridden. The trainer calls them on rank 0 only, in order; early
stopping and the time limit set ``trainer.should_stop``, which the trainer then broadcasts to all ranks.

``TensorBoardLogger`` and ``MLflowLogger`` (``trainer.loggers: [tensorboard, mlflow]``, each an
extra: ``pip install 'rnnkit[tensorboard]'`` / ``'rnnkit[mlflow]'``) log every step's record and
every epoch's dev metrics.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from .._plot import save_figure

__all__ = ["Callback", "EarlyStopping", "TimeLimit", "JsonlLogger", "CurvePlotter", "TensorBoardLogger", "MLflowLogger",
           "LOGGERS", "make_logger", "json_safe"]


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
    def on_train_begin(self, trainer) -> None:
        pass

    def on_step(self, trainer, record: dict) -> None:
        pass

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


class TimeLimit(Callback):
    """End training when ``minutes`` of wall time are used (``trainer.max_minutes``).

    The trainer asks ``used()`` before every step and, once the budget is gone, cuts the epoch
    there: the cut epoch is evaluated and saved like any other and training ends (its log line
    says where it was cut). Epochs are measured from the end of the one before (the first from
    ``Trainer.fit``'s start, ``on_train_begin``), dev evaluation and checkpoints included; the
    final evaluation on the test file comes after the budget. Each log line gets
    ``elapsed_seconds``, which a resumed run continues from.
    """

    def __init__(self, minutes: float, *, clock=time.perf_counter) -> None:
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not minutes > 0:
            raise ValueError(f"max_minutes must be a number > 0; got {minutes!r}")
        self.limit, self.clock = 60.0 * minutes, clock
        self._spent, self._before = 0.0, 0.0
        self._last: float | None = None

    def on_train_begin(self, trainer) -> None:
        self._last = self.clock()
        self._before = (trainer.history[-1].get("elapsed_seconds") or 0.0) if trainer.history else 0.0

    def used(self) -> float:
        """Seconds of the budget used so far (a resumed run's earlier epochs included)."""
        current = self.clock() - self._last if self._last is not None else 0.0
        return self._before + self._spent + current

    def on_epoch_end(self, trainer, record: dict) -> None:
        now = self.clock()
        self._spent += now - (self._last if self._last is not None else now)
        self._last = now
        record["elapsed_seconds"] = round(self._before + self._spent, 1)
        if "time_limit" not in record and trainer.epoch < trainer.config.epochs and \
                self._before + self._spent >= self.limit:
            trainer.should_stop = True  # the budget ran out with the epoch's evaluation
            record["time_limit"] = (f"max_minutes {self.limit / 60:g} used up at the end of epoch {trainer.epoch}: "
                                    "training ends")


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
    """Learning curves as a PNG: train and dev loss, and every dev metric, per epoch (and those
    of a watched set, dashed)."""

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
    # dev, then any watched set (trainer.watch_test: "test"), dashed
    splits = ["dev", *sorted({k for r in history for k, v in r.items()
                               if isinstance(v, dict) and "loss" in v and k != "dev"})]
    for split in splits:
        loss = [_value(r.get(split, {}).get("loss")) for r in history]
        if any(not math.isnan(v) for v in loss):
            ax.plot(epochs, loss, marker="o", label=f"{split} loss", linestyle="-" if split == "dev" else "--")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    ax = axes[1]
    for split in splits:
        for i, name in enumerate(metrics):
            values = [_value(r.get(split, {}).get(name)) for r in history]
            if split == "dev" or any(not math.isnan(v) for v in values):
                ax.plot(epochs, values, marker="o", color=f"C{i}", linestyle="-" if split == "dev" else "--",
                        label=name if split == "dev" else f"{split} {name}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("dev metric" if len(splits) == 1 else "metric (dev solid)")
    if metrics:
        ax.legend()
    ax.grid(alpha=0.3)
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def _value(v) -> float:
    return math.nan if v is None else float(v)


def _scalars(record: dict, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a (nested) record, flattened: {"dev": {"f1": 0.9}} -> {"dev/f1": 0.9}."""
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(_scalars(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[f"{prefix}{key}"] = float(value)
    return out


def _missing(logger: str, package: str) -> ImportError:
    return ImportError(f"trainer.loggers: {logger} needs the {package} package; install it with "
                       f"pip install 'rnnkit[{logger}]'")


class TensorBoardLogger(Callback):
    """Scalars for TensorBoard in ``log_dir``: ``train/*`` per step, the epoch's line per epoch."""

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("tensorboard", "tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def on_step(self, trainer, record: dict) -> None:
        for key, value in _scalars(record).items():
            if key not in ("step", "epoch"):
                self.writer.add_scalar(f"train/{key}", value, record["step"])

    def on_epoch_end(self, trainer, record: dict) -> None:
        for key, value in _scalars(record).items():
            if key not in ("step", "epoch"):
                self.writer.add_scalar(f"epoch/{key}", value, record["epoch"])
        self.writer.flush()

    def on_train_end(self, trainer) -> None:
        self.writer.close()


class MLflowLogger(Callback):
    """One MLflow run per training run: its parameters (the trainer's config) once, every step's
    record and every epoch's line as metrics. Runs go where ``MLFLOW_TRACKING_URI`` says, else to
    the SQLite database ``store`` (MLflow's folder store is deprecated); ``mlflow ui
    --backend-store-uri sqlite:///STORE`` shows them."""

    def __init__(self, store: str | Path, run_name: str = "", params: dict | None = None) -> None:
        try:
            import mlflow
        except ImportError:
            raise _missing("mlflow", "mlflow (mlflow-skinny, with sqlalchemy and alembic)") from None
        import os

        self.mlflow = mlflow
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            mlflow.set_tracking_uri(f"sqlite:///{Path(store).resolve()}")
        self.run = mlflow.start_run(run_name=run_name or None)
        if params:
            mlflow.log_params({k: str(v)[:500] for k, v in _flat(params).items()})

    def on_step(self, trainer, record: dict) -> None:
        self.mlflow.log_metrics({f"train_{k}": v for k, v in _scalars(record).items()
                                 if k not in ("step", "epoch")}, step=record["step"])

    def on_epoch_end(self, trainer, record: dict) -> None:
        self.mlflow.log_metrics({f"epoch_{k.replace('/', '_')}": v for k, v in _scalars(record).items()
                                 if k not in ("step", "epoch")}, step=record["epoch"])

    def on_train_end(self, trainer) -> None:
        self.mlflow.end_run()


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


LOGGERS = ("tensorboard", "mlflow")


def make_logger(name: str, out_dir: Path, *, run_name: str = "", params: dict | None = None) -> Callback:
    """The logger ``name`` (one of ``LOGGERS``) writing under ``out_dir``."""
    if name == "tensorboard":
        return TensorBoardLogger(out_dir / "tensorboard")
    if name == "mlflow":
        return MLflowLogger(out_dir / "mlflow.db", run_name=run_name, params=params)
    raise ValueError(f"trainer.loggers: {name!r} is not a logger; allowed: {', '.join(LOGGERS)}")
