"""The training loop: any task head with ``loss(batch)``, any batches of docs/contracts.md.

    trainer = Trainer(head, TrainerConfig(epochs=5), train=batches, dev=dev_batches,
                      metrics=TaggingMetrics(tags), vocabs={"words": words.to_dict()})
    history = trainer.fit()            # or fit(resume=True) to continue from out_dir/last

Each epoch: shuffle the batch order (a generator seeded by ``seed + epoch``, so a resumed run
sees the same order), step the optimizer with gradient-norm clipping (and truncated BPTT for
language models when ``bptt`` is set), evaluate on dev, step the schedule, then write
``out_dir/last`` (weights + optimizer, schedule and RNG states, for exact resume),
``out_dir/best`` when the monitored metric improved, a line of ``out_dir/log.jsonl`` and
``out_dir/curves.png``.

Under ``torchrun`` (WORLD_SIZE = W > 1; ``rnnkit train --nproc W`` starts it) every optimizer
step is one global batch cut across the W processes: ``Batches`` built with ``rank`` and
``world_size`` cut it themselves (``BucketBatchSampler``), and a list of batches is cut here,
process r taking rows r, r + W, ... of each. Each process's mean loss is weighted by its share
of what the head averages over (``head.loss_count(batch)``: labelled tokens for token means,
else rows), one all-reduce per step adds the shares up, and DistributedDataParallel averages the
gradients: so W processes compute the gradient one process computes on the whole global batch,
token-mean losses (tagger, LM, seq2seq) included. The dev set is cut the same way (every W-th
batch) and the metric accumulators of all processes are merged, so dev metrics cover the whole
dev set; a head that carries its state from batch to batch (LanguageModel) is evaluated by rank
0 alone, in order. Rank 0 alone logs, shows the progress bar and writes files (atomically,
``rnnkit.checkpoint``); ``out_dir/last`` holds every process's random state, so ``--resume``
continues a distributed run exactly. A process that fails ends with its error; torchrun then
stops the others.

Device and precision. ``device: auto`` takes ``cuda:LOCAL_RANK`` when CUDA is there, else the
CPU; ``cpu``, ``cuda`` and ``mps`` are asked for by name (an error when absent). ``precision``
``bf16`` or ``fp16`` runs forward passes (training and dev) under ``torch.autocast``, fp16 with a
``GradScaler`` (a step whose gradients overflow is skipped and the scale lowered, as the scaler
does, instead of counting as divergence); the weights and the optimizer stay float32.

Divergence. Training stops with a ``TrainingError`` naming the step (1-based, counted over the
run) and the loss when, before the optimizer step:

* the step's loss is NaN or infinite;
* the step's loss explodes: it exceeds ``EXPLODE_FACTOR`` (1e6) times the run's first loss,
  floored at 1 (``1e6 * max(first_loss, 1)``). The first loss is the untrained model's, e.g.
  about ln V nats for a language model, so a healthy run never comes near it; the floor keeps a
  near-zero first loss (regression on small targets) from making ordinary noise look like
  divergence. The first loss is kept in the trainer state, so a resumed run keeps its bound;
* the gradient norm is NaN or infinite (the step would write NaN into the weights);

and at the end of an epoch, before anything is evaluated or saved, when a weight is NaN or
infinite. So ``out_dir/last`` and ``out_dir/best`` only ever hold epochs that ended healthy (the
message names the epoch ``last`` still holds): the diverged state is never saved. A dev value that is NaN or infinite (e.g. perplexity
overflowing ``exp``) never makes an epoch ``best``; when no epoch had a finite monitored value,
``fit`` ends with a ``TrainingError`` (there is no best model to use). Under torchrun the loss
checked is the global batch's (all-reduced) and the gradients are the averaged ones, so every
process sees a divergence at the same step and stops with the same error.

JSON. Strict JSON has no NaN or Infinity, so every non-finite value the trainer reports --
``evaluate_batches``' result (``rnnkit evaluate``, results.json's ``test``), the dev metrics of
log.jsonl, the history and the checkpoint manifests -- is ``None`` (``null``), with a note on
stderr when an evaluation produced one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import checkpoint as ckpt
from .._log import get_logger
from .callbacks import Callback, CurvePlotter, EarlyStopping, JsonlLogger, TimeLimit, json_safe, make_logger
from .metrics import HIGHER_IS_BETTER
from .distributed import batch_rows as _batch_size
from .distributed import global_mean_loss, loss_count, resolve_device, setup_distributed, shard_rows
from .options import TrainerConfig
from .sparse_rows import LazyRowsAdam, LazyRowsAdamW, clip_grad_norm, sparse_tables

__all__ = ["Trainer", "TrainingError", "EXPLODE_FACTOR", "evaluate_batches", "seed_everything", "setup_distributed",
           "resolve_device", "build_optimizer", "build_scheduler"]

_log = get_logger(__name__)

# A step's loss over this many times the run's first loss (floored at 1) is divergence.
EXPLODE_FACTOR = 1e6


class TrainingError(RuntimeError):
    """Training cannot go on (the loss diverged, the weights became NaN, no epoch was usable);
    the message says what happened, where, and which checkpoint is still good."""


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


_FUSED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def fused_supported(params: list[torch.Tensor]) -> bool:
    """Whether torch's fused optimizer kernels take these parameters: dense floating tensors,
    all on the CPU or all on CUDA."""
    devices = {p.device.type for p in params}
    return bool(params) and len(devices) == 1 and devices <= {"cpu", "cuda"} and \
        all(p.dtype in _FUSED_DTYPES and not p.is_sparse for p in params)


def build_optimizer(model: nn.Module, cfg, *, sparse_rows: bool = False) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` names, with torch's fused kernel where it applies: one
    multi-tensor update instead of a loop of small ops per parameter. On the CPU, for a
    char + word BiLSTM-CRF tagger at batch 16, Adam's update was about a fifth of each step
    before (docs/benchmarks.md, section 9); the arithmetic is the same (tests/training).
    ``sparse_rows``: Adam and AdamW also take sparse gradients, updating those tables by rows
    (``sparse_rows.LazyRowsAdam``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    o = cfg.optimizer
    fused = {"fused": True} if fused_supported(params) else {}
    if o.name == "adam":
        kind = LazyRowsAdam if sparse_rows else torch.optim.Adam
        return kind(params, lr=o.lr, weight_decay=o.weight_decay, **fused)
    if o.name == "adamw":
        kind = LazyRowsAdamW if sparse_rows else torch.optim.AdamW
        return kind(params, lr=o.lr, weight_decay=o.weight_decay, **fused)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                           weight_decay=o.weight_decay, **fused)


def build_scheduler(optimizer, cfg, *, higher_is_better: bool):
    s = cfg.scheduler
    if s.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
    if s.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max" if higher_is_better else "min", factor=s.factor,
            patience=s.patience, min_lr=s.min_lr)
    if s.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs, eta_min=s.min_lr)
    return None


class _LossOf(nn.Module):
    """Calls ``head.loss`` through ``forward``, so DistributedDataParallel sees the call and
    averages the gradients (DDP only hooks ``forward``)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, batch, state=None, *, with_state: bool = False):
        if with_state:
            return self.head.loss_and_state(batch, state)
        return self.head.loss(batch)


