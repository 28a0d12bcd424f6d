"""Weights between rnnkit's cells and torch.nn.RNN/GRU/LSTM, so users can migrate and parity
can be proven. The layers' ``from_torch`` / ``to_torch`` methods are the public face of this.

torch.nn names a layer's parameters ``{weight,bias}_{ih,hh}_l{k}`` with ``_reverse`` for the
backward direction; rnnkit's cells use the same gate packing under ``{weight,bias}_{ih,hh}``,
so a copy is a rename.
"""

from __future__ import annotations

import torch
from torch import nn

from .cells import GRUCell, LSTMCell, RNNCell

__all__ = ["kind_of", "check_module", "copy_from_torch", "copy_to_torch", "torch_module"]

TORCH_CLASSES = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
NAMES = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}


def kind_of(module) -> str:
    """``rnn`` | ``gru`` | ``lstm`` for a torch.nn recurrent module."""
    for kind, torch_cls in TORCH_CLASSES.items():
        if isinstance(module, torch_cls):
            return kind
    raise TypeError(f"module must be a torch.nn.RNN, GRU or LSTM; got {type(module).__name__}")


def check_module(module, caller: str, *, kind: str | None = None, layers: int | None = None,
                 bidirectional: bool | None = None) -> str:
    """Check that ``caller.from_torch(module)`` can take this module; return its kind."""
    found = kind_of(module)
    name = f"torch.nn.{type(module).__name__}"
    if kind is not None and found != kind:
        raise TypeError(f"{caller}.from_torch needs a torch.nn.{NAMES[kind]}; got {name}")
    if getattr(module, "proj_size", 0):
        raise ValueError(f"{name} with proj_size={module.proj_size} has no rnnkit equivalent; "
                         "use proj_size=0")
    if layers is not None and module.num_layers != layers:
        raise ValueError(f"{caller}.from_torch takes a {name} with num_layers={layers}; got "
                         f"num_layers={module.num_layers} (use rnnkit.Stack.from_torch)")
    if bidirectional is not None and module.bidirectional != bidirectional:
        other = "Bidirectional" if module.bidirectional else NAMES[found]
        raise ValueError(f"{caller}.from_torch takes a {name} with bidirectional={bidirectional}; "
                         f"got bidirectional={module.bidirectional} (use rnnkit.{other}.from_torch)")
    return found


def _param_names(cell) -> list[str]:
    return ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if cell.bias else [])


@torch.no_grad()
def copy_from_torch(cell, module, k: int, suffix: str = "") -> None:
    """Layer ``k`` of ``module`` (``suffix="_reverse"`` for its backward direction) into ``cell``."""
    for name in _param_names(cell):
        getattr(cell, name).copy_(getattr(module, f"{name}_l{k}{suffix}"))


@torch.no_grad()
def copy_to_torch(cell, module, k: int, suffix: str = "") -> None:
    for name in _param_names(cell):
        getattr(module, f"{name}_l{k}{suffix}").copy_(getattr(cell, name))


def torch_module(cells: list, *, input_size: int, num_layers: int, bidirectional: bool,
                 dropout: float) -> nn.RNNBase:
    """A batch-first torch.nn module shaped for ``cells`` (all of its layers and directions)."""
    others = sorted({type(c).__name__ for c in cells if type(c) not in (RNNCell, GRUCell, LSTMCell)})
    if others:
        raise ValueError(f"to_torch needs plain RNN/GRU/LSTM cells; {', '.join(others)} has no "
                         "torch.nn equivalent")
    if len({type(c) for c in cells}) != 1 or len({c.hidden_size for c in cells}) != 1:
        raise ValueError("to_torch needs the same cell and hidden size in every layer and direction")
    cell = cells[0]
    kind = "lstm" if isinstance(cell, LSTMCell) else "gru" if isinstance(cell, GRUCell) else "rnn"
    options = dict(bias=cell.bias, num_layers=num_layers, bidirectional=bidirectional,
                   dropout=dropout, batch_first=True)
    if kind == "rnn":
        options["nonlinearity"] = cell.nonlinearity
    module = TORCH_CLASSES[kind](input_size, cell.hidden_size, **options)
    return module.to(dtype=cell.weight_ih.dtype, device=cell.weight_ih.device)
