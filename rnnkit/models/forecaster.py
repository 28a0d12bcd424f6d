"""Numeric forecasting: a multivariate window (B, T, D) -> the next ``horizon`` steps of some of
its features (B, horizon, D_out).

* ``direct`` -- encoder over the window, its summary (as ``SequenceClassifier``'s ``last``
  pooling; bidirectional allowed) -> one linear layer -> all horizon steps at once.
* ``autoregressive`` -- a unidirectional encoder predicts the next step from its state, and
  the prediction is fed back as the next input. Training feeds the true next values (teacher
  forcing); ``predict`` feeds its own. Needs D_out = D (every feature is forecast).

Scaling: ``scaling="standard"`` standardises every feature with a mean and scale that
``fit_scaler`` computes from *training* windows only, stored as buffers ``mean_`` / ``scale_``
(saved with the weights). Loss is computed on the scaled values; ``predict`` returns the
original units.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import exporting
from ._common import (build_stack, check_batch, check_choice, check_int, check_rate, check_values,
                      encoder_config, final_features, final_size, last_step, length_mask)

__all__ = ["Forecaster", "make_windows", "MODES", "SCALINGS"]

MODES = ("direct", "autoregressive")
SCALINGS = ("standard", "none")


def make_windows(series: Tensor, *, window: int, horizon: int, stride: int = 1,
                 target_indices: list[int] | None = None) -> dict:
    """Cut a series (N, D) into a batch: ``inputs`` (M, window, D), ``lengths`` (M,) and
    ``labels`` (M, horizon, D_out), the ``horizon`` steps after each window."""
    check_int("window", window)
    check_int("horizon", horizon)
    check_int("stride", stride)
    if not isinstance(series, Tensor) or series.dim() != 2 or not series.is_floating_point():
        raise ValueError(f"series must be a float tensor of shape (N, D); got "
                         f"{tuple(series.shape) if isinstance(series, Tensor) else type(series).__name__}")
    N = series.shape[0]
    if N < window + horizon:
        raise ValueError(f"series has N = {N} steps; window + horizon = {window + horizon} are needed")
    starts = torch.arange(0, N - window - horizon + 1, stride)
    inputs = torch.stack([series[s:s + window] for s in starts.tolist()])
    labels = torch.stack([series[s + window:s + window + horizon] for s in starts.tolist()])
    if target_indices is not None:
        labels = labels[..., list(target_indices)]
    return {"inputs": inputs, "lengths": torch.full((len(starts),), window), "labels": labels}


class Forecaster(nn.Module):
    """Multivariate window -> horizon.

    Args (keyword-only):
        input_size: D, features per step.
        horizon: steps to forecast.
        target_indices: which features to forecast (default: all; D_out = their number).
        mode: ``direct | autoregressive`` (module docstring).
        encoder: ``rnnkit.Stack`` options.
        scaling: ``standard`` (fit with ``fit_scaler`` before training) or ``none``.
        dropout: on the encoder summary (direct) or outputs (autoregressive).
        max_length: longest window accepted (None: any).

    Batches: ``inputs`` (B, T, D) float, ``lengths`` (B,), ``labels`` (B, horizon, D_out)
    float ((B, horizon) when D_out = 1).
    """

    def __init__(self, *, input_size: int, horizon: int, target_indices: list[int] | None = None,
                 mode: str = "direct", encoder: dict | None = None, scaling: str = "standard",
                 dropout: float = 0.0, max_length: int | None = None) -> None:
        super().__init__()
        check_int("input_size", input_size)
        check_int("horizon", horizon)
        check_choice("mode", mode, MODES)
        check_choice("scaling", scaling, SCALINGS)
        check_rate("dropout", dropout)
        check_int("max_length", max_length, optional=True)
        if target_indices is not None:
            target_indices = list(target_indices)
            if not target_indices or len(set(target_indices)) != len(target_indices) or not all(
                    isinstance(i, int) and not isinstance(i, bool) and 0 <= i < input_size for i in target_indices):
                raise ValueError(f"target_indices must be distinct feature indices in [0, {input_size - 1}]; "
                                 f"got {target_indices!r}")
            if mode == "autoregressive" and sorted(target_indices) != list(range(input_size)):
                raise ValueError("mode='autoregressive' feeds each forecast back as the next input, so it must "
                                 f"forecast every feature: target_indices must be None; got {target_indices!r}")
        encoder = encoder_config(encoder, unidirectional_reason=(
            "mode='autoregressive' steps the encoder forward one forecast at a time"
            if mode == "autoregressive" else None))
        self.config = dict(input_size=input_size, horizon=horizon, target_indices=target_indices, mode=mode,
                           encoder=encoder, scaling=scaling, dropout=dropout, max_length=max_length)
        self.input_size, self.horizon, self.mode, self.scaling = input_size, horizon, mode, scaling
        self.max_length = max_length
        self.targets = target_indices if target_indices is not None else list(range(input_size))
        self.encoder = build_stack(input_size, encoder)
        self.drop = nn.Dropout(dropout)
        D_out = len(self.targets)
        if mode == "direct":
            self.output = nn.Linear(final_size(self.encoder), horizon * D_out)
        else:
            self.output = nn.Linear(self.encoder.output_size, input_size)
        self.register_buffer("mean_", torch.zeros(input_size))
        self.register_buffer("scale_", torch.ones(input_size))
        self.register_buffer("fitted_", torch.tensor(scaling == "none"))

    @property
    def device(self) -> torch.device:
        return self.output.weight.device

    @torch.no_grad()
    def fit_scaler(self, inputs: Tensor, lengths: Tensor | None = None) -> "Forecaster":
        """Fit the per-feature mean and scale on training windows (B, T, D) (or a series (N, D)),
        over real steps only. A constant feature gets scale 1. Call it on training data only."""
        if self.scaling == "none":
            raise ValueError("fit_scaler needs scaling='standard'; this model has scaling='none'")
        x = inputs[None] if inputs.dim() == 2 else inputs
        batch = {"inputs": x, "lengths": torch.full((x.shape[0],), x.shape[1]) if lengths is None else lengths}
        x, lengths = check_values(batch, input_size=self.input_size, device=self.device)
        real = x[length_mask(lengths, x.shape[1])].double()  # (steps, D)
        std = real.std(dim=0, unbiased=False)
        self.mean_.copy_(real.mean(dim=0))
        self.scale_.copy_(torch.where(std > 0, std, torch.ones_like(std)))
        self.fitted_.fill_(True)
        return self

    def _scaled_inputs(self, batch: dict) -> tuple[Tensor, Tensor]:
        if not exporting() and not bool(self.fitted_):
            raise ValueError("scaling='standard' needs the scaler fitted on training data first: call "
                             "model.fit_scaler(train_inputs) before loss or predict")
        x, lengths = check_values(batch, input_size=self.input_size, max_length=self.max_length,
                                  device=self.device, dtype=self.output.weight.dtype)
        return (x - self.mean_) / self.scale_, lengths

    def _direct(self, x: Tensor, lengths: Tensor) -> Tensor:
        out, states = self.encoder(x, lengths=lengths)
        y = self.output(self.drop(final_features(out, states, lengths)))
        return y.view(x.shape[0], self.horizon, len(self.targets))

    def forward(self, batch: dict, teacher: Tensor | None = None) -> Tensor:
        """Scaled forecasts (B, horizon, D_out). In autoregressive mode, ``teacher`` (scaled true
        values (B, horizon, D)) replaces the model's own forecasts as the fed-back inputs."""
        x, lengths = self._scaled_inputs(batch)
        if self.mode == "direct":
            return self._direct(x, lengths)
        out, states = self.encoder(x, lengths=lengths)
        first = self.output(self.drop(last_step(out, lengths)))  # (B, D): step T+1
        if self.horizon == 1:
            return first[:, None]
        if teacher is not None:
            rest, _ = self.encoder(teacher[:, :-1], states)  # (B, horizon-1, H)
            return torch.cat([first[:, None], self.output(self.drop(rest))], dim=1)
        preds = [first]
        for _ in range(self.horizon - 1):
            y, states = self.encoder.step(preds[-1], states)
            preds.append(self.output(self.drop(y)))
        return torch.stack(preds, dim=1)

    def _labels(self, batch: dict, B: int) -> Tensor:
        check_batch(batch, ("labels",))
        y, h, D_out = batch["labels"], self.horizon, len(self.targets)
        if y.dim() == 2 and D_out == 1:
            y = y[..., None]
        if not y.is_floating_point() or tuple(y.shape) != (B, h, D_out):
            raise ValueError(f"batch['labels'] must be float values of shape (B, horizon, D_out) = ({B}, {h}, "
                             f"{D_out}); got {batch['labels'].dtype} {tuple(batch['labels'].shape)}")
        y = y.to(self.device, self.output.weight.dtype)
        return (y - self.mean_[self.targets]) / self.scale_[self.targets]

    def loss(self, batch: dict) -> Tensor:
        """Mean squared error on the scaled values (teacher forcing when autoregressive)."""
        B = check_batch(batch, ("inputs",))
        y = self._labels(batch, B)
        return F.mse_loss(self(batch, teacher=y if self.mode == "autoregressive" else None), y)

    @torch.no_grad()
    def predict(self, batch: dict) -> Tensor:
        """Forecasts in the original units (B, horizon, D_out)."""
        return self(batch) * self.scale_[self.targets] + self.mean_[self.targets]