def _tokens(batch: dict) -> int:
    if "lengths" in batch:
        return int(batch["lengths"].sum())
    if "inputs" not in batch:  # a generator's batch: its target tokens
        return int(batch["target_lengths"].sum())
    return int(batch["inputs"].shape[0] * batch["inputs"].shape[1])


# the keys of an epoch's record (log.jsonl) that a watched set's label may not take
_RECORD_KEYS = ("epoch", "step", "train_loss", "lr", "seconds", "tokens_per_s", "cpu_seconds", "dev", "best",
                "time_limit", "early_stop", "elapsed_seconds")


class Trainer:
    """Train ``model`` (a head with ``loss(batch)``, ``predict(batch)`` and ``config``).

    Args:
        model: the task head.
        config: a ``TrainerConfig``.
        train: a sequence of batch dicts (shuffled per epoch by the trainer), or any iterable of
            batches (iterated as given; ``set_epoch(epoch)`` is called if it has one).
        dev: batches to evaluate on after each epoch (optional).
        metrics: an accumulator from ``rnnkit.training.metrics`` (``reset/update/compute``).
        vocabs: JSON dicts stored with every checkpoint (vocabularies, label names).
        extra: JSON stored in every checkpoint's manifest (e.g. the run's full config).
        callbacks: more ``Callback``s, run after the built-in logger, plotter and early stop.
        name: a title for the plots and progress bar.
        watch: more labelled batches evaluated after each epoch as dev is (the same weights: the
            average under ``ema``), each logged under its label; they never choose ``best/`` or
            stop training (``trainer.watch_test`` passes the test file as ``test``).
    """

    def __init__(self, model: nn.Module, config: TrainerConfig | None = None, *,
                 train: Iterable[dict], dev: Iterable[dict] | None = None, metrics=None,
                 vocabs: dict | None = None, extra: dict | None = None,
                 callbacks: Sequence[Callback] = (), name: str = "",
                 watch: Mapping[str, Iterable[dict]] | None = None) -> None:
        self.config = config if config is not None else TrainerConfig()
        if not isinstance(self.config, TrainerConfig):
            raise TypeError(f"config must be a TrainerConfig; got {type(self.config).__name__}")
        for method in ("loss", "predict"):
            if not callable(getattr(model, method, None)):
                raise TypeError(f"model must be a task head with loss(batch) and predict(batch); "
                                f"{type(model).__name__} has no {method}()")
        self.model, self.train_data, self.dev_data = model, train, dev
        self.watch = dict(watch or {})
        for label, batches in self.watch.items():
            if label in _RECORD_KEYS:
                raise ValueError(f"watch label {label!r} would overwrite the epoch record's own {label!r}; "
                                 "name the set otherwise (e.g. 'test')")
            if batches is None:  # evaluate(None) would measure dev under this label
                raise ValueError(f"watch[{label!r}] is None; give its batches, or leave the label out")
        self.metrics, self.vocabs, self.extra = metrics, vocabs or {}, extra or {}
        self.name = name or type(model).__name__
        self.out_dir = Path(self.config.out_dir)
        self.rank, self.world = setup_distributed(self.config.backend, self.config.device)
        self.device = resolve_device(self.config.device)
        if self.device.type == "mps" and self.world > 1:
            raise ValueError("trainer.device 'mps' cannot run under torchrun: DistributedDataParallel has "
                             "no MPS backend; use device cpu (gloo) or a single process")
        model.to(self.device)
        self.autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.config.precision]
        # fp16's narrow range underflows small gradients: the scaler multiplies the loss first
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.config.precision == "fp16")
        self.monitor = self.config.monitor or ("loss" if metrics is None else None)
        self.higher_is_better: bool | None = None
        # hashed bigram tables: sparse gradients and row updates while training (one process,
        # fp32, Adam or AdamW; otherwise dense, as any parameter)
        self.sparse_tables = sparse_tables(model) if (
            self.world == 1 and self.config.precision == "fp32"
            and self.config.optimizer.name in ("adam", "adamw")) else []
        self.optimizer = build_optimizer(model, self.config, sparse_rows=bool(self.sparse_tables))
        # trainer.ema: after every step avg <- decay * avg + (1 - decay) * weights (floating
        # parameters and buffers); dev evaluation and best/ use the average, last/ keeps both
        # (detached views: they follow the optimizer's in-place updates, built once)
        self._ema_tensors = [t.detach() for t in [*model.parameters(), *model.buffers()]
                             if t.is_floating_point()] if self.config.ema is not None else []
        self.ema = [t.clone() for t in self._ema_tensors] if self.config.ema is not None else None
        # plateau is built once the monitored metric's direction is known; the others now, so
        # that they see every optimizer step
        self.scheduler = None
        if self.config.scheduler.name in ("step", "cosine"):
            self.scheduler = build_scheduler(self.optimizer, self.config, higher_is_better=True)
        self._pending_scheduler_state = None
        self.history: list[dict] = []
        self.epoch = 0  # epochs completed
        self.step = 0   # optimizer steps taken
        self.best_value: float | None = None
        self.best_epoch = 0
        self.first_loss: float | None = None  # the run's first step loss, the divergence bound's base
        self._saved_epoch: int | None = None  # epoch in out_dir/last, for the divergence message
        self.should_stop = False
        self._shown = ""  # the monitored dev value, as the progress bar shows it
        self.loss_module = _LossOf(model)
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.loss_module = DistributedDataParallel(self.loss_module, device_ids=ids)
        self.callbacks: list[Callback] = []
        self.time_limit = TimeLimit(self.config.max_minutes) if self.config.max_minutes is not None else None
        if self.time_limit is not None:  # first: the log line gets its elapsed_seconds
            self.callbacks.append(self.time_limit)
        if self.rank == 0:
            self.callbacks.append(JsonlLogger(self.out_dir / "log.jsonl"))
            if self.config.plots:
                self.callbacks.append(CurvePlotter(self.out_dir / "curves.png"))
        if self.config.patience is not None:
            self.callbacks.append(EarlyStopping(self.config.patience))
        self.callbacks += list(callbacks)
        if self.rank == 0:
            for logger in self.config.loggers:
                self.callbacks.append(make_logger(logger, self.out_dir, run_name=name,
                                                  params=self.config.model_dump(mode="json")))
        self._grad_norms = (math.nan, math.nan)
        self._check_bptt()

    # ----------------------------------------------------------------- monitored metric
    @property
    def epochs_since_best(self) -> int:
        return self.epoch - self.best_epoch

    def _resolve_monitor(self, dev: dict) -> None:
        if self.monitor is None:
            self.monitor = next(k for k in dev if k != "loss") if len(dev) > 1 else "loss"
        if self.monitor not in dev:
            raise ValueError(f"trainer.monitor must be one of the dev metrics {', '.join(dev)}; "
                             f"got {self.monitor!r}")
        if self.monitor not in HIGHER_IS_BETTER:
            raise ValueError(f"trainer.monitor {self.monitor!r} has no known direction; use one of "
                             f"{', '.join(HIGHER_IS_BETTER)}")
        self.higher_is_better = HIGHER_IS_BETTER[self.monitor]

    def _improved(self, value: float) -> bool:
        if not math.isfinite(value):  # a diverged (or overflowing) metric is never best
            return False
        if self.best_value is None:
            return True
        return value > self.best_value if self.higher_is_better else value < self.best_value

    # ------------------------------------------------------------------------- batches
    def _epoch_batches(self, epoch: int) -> list[dict] | Iterable[dict]:
        data = self.train_data
        if isinstance(data, Sequence):
            g = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
            order = torch.randperm(len(data), generator=g).tolist()
            if self.config.max_steps_per_epoch is not None:
                order = order[:self.config.max_steps_per_epoch]
            if self.world == 1:
                return [data[i] for i in order]
            for i in order:
                if _batch_size(data[i]) < self.world:
                    raise ValueError(f"training batch {i} has {_batch_size(data[i])} rows; {self.world} processes "
                                     "each take every W-th row of a batch, so every batch needs at least "
                                     f"{self.world}")
            return [shard_rows(data[i], self.rank, self.world) for i in order]
        if hasattr(data, "set_epoch"):
            data.set_epoch(epoch)
        return data

    def _steps_per_epoch(self) -> int | None:
        data = self.train_data
        if not isinstance(data, Sequence):
            n = len(data) if hasattr(data, "__len__") else None  # Batches count their own rank's share
            cap = self.config.max_steps_per_epoch
            return cap if n is None else min(n, cap or n)
        n = len(data)  # every process takes a share of every batch
        return min(n, self.config.max_steps_per_epoch or n)

    # -------------------------------------------------------------------------- steps
    def _check_bptt(self) -> None:
        if self.config.bptt is not None and self.world > 1:
            raise ValueError("trainer.bptt cuts each batch into as many windows as its length needs, so "
                             "processes under torchrun would take different numbers of steps; use "
                             "consecutive windows from the data instead (lm_text's data.bptt, LMStream)")
        if self.config.bptt is not None and not callable(getattr(self.model, "loss_and_state", None)):
            raise ValueError(f"trainer.bptt needs a head that carries its state between windows "
                             f"(loss_and_state(batch, state), as LanguageModel has); "
                             f"{type(self.model).__name__} has none")

    def _reset_state(self) -> None:
        """Forget a carried recurrent state (LanguageModel with carry_state) between passes."""
        reset = getattr(self.model, "reset_state", None)
        if callable(reset):
            reset()

    def _train_step(self, batch: dict) -> float:
        if self.config.bptt is not None and batch["inputs"].shape[1] > self.config.bptt:
            return self._bptt_step(batch)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self.loss_module(batch)
        if self.world > 1:
            loss, value = self._global_loss(loss, batch)
        else:
            value = float(loss.detach())
        self._backward(loss, value)
        return value

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    def _global_loss(self, loss, batch: dict):
        return global_mean_loss(loss, loss_count(self.model, batch), world=self.world, device=self.device,
                                step=self.step + 1)

    def _backward(self, loss, value: float) -> None:
        if not math.isfinite(value):
            raise self._diverged(f"loss is {value}")
        if self.first_loss is None:
            self.first_loss = value
        bound = EXPLODE_FACTOR * max(self.first_loss, 1.0)
        if value > bound:
            raise self._diverged(f"loss is {value:.4g}, over {EXPLODE_FACTOR:g} x max(the run's first "
                                 f"loss {self.first_loss:.4g}, 1) = {bound:.4g}")
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # clip the true gradients (a no-op unless fp16)
        # clip_grad_norm_ measures the norm either way; with no limit it scales by exactly 1
        limit = self.config.clip_grad_norm if self.config.clip_grad_norm is not None else math.inf
        norm = clip_grad_norm(self.model.parameters(), limit)
        if not math.isfinite(norm) and not self.scaler.is_enabled():
            raise self._diverged(f"the gradient norm is {norm} (loss {value:.4g})")
        self.scaler.step(self.optimizer)  # fp16: skipped when the gradients overflowed
        self.scaler.update()
        if self.ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(self.ema, self._ema_tensors, 1.0 - self.config.ema)
        self.step += 1
        self._grad_norms = (norm, min(norm, limit))  # before and after clipping, for on_step

    def _on_step(self, epoch: int, loss: float, tokens_per_s: float) -> None:
        before, after = self._grad_norms
        record = {"step": self.step, "epoch": epoch, "loss": loss, "lr": self.optimizer.param_groups[0]["lr"],
                  "grad_norm": before, "grad_norm_clipped": after,
                  "tokens_per_s": round(tokens_per_s * self.world, 1)}
        for cb in self.callbacks:
            if hasattr(cb, "on_step"):
                cb.on_step(self, record)

    def _kept(self) -> str:
        if self._saved_epoch is None:
            return "no checkpoint was written in this run"
        return f"{self.out_dir / 'last'} still holds epoch {self._saved_epoch}, unchanged"

    def _advice(self) -> str:
        return (f"Lower optimizer.lr (now {self.optimizer.param_groups[0]['lr']:g}) or "
                f"trainer.clip_grad_norm (now {self.config.clip_grad_norm})")

    def _diverged(self, what: str) -> TrainingError:
        return TrainingError(
            f"training diverged at step {self.step + 1} (epoch {self.epoch + 1}): {what}; stopped "
            f"before the step, {self._kept()}. {self._advice()}")

    def _check_weights(self, epoch: int) -> None:
        """A non-finite weight after the epoch's last step would be evaluated and saved: stop."""
        for name, p in self.model.named_parameters():
            if not bool(torch.isfinite(p).all()):
                raise TrainingError(
                    f"training diverged: weight {name} holds NaN or infinite values after step "
                    f"{self.step} (epoch {epoch}); nothing of this epoch was saved, {self._kept()}. "
                    f"{self._advice()}")

    def _bptt_step(self, batch: dict) -> float:
        """Truncated BPTT: cut (B, T) inputs and labels into windows of ``bptt`` steps and take one
        optimizer step per window, carrying the head's state from window to window (detached, so
        gradients stop at the window's start)."""
        k, T = self.config.bptt, batch["inputs"].shape[1]
        state, total, n = None, 0.0, 0
        for start in range(0, T, k):
            chunk = {key: (v[:, start:start + k] if v.dim() >= 2 and v.shape[1] == T else v)
                     for key, v in batch.items()}
            if "lengths" in batch:
                chunk["lengths"] = (batch["lengths"] - start).clamp(0, k)
                if bool((chunk["lengths"] == 0).all()):
                    break
                # rows already finished keep one (masked) step so that the encoder gets length >= 1
                if bool((chunk["lengths"] == 0).any()):
                    chunk["labels"] = chunk["labels"].masked_fill((chunk["lengths"] == 0)[:, None], -100)
                    chunk["lengths"] = chunk["lengths"].clamp(min=1)
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                loss, state = self.loss_module(chunk, state, with_state=True)
            state = _detach(state)
            value = float(loss.detach())
            self._backward(loss, value)
            total, n = total + value, n + 1
        return total / max(n, 1)

    # ----------------------------------------------------------------------- evaluation
    def evaluate(self, batches: Iterable[dict] | None = None) -> dict:
        """Mean loss and the metrics over ``batches`` (default: the dev batches), under the run's
        precision. Under torchrun every process must call it: each evaluates every W-th batch
        and the results are merged (all processes get them), except for a head that carries its
        state across batches, which rank 0 evaluates alone, in order."""
        batches = self.dev_data if batches is None else batches
        with self._autocast():
            if self.world == 1:
                return evaluate_batches(self.model, batches, self.metrics)
            import torch.distributed as dist

            if callable(getattr(self.model, "reset_state", None)):
                box = [evaluate_batches(self.model, batches, self.metrics) if self.rank == 0 else None]
                dist.broadcast_object_list(box, src=0)
                return box[0]
            mine = (b for i, b in enumerate(batches) if i % self.world == self.rank)
            part = _accumulate(self.model, mine, self.metrics)
            parts = [None] * self.world
            dist.all_gather_object(parts, part)
        total, count, metrics = parts[0]
        for t, c, m in parts[1:]:
            total, count = total + t, count + c
            if metrics is not None:
                metrics.merge(m)
        return _finish(total, count, metrics)

    def _to_device(self, batch: dict) -> dict:
        return {k: (v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                for k, v in batch.items()}

    # ------------------------------------------------------------------------------ fit
    def fit(self, *, resume: bool | str | os.PathLike = False) -> list[dict]:
        """Train for ``config.epochs`` epochs (in total, counting resumed ones); return the history.

        ``resume=True`` continues from ``out_dir/last``; a path continues from that checkpoint.
        """
        cfg = self.config
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        if resume:
            self._resume(self.out_dir / "last" if resume is True else Path(resume))
        else:
            # A run killed while saving may have left only last.old (which loads): still a run.
            held = [p for p in (self.out_dir / "last", self.out_dir / "best", self.out_dir / "log.jsonl")
                    if (ckpt.exists(p) if p.suffix != ".jsonl" else p.exists())]
            if held and not cfg.overwrite:
                raise ValueError(f"{self.out_dir} already holds a run ({', '.join(p.name for p in held)}); "
                                 "resume it, choose another trainer.out_dir, or set trainer.overwrite=true to "
                                 "replace it")
            seed_everything(cfg.seed + self.rank)
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                (self.out_dir / "log.jsonl").unlink(missing_ok=True)
        self.model.train()
        if self.rank == 0:
            for cb in self.callbacks:
                getattr(cb, "on_train_begin", lambda trainer: None)(self)
        for table in self.sparse_tables:  # until fit returns: the model stays a plain module
            table.sparse = True
        try:
            while self.epoch < cfg.epochs and not self.should_stop:
                self._run_epoch()
        finally:
            for table in self.sparse_tables:
                table.sparse = False
        if self.rank == 0:
            for cb in self.callbacks:
                cb.on_train_end(self)
            if self.epoch > 0 and self.best_epoch == 0:
                raise TrainingError(
                    f"no epoch had a finite dev {self.monitor} (epochs 1 to {self.epoch}: "
                    f"{', '.join(str(r.get('dev', {}).get(self.monitor)) for r in self.history)}), so this "
                    f"run wrote no {self.out_dir / 'best'}; {self._kept()}. The model diverged or the "
                    "dev data gives non-finite values (see log.jsonl)")
        return self.history

    def _run_epoch(self) -> None:
        cfg, epoch = self.config, self.epoch + 1
        batches = self._epoch_batches(epoch)
        bar = _progress(total=self._steps_per_epoch(), desc=f"{self.name} epoch {epoch}/{cfg.epochs}",
                        enabled=cfg.progress and self.rank == 0)
        start, cpu_start, tokens, loss_sum, steps = time.perf_counter(), time.process_time(), 0, 0.0, 0
        self.model.train()
        self._reset_state()
        # only when some callback acts per step (a duck-typed one may have no on_step at all)
        per_step = self.rank == 0 and any(getattr(type(cb), "on_step", Callback.on_step) is not Callback.on_step
                                          for cb in self.callbacks)
        cut = None  # the step at which max_minutes ran out inside this epoch
        for i, batch in enumerate(batches):
            if cfg.max_steps_per_epoch is not None and i >= cfg.max_steps_per_epoch:
                break
            if self.time_limit is not None and i > 0 and self._out_of_time():
                cut = i
                break
            batch = self._to_device(batch)
            began = time.perf_counter()
            loss = self._train_step(batch)
            loss_sum += loss
            tokens += _tokens(batch)
            steps += 1
            if per_step:
                self._on_step(epoch, loss, _tokens(batch) / max(time.perf_counter() - began, 1e-9))
            if bar is not None:
                rate = tokens / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix_str(f"loss {loss_sum / steps:.4f}, {self._shown}{rate:,.0f} tok/s",
                                    refresh=False)
                bar.update(1)
        if steps == 0:
            raise ValueError("training data is empty: no batches in this epoch" + (
                f" (a global batch needs at least one row per process, {self.world})" if self.world > 1 else ""))
        self._check_weights(epoch)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        if self.world > 1:  # every process's tokens and CPU time: the run's, not rank 0's times W
            import torch.distributed as dist

            counted = torch.tensor([float(tokens), cpu_seconds], dtype=torch.float64, device=self.device)
            dist.all_reduce(counted)
            tokens, cpu_seconds = int(counted[0]), float(counted[1])
        record = {"epoch": epoch, "step": self.step, "train_loss": loss_sum / steps,
                  "lr": self.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 3),
                  "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
                  # CPU time of every process's training (all its threads): on a shared machine
                  # tokens per CPU-second compares runs that got different shares of the cores
                  "cpu_seconds": round(cpu_seconds, 3)}
        if cut is not None:  # evaluated and saved as any epoch, and the last one
            record["time_limit"] = (f"max_minutes {self.time_limit.limit / 60:g} ran out in epoch {epoch} after {cut} of "
                                    f"{self._steps_per_epoch() or '?'} steps: the epoch is cut there and training ends")
            self.should_stop = True
        self.epoch = epoch
        # decided on rank 0: (monitored value, stop flag, 1.0 if higher is better)
        shared = torch.zeros(3, dtype=torch.float64, device=self.device)
        with self._averaged():
            dev = self.evaluate() if self.dev_data is not None else None  # every process takes part
            watched = {label: self.evaluate(batches) for label, batches in self.watch.items()}
        rngs = self._gather_rng()
        if self.rank == 0:
            record.update(watched)
            if dev is not None:
                record["dev"] = dev
                if self.higher_is_better is None:
                    self._resolve_monitor(dev)
                value = dev[self.monitor]
                if value is None:  # evaluate_batches' JSON-safe stand-in for NaN or infinity
                    value = math.nan
                    _log.warning("rnnkit: epoch %d: dev %s is not finite; this epoch cannot become best",
                                 epoch, self.monitor)
            else:  # without dev data, the best model is the one of lowest training loss
                self.monitor, self.higher_is_better = "train_loss", False
                value = record["train_loss"]
            shared[0], shared[2] = value, float(self.higher_is_better)
        if self.world > 1:
            import torch.distributed as dist
            dist.broadcast(shared, src=0)
        value = float(shared[0])
        self.higher_is_better = bool(shared[2])  # ranks > 0 need it for a plateau schedule
        self._step_scheduler(value)
        if self.rank == 0:
            # the latest dev value stays on the bar while the next epoch trains
            self._shown = f"{self.monitor} {value:.4f}, " if self.monitor != "train_loss" else ""
            if bar is not None:
                bar.set_postfix_str(f"loss {record['train_loss']:.4f}, {self._shown}"
                                    f"{record['tokens_per_s']:,.0f} tok/s")
            if self._improved(value):
                self.best_value, self.best_epoch = value, epoch
                record["best"] = True
            self.history.append(record)
            for cb in self.callbacks:
                cb.on_epoch_end(self, record)
            self._save(best=record.get("best", False), rngs=rngs)
            self._saved_epoch = epoch
            shared[1] = float(self.should_stop)
        if bar is not None:
            bar.close()
        if self.world > 1:
            import torch.distributed as dist
            dist.broadcast(shared, src=0)
            self.should_stop = bool(shared[1])

    def _out_of_time(self) -> bool:
        """Whether the wall-time budget is used up (rank 0's clock decides for every process,
        so that all leave the epoch at the same step)."""
        out = self.rank == 0 and self.time_limit.used() >= self.time_limit.limit
        if self.world > 1:
            import torch.distributed as dist

            flag = torch.tensor([float(out)], device=self.device)
            dist.broadcast(flag, src=0)
            out = bool(flag.item())
        return out

    def _step_scheduler(self, value: float) -> None:
        if self.config.scheduler.name == "none":
            return
        if self.scheduler is None:  # built late: plateau needs the monitored metric's direction
            self.scheduler = build_scheduler(self.optimizer, self.config,
                                             higher_is_better=self.higher_is_better)
            if self._pending_scheduler_state is not None:
                self.scheduler.load_state_dict(self._pending_scheduler_state)
                self._pending_scheduler_state = None
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(value)
        else:
            self.scheduler.step()

    # ---------------------------------------------------------------- save and resume
    def _extra(self) -> dict:
        return {**self.extra, "epoch": self.epoch, "step": self.step, "monitor": self.monitor,
                "best_value": self.best_value, "best_epoch": self.best_epoch,
                "dev": self.history[-1].get("dev") if self.history else None}

    @contextlib.contextmanager
    def _averaged(self):
        """With trainer.ema: the model holds the averaged weights inside, its own after."""
        if self.ema is None:
            yield
            return
        with torch.no_grad():
            own = [t.clone() for t in self._ema_tensors]
            torch._foreach_copy_(self._ema_tensors, self.ema)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self._ema_tensors, own)

    def _save(self, *, best: bool, rngs: list | None = None) -> None:
        model = self.model
        if best:
            with self._averaged():
                ckpt.save(self.out_dir / "best", model, vocabs=self.vocabs, extra=self._extra())
        ckpt.save(self.out_dir / "last", model, vocabs=self.vocabs, extra=self._extra(),
                  trainer_state=self._trainer_state(rngs))

    def _gather_rng(self) -> list | None:
        """Every process's random state (rank order), for rank 0 to save; None in one process."""
        if self.world == 1:
            return None
        import torch.distributed as dist

        states = [None] * self.world
        dist.all_gather_object(states, _rng_state())
        return states if self.rank == 0 else None

    def _trainer_state(self, rngs: list | None = None) -> dict:
        return {"epoch": self.epoch, "step": self.step, "best_value": self.best_value,
                "best_epoch": self.best_epoch, "monitor": self.monitor,
                "higher_is_better": self.higher_is_better, "history": self.history,
                "first_loss": self.first_loss,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "rng": _rng_state(),
                # under torchrun: every process's, in rank order (rng above is rank 0's)
                "rng_ranks": rngs,
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "ema": {str(i): t for i, t in enumerate(self.ema)} if self.ema is not None else None,
                "world_size": self.world,
                "config": self.config.model_dump(mode="json")}

    def _rewrite_log(self) -> None:
        """log.jsonl as the resumed checkpoint knows the run: one line per epoch it holds. A run
        killed after logging an epoch but before saving it would otherwise log that epoch twice,
        and one killed after saving but before logging would leave a gap."""
        log = self.out_dir / "log.jsonl"
        if not log.exists() and not self.history:
            return
        lines = "".join(json.dumps(json_safe(record), ensure_ascii=False, allow_nan=False) + "\n"
                        for record in self.history)
        tmp = log.with_name(log.name + ".tmp")
        tmp.write_text(lines, encoding="utf-8")
        os.replace(tmp, log)

    def _resume(self, path: Path) -> None:
        loaded = ckpt.load(path, expected_type=type(self.model))
        self.model.load_state_dict(loaded.model.state_dict())
        state = ckpt.load_state(path)
        saved_optim = state["config"]["optimizer"]
        if saved_optim != self.config.optimizer.model_dump(mode="json"):
            raise ValueError(f"{path}: was trained with optimizer {saved_optim}; this run asks for "
                             f"{self.config.optimizer.model_dump(mode='json')}, which cannot resume its state")
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
        self.monitor, self.higher_is_better = state["monitor"], state["higher_is_better"]
        self.history = state["history"]
        # trainer states written before the divergence bound have no first_loss: the first
        # epoch's mean loss is the closest stand-in (None: the next step's loss sets it)
        self.first_loss = state.get("first_loss")
        if self.first_loss is None and self.history:
            self.first_loss = self.history[0].get("train_loss")
        if path == self.out_dir / "last":
            self._saved_epoch = self.epoch
            if self.rank == 0:
                self._rewrite_log()
        saved_epochs = state["config"]["epochs"]
        if self.config.scheduler.name == "cosine" and saved_epochs != self.config.epochs:
            raise ValueError(f"{path}: its cosine schedule spans trainer.epochs = {saved_epochs}; resuming "
                             f"with epochs = {self.config.epochs} would bend it midway. Resume with "
                             f"epochs = {saved_epochs}, or train anew")
        if (state["scheduler"] is None) != (self.config.scheduler.name == "none"):
            raise ValueError(f"{path}: was trained with scheduler "
                             f"{state['config']['scheduler']['name']!r}; this run asks for "
                             f"{self.config.scheduler.name!r}")
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        else:
            self._pending_scheduler_state = state["scheduler"]
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            saved = state.get("ema")
            if not saved:
                raise ValueError(f"{path}: holds no moving average of the weights for trainer.ema = "
                                 f"{self.config.ema} to continue; resume without trainer.ema, or train anew")
            shapes = [tuple(t.shape) for t in self.ema]
            got = [tuple(saved[str(i)].shape) if str(i) in saved else None for i in range(len(saved))]
            if got != shapes:
                raise ValueError(f"{path}: its moving average of the weights holds tensors of shapes {got}; "
                                 f"this model's weights have {shapes}")
            with torch.no_grad():
                for i, t in enumerate(self.ema):
                    t.copy_(saved[str(i)])
        ranks = state.get("rng_ranks")
        if ranks is not None and len(ranks) == self.world:
            _set_rng_state(ranks[self.rank])
        else:
            _set_rng_state(state["rng"])
            saved_world = state.get("world_size", 1)
            if saved_world != self.world:
                # the batches are cut anew for this many processes; dropout draws restart per rank
                seed_everything(self.config.seed + self.rank + 1_000 * self.epoch)
                if self.rank == 0:
                    _log.info("rnnkit: %s was trained by %d process(es), resumed by %d: global batches are "
                              "cut anew and random streams reseeded, so the run continues, but not as the "
                              "uninterrupted one would have", path, saved_world, self.world)
        if self.epoch >= self.config.epochs:
            _log.info("rnnkit: %s has already trained %d of %d epochs; nothing to do (raise trainer.epochs "
                      "to train on)", path, self.epoch, self.config.epochs)


