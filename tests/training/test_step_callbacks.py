"""Per-step callbacks: every training batch gives a record (loss, lr, gradient norm before and
after clipping, tokens/s); TensorBoard and MLflow loggers write them when installed."""

import math

import pytest
import torch
from torch import nn

from rnnkit.training import Trainer, TrainerConfig
from rnnkit.training.callbacks import Callback


class Tiny(nn.Module):
    """loss = scale * sum(w^2) over a batch: its gradient norm is 2 * scale * |w|, known."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.w = nn.Parameter(torch.full((4,), 3.0))
        self.scale, self.config = scale, {}

    def loss(self, batch):
        return self.scale * (self.w ** 2).sum() + 0 * batch["inputs"].float().sum()

    def predict(self, batch):
        return torch.zeros(batch["inputs"].shape[0], dtype=torch.long)


def batches(n):
    return [{"inputs": torch.ones(2, 5, dtype=torch.long), "labels": torch.ones(2, 5, dtype=torch.long),
             "lengths": torch.tensor([5, 3])} for _ in range(n)]


class Steps(Callback):
    def __init__(self):
        self.records, self.weights = [], []

    def on_step(self, trainer, record):
        self.records.append(dict(record))


def train(tmp_path, model, callbacks=(), **kw):
    cfg = dict(epochs=2, progress=False, plots=False, out_dir=str(tmp_path / "run"), num_threads=1,
               optimizer={"name": "sgd", "lr": 0.01, "momentum": 0.0}, clip_grad_norm=1.0)
    cfg.update(kw)
    Trainer(model, TrainerConfig(**cfg), train=batches(3), callbacks=callbacks).fit()


def test_every_step_gives_a_record_with_the_gradient_norm_before_and_after_clipping(tmp_path):
    steps = Steps()
    train(tmp_path, Tiny(), [steps])
    assert [r["step"] for r in steps.records] == [1, 2, 3, 4, 5, 6]
    assert [r["epoch"] for r in steps.records] == [1, 1, 1, 2, 2, 2]
    first = steps.records[0]
    assert first["loss"] == pytest.approx(4 * 9.0)
    assert first["grad_norm"] == pytest.approx(2 * math.sqrt(4 * 9.0))  # 2|w| at w = 3
    assert first["grad_norm_clipped"] == pytest.approx(1.0)  # clipped to trainer.clip_grad_norm
    assert first["lr"] == 0.01 and first["tokens_per_s"] > 0


def test_a_step_under_the_clip_keeps_its_norm(tmp_path):
    steps = Steps()
    train(tmp_path, Tiny(scale=0.01), [steps])
    r = steps.records[0]
    assert r["grad_norm"] == pytest.approx(r["grad_norm_clipped"]) and r["grad_norm"] < 1.0


def test_tensorboard_logger_writes_each_steps_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(tmp_path, Tiny(), loggers=["tensorboard"])
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/grad_norm_clipped", "train/tokens_per_s",
            "epoch/train_loss"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert events.Scalars("train/grad_norm_clipped")[0].value == pytest.approx(1.0)


def test_mlflow_logger_records_the_run(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    train(tmp_path, Tiny(), loggers=["mlflow"])
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{(tmp_path / 'run' / 'mlflow.db').resolve()}")
    (run,) = client.search_runs(experiment_ids=["0"])
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2, 3, 4, 5, 6]
    assert run.data.params["clip_grad_norm"] == "1.0" and run.info.status == "FINISHED"


def test_a_logger_whose_package_is_missing_says_which_extra(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("no tensorboard")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ImportError, match=r"trainer.loggers: tensorboard needs the tensorboard package; "
                                          r"install it with pip install 'rnnkit\[tensorboard\]'"):
        train(tmp_path, Tiny(), loggers=["tensorboard"])


def test_loggers_are_checked_by_the_config():
    with pytest.raises(Exception, match="tensorboard"):
        TrainerConfig(loggers=["wandb"])
