"""Argument and input checks, one module for the whole package (layers, heads, the CLI's
wiring): each raises ValueError/TypeError naming the argument, what was expected, what came in
and what is allowed."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["check_input", "check_lengths", "check_state", "check_choice", "check_int", "check_rate",
           "check_bool", "env_flag", "exporting"]


def _shape(t) -> str:
    return str(tuple(t.shape)) if isinstance(t, Tensor) else type(t).__name__


def exporting() -> bool:
    """True while ``torch.export`` (or the ONNX exporter built on it) captures a graph. Tensors
    hold no values then, so checks of values -- not of shapes -- are made by the eager call
    before export, and by ``rnnkit.export``'s parity check after it."""
    return torch.compiler.is_exporting()


def check_input(x, input_size: int, name: str = "x") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, T, D); got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
    if x.dim() != 3:
        raise ValueError(f"{name} must have 3 dimensions (B, T, D), batch first; got shape {_shape(x)}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} must have at least one time step; got shape {_shape(x)}")
    if x.shape[2] != input_size:
        raise ValueError(f"{name} must have last dimension D = input_size = {input_size}; "
                         f"got shape {_shape(x)}")


def check_lengths(lengths, B: int, T: int, device: torch.device) -> Tensor | None:
    """Validate ``lengths`` and return it as an int64 tensor on ``device`` (or None)."""
    if lengths is None:
        return None
    if not isinstance(lengths, Tensor):
        try:
            lengths = torch.as_tensor(lengths)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"lengths must be a 1-D integer tensor or list of ints; got {lengths!r}") from None
    if lengths.dtype == torch.bool or lengths.is_floating_point() or lengths.is_complex():
        raise TypeError(f"lengths must have an integer dtype; got {lengths.dtype}")
    if lengths.dim() != 1 or lengths.shape[0] != B:
        raise ValueError(f"lengths must have shape (B,) = ({B},); got {_shape(lengths)}")
    if exporting():
        return lengths.to(device=device, dtype=torch.long)
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo < 1:
        raise ValueError(f"lengths must be >= 1 (every sequence needs a step); got min {lo}")
    if hi > T:
        raise ValueError(f"lengths must be <= T = {T} (the time dimension of x); got max {hi}")
    return lengths.to(device=device, dtype=torch.long)


def check_state(state, B: int, H: int, lstm: bool, name: str = "state") -> None:
    # The expected shape is written out only for a message: formatting a symbolic B while a
    # graph is captured would fix it to the example's size.
    def want() -> str:
        return f"(B, H) = ({B}, {H})"

    if lstm:
        if not (isinstance(state, (tuple, list)) and len(state) == 2):
            raise TypeError(f"{name} of an LSTM must be a pair (h, c) of tensors {want()}; got {_shape(state)}")
        for part, t in zip("hc", state):
            check_state(t, B, H, False, f"{name}[{'hc'.index(part)}] ({part})")
        return
    if not isinstance(state, Tensor):
        raise TypeError(f"{name} must be a tensor of shape {want()}; got {type(state).__name__}")
    if state.dim() != 2 or state.shape[0] != B or state.shape[1] != H:
        raise ValueError(f"{name} must have shape {want()}; got {_shape(state)}")


def check_choice(name: str, value, allowed: Sequence) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def check_int(name: str, value, *, low: int = 1, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}{' or None' if optional else ''}; got {value!r}")


def check_rate(name: str, value, *, high: float = 1.0, closed: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
        0.0 <= value <= high if closed else 0.0 <= value < high)
    if not ok:
        raise ValueError(f"{name} must be a float in [0, {high:g}{']' if closed else ')'}; got {value!r}")


def check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool (True or False); got {value!r}")


def env_flag(name: str, default: bool, on: str, off: str) -> bool:
    """The switch ``name`` in the environment: 1/true/yes/on or 0/false/no/off (any case; unset or
    empty: ``default``); anything else raises, naming the variable, the value and what each
    spelling does (``on`` / ``off``)."""
    value = os.environ.get(name, "").strip().lower()
    if value == "":
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={os.environ[name]!r}: expected 1/true/yes/on ({on}) or 0/false/no/off ({off})")