@torch.no_grad()
def evaluate_batches(model: nn.Module, batches: Iterable[dict], metrics=None, *, progress: str | None = None) -> dict:
    """Mean loss (weighted by batch size) and ``metrics`` of ``model`` over ``batches``, in eval
    mode; a carried LM state is reset before and after. ``progress``: a title for a progress bar.

    A NaN or infinite value comes back as ``None`` (so that the result is valid JSON, where it is
    ``null``), with a line on stderr naming it."""
    return _finish(*_accumulate(model, batches, metrics, progress=progress))


@torch.no_grad()
def _accumulate(model: nn.Module, batches: Iterable[dict], metrics=None, *,
                progress: str | None = None) -> tuple[float, int, object]:
    """(sum of batch loss x batch size, number of rows, the filled ``metrics``) over ``batches``."""
    was_training = model.training
    model.eval()
    reset = getattr(model, "reset_state", None)
    if callable(reset):
        reset()
    if metrics is not None:
        metrics.reset()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    bar = _progress(total=len(batches) if hasattr(batches, "__len__") else None, desc=progress or "",
                    enabled=progress is not None)
    try:
        for batch in batches:
            batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
            B = _batch_size(batch)
            loss = float(model.loss(batch))
            total += loss * B
            count += B
            if metrics is not None:
                metrics.update(model, batch, loss)
            if bar is not None:
                bar.update(1)
    finally:
        model.train(was_training)
        if callable(reset):
            reset()
        if bar is not None:
            bar.close()
    return total, count, metrics


