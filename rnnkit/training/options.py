"""The trainer's configuration: one frozen pydantic schema, shared by Python, YAML and the CLI.

``rnnkit.config.Config.trainer`` is a ``TrainerConfig``; it lives here so that the trainer (a
lower room) does not import the whole configuration module.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Strict", "OptimizerConfig", "SchedulerConfig", "TrainerConfig"]


class Strict(BaseModel):
    """Base of every config section: unknown fields are errors, values are immutable."""

    # strict: a count given as true or 2.5 is an error, not 1 or 2
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_default=True)


class OptimizerConfig(Strict):
    name: Literal["adam", "adamw", "sgd"] = "adam"  # the torch.optim algorithm
    lr: float = Field(1e-3, gt=0)                     # initial learning rate
    weight_decay: float = Field(0.0, ge=0)           # L2 (adam, sgd) or decoupled (adamw) decay
    momentum: float = Field(0.9, ge=0, lt=1)          # sgd only: heavy-ball momentum
    nesterov: bool = False                            # sgd only: Nesterov momentum


class SchedulerConfig(Strict):
    name: Literal["none", "step", "plateau", "cosine"] = "none"  # learning-rate schedule, per epoch
    step_size: int = Field(1, ge=1)           # step: decay every step_size epochs
    gamma: float = Field(0.5, gt=0, le=1)     # step: multiply lr by gamma
    factor: float = Field(0.5, gt=0, lt=1)    # plateau: multiply lr by factor ...
    patience: int = Field(1, ge=0)            # plateau: ... after this many epochs without gain
    min_lr: float = Field(0.0, ge=0)          # plateau and cosine: lower bound of the lr


class TrainerConfig(Strict):
    epochs: int = Field(10, ge=1)                      # passes over the training data
    batch_size: int = Field(32, ge=1)                  # sequences per batch per process (W processes: W x this per step)
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    clip_grad_norm: float | None = Field(5.0, gt=0)    # max global gradient norm; null: no clipping
    monitor: str | None = None                         # dev metric for best/early stop; null: task default
    patience: int | None = Field(None, ge=1)           # early stopping after this many epochs without gain
    bptt: int | None = Field(None, ge=1)               # truncated BPTT window (language models)
    max_steps_per_epoch: int | None = Field(None, ge=1)  # cap on batches per epoch (short runs)
    max_minutes: float | None = Field(None, gt=0)      # wall-time budget: training ends where it runs out
    ema: float | None = Field(None, gt=0, lt=1)        # decay of a moving average of the weights, which
                                                       # dev evaluation, best/ and test use; null: off
    watch_test: bool = False                           # also evaluate the test file after every epoch (log.jsonl
                                                       # "test", the curves); never chooses best/ or stops
    seed: int = 0                                      # seeds python, numpy and torch
    out_dir: str = "runs/model"                        # checkpoints, log.jsonl, curves.png
    overwrite: bool = False                            # allow a fresh run to replace one in out_dir
    progress: bool = True                              # tqdm progress bar
    plots: bool = True                                 # write curves.png after each epoch
    num_threads: int | None = Field(None, ge=1)        # torch CPU threads; null: torch's default
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"  # auto: cuda (cuda:LOCAL_RANK) if there is one, else cpu
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16/fp16: autocast (fp16 with a grad scaler)
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # torchrun process group; auto: nccl on cuda, else gloo
    loggers: list[Literal["tensorboard", "mlflow"]] = []  # per-step and per-epoch metrics (extras)

    @model_validator(mode="after")
    def _check(self):
        if self.scheduler.name == "plateau" and self.patience is not None and \
                self.patience <= self.scheduler.patience:
            raise ValueError(f"patience ({self.patience}) must exceed scheduler.patience "
                             f"({self.scheduler.patience}), or early stopping ends training before "
                             "the plateau schedule lowers the learning rate")
        return self
