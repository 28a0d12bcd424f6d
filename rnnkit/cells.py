"""One time step of each recurrent cell, written as its equations.

These modules are the reference math of rnnkit. Every faster path (torch's fused kernels, the
compiled loop) is tested against them. Each cell splits its step into two halves so that a loop
over time can compute the input half for all steps with one GEMM:

    xi = cell.input_projection(x)            # (B, T, G*H) or (B, G*H): no recurrence in it
    state = cell.recurrent_step(xi_t, state)  # the part that depends on the previous state

and ``cell(x_t, state)`` does both for a single step. Parameter names and the packing of gates
inside ``weight_ih`` / ``weight_hh`` follow ``torch.nn.RNNCell`` / ``GRUCell`` / ``LSTMCell``, so
weights copy across unchanged.

Symbols: B batch, D input size, H hidden size, G number of gates; x_t (B, D) the input at step
t, h_prev (B, H) the previous hidden state, sigma the logistic sigmoid, * elementwise product.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["RNNCell", "GRUCell", "LSTMCell", "LayerNormGRUCell", "LayerNormLSTMCell"]

State = Tensor | tuple[Tensor, Tensor]


def _check_size(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")


class _Cell(nn.Module):
    """Shared parameter layout: weight_ih (G*H, D), weight_hh (G*H, H), biases (G*H,)."""

    gates: int = 1

    def __init__(self, input_size: int, hidden_size: int, *, bias: bool = True) -> None:
        super().__init__()
        _check_size("input_size", input_size)
        _check_size("hidden_size", hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bool(bias)
        G, H, D = self.gates, hidden_size, input_size
        self.weight_ih = nn.Parameter(torch.empty(G * H, D))
        self.weight_hh = nn.Parameter(torch.empty(G * H, H))
        if self.bias:
            self.bias_ih = nn.Parameter(torch.empty(G * H))
            self.bias_hh = nn.Parameter(torch.empty(G * H))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # torch.nn's initialisation, so a fresh rnnkit layer trains like a fresh torch.nn one.
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    @property
    def is_lstm(self) -> bool:
        return False

    def initial_state(self, batch: int, like: Tensor) -> State:
        h = like.new_zeros(batch, self.hidden_size)
        return (h, h.clone()) if self.is_lstm else h

    def input_projection(self, x: Tensor) -> Tensor:
        """W_ih x + b_ih for any leading shape: (..., D) -> (..., G*H)."""
        return F.linear(x, self.weight_ih, self.bias_ih)

    def _hidden_projection(self, h_prev: Tensor) -> Tensor:
        return F.linear(h_prev, self.weight_hh, self.bias_hh)

    def recurrent_step(self, xi: Tensor, state: State, mask: Tensor | None = None) -> State:
        raise NotImplementedError

    def forward(self, x: Tensor, state: State | None = None) -> State:
        """One step: x (B, D), state (B, H) or (h, c) -> the new state."""
        if state is None:
            state = self.initial_state(x.shape[0], x)
        return self.recurrent_step(self.input_projection(x), state)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class RNNCell(_Cell):
    r"""Elman RNN cell.

    .. math::
        h_t = \phi(W_{ih} x_t + b_{ih} + W_{hh} (m \odot h_{t-1}) + b_{hh})

    ``phi`` is ``tanh`` or ``relu`` (``nonlinearity``); ``m`` is the recurrent-dropout mask
    (all ones unless given). One gate: weight_ih (H, D), weight_hh (H, H).
    """

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, *, bias: bool = True,
                 nonlinearity: str = "tanh") -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be one of tanh, relu; got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias=bias)

    def recurrent_step(self, xi: Tensor, h_prev: Tensor, mask: Tensor | None = None) -> Tensor:
        hh = self._hidden_projection(h_prev if mask is None else h_prev * mask)
        return torch.tanh(xi + hh) if self.nonlinearity == "tanh" else torch.relu(xi + hh)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", nonlinearity={self.nonlinearity!r}"


class GRUCell(_Cell):
    r"""Gated recurrent unit, PyTorch's convention (Cho et al. 2014, reset after the matmul).

    .. math::
        r &= \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}) \\
        z &= \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
        n &= \tanh(W_{in} x_t + b_{in} + r \odot (W_{hn} h_{t-1} + b_{hn})) \\
        h_t &= (1 - z) \odot n + z \odot h_{t-1}

    r reset gate, z update gate (z = 1 keeps the old state), n candidate state. Gate order
    inside weight_ih (3H, D) and weight_hh (3H, H): r, z, n. The reset gate multiplies
    ``W_hn h + b_hn`` *after* the matmul, as cuDNN and torch.nn.GRU do, so all three recurrent
    gates come out of one GEMM. With recurrent dropout, h_{t-1} inside the matmuls is
    ``m * h_{t-1}``; the carry term ``z * h_{t-1}`` is not masked.
    """

    gates = 3

    def recurrent_step(self, xi: Tensor, h_prev: Tensor, mask: Tensor | None = None) -> Tensor:
        hh = self._hidden_projection(h_prev if mask is None else h_prev * mask)
        xr, xz, xn = xi.chunk(3, dim=-1)
        hr, hz, hn = hh.chunk(3, dim=-1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return n + z * (h_prev - n)  # == (1 - z) * n + z * h_prev, one op fewer


class LSTMCell(_Cell):
    r"""Long short-term memory cell (Hochreiter & Schmidhuber 1997, with forget gate).

    .. math::
        i &= \sigma(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi}) \\
        f &= \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf}) \\
        g &= \tanh(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg}) \\
        o &= \sigma(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho}) \\
        c_t &= f \odot c_{t-1} + i \odot g \\
        h_t &= o \odot \tanh(c_t)

    i input gate, f forget gate, g candidate cell, o output gate, c cell state. Gate order
    inside weight_ih (4H, D) and weight_hh (4H, H): i, f, g, o (torch.nn.LSTM's). The state is
    the pair ``(h, c)``. ``forget_bias`` (default 1.0, Jozefowicz et al. 2015) initialises
    b_if to that value and b_hf to 0 so that the cell remembers by default; ``None`` keeps
    torch.nn's uniform initialisation.
    """

    gates = 4

    def __init__(self, input_size: int, hidden_size: int, *, bias: bool = True,
                 forget_bias: float | None = 1.0) -> None:
        if forget_bias is not None and not bias:
            raise ValueError(f"forget_bias needs bias=True; got forget_bias={forget_bias!r} with bias=False")
        self.forget_bias = forget_bias
        super().__init__(input_size, hidden_size, bias=bias)

    @property
    def is_lstm(self) -> bool:
        return True

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.forget_bias is not None:
            H = self.hidden_size
            with torch.no_grad():
                self.bias_ih[H:2 * H].fill_(self.forget_bias)
                self.bias_hh[H:2 * H].zero_()

    def _gates(self, xi: Tensor, h_prev: Tensor, mask: Tensor | None) -> tuple[Tensor, ...]:
        hh = self._hidden_projection(h_prev if mask is None else h_prev * mask)
        return (xi + hh).chunk(4, dim=-1)

    def recurrent_step(self, xi: Tensor, state: tuple[Tensor, Tensor],
                       mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h_prev, c_prev = state
        i, f, g, o = self._gates(xi, h_prev, mask)
        c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


def _gate_norm(y: Tensor, gain: Tensor, shift: Tensor, eps: float) -> Tensor:
    """Layer-normalise each gate's H pre-activations on its own: (..., G*H) -> (..., G*H)."""
    G, H = gain.shape
    y = F.layer_norm(y.unflatten(-1, (G, H)), (H,), eps=eps)
    return (y * gain + shift).flatten(-2)


class _LayerNormCell(_Cell):
    """Layer-normalised gate pre-activations (Ba et al. 2016): the normalisation's shift
    replaces the biases, so these cells have gains/shifts instead of bias_ih/bias_hh."""

    def __init__(self, input_size: int, hidden_size: int, *, eps: float = 1e-5) -> None:
        self.eps = eps
        G, H = self.gates, hidden_size
        # _Cell directly: the plain cells' __init__ would add biases and their own options.
        _Cell.__init__(self, input_size, hidden_size, bias=False)
        self.gain_ih = nn.Parameter(torch.ones(G, H))
        self.shift_ih = nn.Parameter(torch.zeros(G, H))
        self.gain_hh = nn.Parameter(torch.ones(G, H))
        self.shift_hh = nn.Parameter(torch.zeros(G, H))

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        nn.init.uniform_(self.weight_ih, -bound, bound)
        nn.init.uniform_(self.weight_hh, -bound, bound)
        for name in ("gain_ih", "gain_hh", "gain_c"):
            if hasattr(self, name):
                nn.init.ones_(getattr(self, name))
        for name in ("shift_ih", "shift_hh", "shift_c"):
            if hasattr(self, name):
                nn.init.zeros_(getattr(self, name))

    def input_projection(self, x: Tensor) -> Tensor:
        """LN_ih(W_ih x), normalised per gate; (..., D) -> (..., G*H)."""
        return _gate_norm(F.linear(x, self.weight_ih), self.gain_ih, self.shift_ih, self.eps)

    def _hidden_projection(self, h_prev: Tensor) -> Tensor:
        return _gate_norm(F.linear(h_prev, self.weight_hh), self.gain_hh, self.shift_hh, self.eps)


class LayerNormGRUCell(_LayerNormCell, GRUCell):
    r"""GRU with layer-normalised gate pre-activations, PyTorch's gate convention.

    .. math::
        a &= \mathrm{LN}_{ih}(W_{ih} x_t), \qquad b = \mathrm{LN}_{hh}(W_{hh} h_{t-1}) \\
        r &= \sigma(a_r + b_r), \quad z = \sigma(a_z + b_z), \quad
        n = \tanh(a_n + r \odot b_n) \\
        h_t &= (1 - z) \odot n + z \odot h_{t-1}

    LN normalises each gate's H values separately and applies a learned gain and shift of
    shape (3, H) (gate order r, z, n); the shifts play the role of the biases.
    """

    gates = 3

    def __init__(self, input_size: int, hidden_size: int, *, eps: float = 1e-5) -> None:
        _LayerNormCell.__init__(self, input_size, hidden_size, eps=eps)


class LayerNormLSTMCell(_LayerNormCell, LSTMCell):
    r"""LSTM with layer-normalised gate pre-activations and cell state (Ba et al. 2016).

    .. math::
        i, f, g, o &= \text{split}(\mathrm{LN}_{ih}(W_{ih} x_t) + \mathrm{LN}_{hh}(W_{hh} h_{t-1})) \\
        c_t &= \sigma(f) \odot c_{t-1} + \sigma(i) \odot \tanh(g) \\
        h_t &= \sigma(o) \odot \tanh(\mathrm{LN}_c(c_t))

    Gate order i, f, g, o; LN_ih and LN_hh act per gate with gains/shifts of shape (4, H),
    LN_c over the H cell values with gain_c/shift_c of shape (H,). ``forget_bias``
    initialises the forget gate's shift in LN_ih.
    """

    gates = 4

    def __init__(self, input_size: int, hidden_size: int, *, eps: float = 1e-5,
                 forget_bias: float | None = 1.0) -> None:
        self.forget_bias = forget_bias
        _LayerNormCell.__init__(self, input_size, hidden_size, eps=eps)
        self.gain_c = nn.Parameter(torch.ones(hidden_size))
        self.shift_c = nn.Parameter(torch.zeros(hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _LayerNormCell.reset_parameters(self)
        if self.forget_bias is not None and hasattr(self, "shift_ih"):
            with torch.no_grad():
                self.shift_ih[1].fill_(self.forget_bias)

    def recurrent_step(self, xi: Tensor, state: tuple[Tensor, Tensor],
                       mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h_prev, c_prev = state
        i, f, g, o = self._gates(xi, h_prev, mask)
        c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
        c_norm = F.layer_norm(c, (self.hidden_size,), self.gain_c, self.shift_c, self.eps)
        h = torch.sigmoid(o) * torch.tanh(c_norm)
        return h, c