def _finish(total: float, count: int, metrics) -> dict:
    if count == 0:
        raise ValueError("evaluation data is empty: no batches to evaluate")
    out = {"loss": total / count}
    if metrics is not None:
        out.update(metrics.compute())
    bad = [f"{k} is {v}" for k, v in out.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        _log.warning("rnnkit: evaluation: %s (written as null: JSON has no NaN or Infinity)", ", ".join(bad))
    return json_safe(out)


def _detach(state):
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(_detach(s) for s in state))
    if isinstance(state, (list, tuple)):
        return type(state)(_detach(s) for s in state)
    return state


def _progress(*, total, desc: str, enabled: bool, stream=None):
    """A tqdm bar on a terminal; into a file or a pipe (a log, ``| tee``), where carriage-return
    redraws pile up as one endless line, a plain line every ``_LineProgress.every`` seconds."""
    if not enabled:
        return None
    stream = stream if stream is not None else sys.stderr
    if not (hasattr(stream, "isatty") and stream.isatty()):
        return _LineProgress(total=total, desc=desc, stream=stream)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=True, dynamic_ncols=True, file=stream)


class _LineProgress:
    """The part of tqdm's interface the trainer uses, written as whole lines:
    ``desc: 120/400 steps (30%), 41 s, loss 0.5123, 2,300 tok/s``."""

    every = 30.0  # seconds between lines

    def __init__(self, *, total, desc: str, stream) -> None:
        self.total, self.desc, self.stream = total, desc, stream
        self.n, self.postfix, self.start = 0, "", time.perf_counter()
        self.last = self.start

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            self._line()

    def _line(self) -> None:
        done = f"{self.n}/{self.total} steps ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n} steps"
        tail = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {done}, {time.perf_counter() - self.start:.0f} s{tail}", file=self.stream, flush=True)

    def close(self) -> None:
        self._line()


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(rng: dict) -> None:
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
