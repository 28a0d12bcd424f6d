"""Parallel-scan cells: minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?").

Both cells drop the previous state from their gates, so every step's update is affine in the
previous state with coefficients computed from the input alone:

    h_t = a_t * h_{t-1} + b_t        a_t, b_t (B, T, H) from x only

and all T steps are one *linear scan* instead of T dependent matmuls. Two scans compute it:

* ``chunked`` (the default) -- split T into n chunks of C ~ sqrt(T/2) steps; run all chunks at
  once from a zero state to get each chunk's end state and total decay (C vectorised steps),
  carry the true state from chunk to chunk (n small steps), then run all chunks again from
  their true entering states (C steps), writing h. It only multiplies and adds (no logarithms,
  no division by a cumulative product), so it is as stable as the step-by-step loop. It is a
  ``torch.autograd.Function`` whose backward is the same scan run backwards in time,
  dL/dh_t = g_t + a_{t+1} dL/dh_{t+1}, so training builds no autograd graph per step.
* ``log`` -- Heinsen's (2023) log-space scan, the paper's method:
  ``h_t = exp(a*_t) h_0 + exp(a*_t + logcumsumexp_s<=t(log b_s - a*_s))`` with
  ``a*_t = cumsum(log a)``. It needs b_t > 0, which the paper's g guarantees.

``bench/scan.py`` measured both for training on this CPU (docs/benchmarks.md, section 3); the chunked scan
was 3-10x faster than the log-space one at T = 500 and 2000 (forward + backward), so it is the
default. The log-space scan stays available as ``scan="log"``.

Symbols: B batch, T time, D input size, H hidden size, G gates; x_t (B, D) the input at step t,
k = W_ih x_t + b_ih (B, G*H) its projection (split per gate: k_z, k_h or k_f, k_i, k_h),
h_{t-1} (B, H) the previous state, sigma the logistic sigmoid, * (or ⊙) elementwise product,
g the paper's positive activation g(v) = v + 1/2 for v >= 0, sigma(v) for v < 0.

Initial state (both modes, both scans): h_0 is the given state, or zeros. h_0 enters the
recurrence as it is -- it is *not* passed through g or any normalisation -- so the scan from a
state equals ``step`` from that state. ``step`` computes a_t and b_t with the very same function
as the scan, so the two differ only by floating-point rounding order.

Variable lengths: at padded steps a_t = 1, b_t = 0, so the state is carried unchanged to step T
(the final state is the one at each sequence's own last step) and outputs are zeroed there.
``reverse=True`` reads each sequence from its own last token (``recurrence.reverse_padded``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import _shape, check_input, check_lengths, check_state
from .recurrence import Path, length_mask, reverse_padded

__all__ = ["MinGRU", "MinLSTM", "linear_scan", "log_scan", "SCANS"]

SCANS = ("chunked", "log")


# ------------------------------------------------------------------------------ the scans

def _chunk_size(T: int) -> int:
    # 2C + T/C sequential small steps: C ~ sqrt(T/2) makes the fewest (and measured fastest).
    return max(1, min(T, round(math.sqrt(T / 2))))


def _scan(a: Tensor, b: Tensor, h0: Tensor, *, reverse: bool = False) -> Tensor:
    """h_t = a_t * h_{t-1} + b_t for a, b (B, T, H), h0 (B, H) -> h (B, T, H), by chunks.

    ``reverse=True`` runs h_t = a_t * h_{t+1} + b_t from h_T = h0 down to t = 0 (the adjoint
    needs it) without flipping any tensor."""
    B, T, H = a.shape
    C = _chunk_size(T)
    n = -(-T // C)
    if n * C > T:  # pad the end with a = 1, b = 0: it carries the state (or h0, in reverse)
        a = F.pad(a, (0, 0, 0, n * C - T), value=1.0)
        b = F.pad(b, (0, 0, 0, n * C - T))
    a, b = a.reshape(B, n, C, H), b.reshape(B, n, C, H)
    steps = range(C - 1, -1, -1) if reverse else range(C)
    # 1. Every chunk at once from a zero state (C steps on (B, n, H)): its end state, and its
    #    total decay a_1 * ... * a_C.
    end = b[:, :, steps[0]]
    for c in steps[1:]:
        end = torch.addcmul(b[:, :, c], a[:, :, c], end)
    decay = torch.prod(a, dim=2)  # (B, n, H)
    # 2. The true state entering each chunk (n steps on (B, H)).
    carry = torch.empty_like(end)
    state = h0
    for j in (range(n - 1, -1, -1) if reverse else range(n)):
        carry[:, j] = state
        state = torch.addcmul(end[:, j], decay[:, j], state)
    # 3. Every chunk again from its true entering state: the recurrence itself, as ``step``
    #    computes it, so the scan only reorders which steps run side by side.
    h = torch.empty_like(b)
    state = carry
    for c in steps:
        state = torch.addcmul(b[:, :, c], a[:, :, c], state, out=h[:, :, c])
    return h.reshape(B, n * C, H)[:, :T]


def _adjoint(a: Tensor, h0: Tensor, h: Tensor, grad_h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Backward of ``_scan``: (dL/da, dL/db, dL/dh0). The adjoint of a linear recurrence is the
    same recurrence run backwards in time, g_t = dL/dh_t + a_{t+1} g_{t+1}; then dL/db_t = g_t,
    dL/da_t = g_t h_{t-1} and dL/dh_0 = a_1 g_1."""
    a_next = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], dim=1)  # nothing after T
    g = _scan(a_next, grad_h, torch.zeros_like(h0), reverse=True)
    grad_a = torch.empty_like(g)  # g_t * h_{t-1}, without concatenating h0 and h
    torch.mul(g[:, 1:], h[:, :-1], out=grad_a[:, 1:])
    torch.mul(g[:, 0], h0, out=grad_a[:, 0])
    return grad_a, g, a[:, 0] * g[:, 0]


class _LinearScan(torch.autograd.Function):
    """``_scan`` with its hand-written backward ``_adjoint``."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
        h = _scan(a, b, h0)
        ctx.save_for_backward(a, h0, h)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h: Tensor):
        return _adjoint(*ctx.saved_tensors, grad_h)


def linear_scan(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """h_t = a_t * h_{t-1} + b_t for all t: a, b (B, T, H), h0 (B, H) or None (zeros) -> (B, T, H).

    Any signs; chunked, differentiable in a, b and h0 (first order)."""
    if h0 is None:
        h0 = b.new_zeros(b.shape[0], b.shape[2])
    return _LinearScan.apply(a, b, h0)


def log_scan(log_a: Tensor, log_b: Tensor, h0: Tensor | None = None) -> Tensor:
    """The same recurrence from log a_t and log b_t (b_t > 0; -inf means b_t = 0), Heinsen's
    method: h_t = exp(a*_t) h_0 + exp(a*_t + logcumsumexp(log b - a*)_t), a* = cumsum(log a).
    h_0 (any sign) stays outside the logarithms."""
    a_star = torch.cumsum(log_a, dim=1)  # (B, T, H)
    h = torch.exp(a_star + torch.logcumsumexp(log_b - a_star, dim=1))
    if h0 is not None:
        h = h + torch.exp(a_star) * h0[:, None]
    return h


# ---------------------------------------------------------------------------- the layers

def _g(v: Tensor) -> Tensor:
    """The paper's positive activation: g(v) = v + 1/2 for v >= 0, sigma(v) otherwise.

    Written as sigma(min(v, 0)) + relu(v) (equal: sigma(0) = 1/2): torch.where is an order of
    magnitude slower than these elementwise ops on this CPU build (docs/benchmarks.md, section 3)."""
    return torch.sigmoid(v.clamp(max=0)) + F.relu(v)


def _g_prime(v: Tensor, g: Tensor) -> Tensor:
    """dg/dv from v and g = g(v): 1 for v > 0, sigma(v)(1 - sigma(v)) = g(1 - g) for v <= 0 (at
    v = 0 that is 1/4, the left derivative, as autograd gives for ``_g``). min(g, 1/2) is
    sigma(min(v, 0)), so no sigmoid is recomputed."""
    s = g.clamp(max=0.5)
    return s.sub_(s.square()).add_(F.relu(v).sign_().mul_(0.75))


def _log_g(v: Tensor) -> Tensor:
    """log g(v), stably and without torch.where: log(relu(v) + 1/2) - softplus(-min(v, 0)) + log 2,
    which is log(v + 1/2) for v >= 0 and log sigma(v) = -softplus(-v) for v < 0."""
    return torch.log(F.relu(v) + 0.5) - F.softplus(-v.clamp(max=0)) + math.log(2.0)


class _CellScan(torch.autograd.Function):
    """One autograd node from the projected input k to h: the layer's ``_coefficients``, the
    padding (a = 1, b = 0) and the chunked scan in forward; in backward ``_adjoint``, then the
    layer's ``_coefficients_backward`` maps (dL/da, dL/db) to dL/dk. Fewer nodes and fewer
    temporaries than autograd through the elementwise gate math. ``valid`` is (B, T, 1), 1.0 at
    real steps and 0.0 at padding, or None."""

    @staticmethod
    def forward(ctx, layer, k: Tensor, h0: Tensor, valid: Tensor | None) -> Tensor:
        a, b, saved = layer._coefficients(k)
        if valid is not None:  # exact for valid in {0, 1}; torch.where is slower here
            a, b = a * valid + (1.0 - valid), b * valid
        h = _scan(a, b, h0)
        ctx.layer = layer
        ctx.save_for_backward(k, h0, valid, a, h, *saved)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h: Tensor):
        k, h0, valid, a, h, *saved = ctx.saved_tensors
        grad_a, grad_b, grad_h0 = _adjoint(a, h0, h, grad_h)
        if valid is not None:  # a and b were constants (1 and 0) at padded steps
            grad_a.mul_(valid)
            grad_b.mul_(valid)
        return None, ctx.layer._coefficients_backward(k, saved, grad_a, grad_b), grad_h0, None


class _MinLayer(nn.Module):
    """One direction of a parallel-scan cell; subclasses give the coefficients a_t, b_t."""

    gates: int = 1

    def __init__(self, input_size: int, hidden_size: int, *, bias: bool = True,
                 recurrent_dropout: float = 0.0, scan: str = "chunked") -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if recurrent_dropout != 0.0:
            raise ValueError(f"recurrent_dropout must be 0.0 for {type(self).__name__}: its gates do "
                             f"not read h_(t-1), so there is no recurrent matmul to drop (use dropout "
                             f"between layers); got {recurrent_dropout!r}")
        if scan not in SCANS:
            raise ValueError(f"scan must be one of {', '.join(SCANS)}; got {scan!r}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.bias, self.scan, self.recurrent_dropout = bool(bias), scan, 0.0
        G, H = self.gates, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G * H, input_size))
        self.bias_ih = nn.Parameter(torch.empty(G * H)) if self.bias else None
        self.reset_parameters()

    output_size = property(lambda self: self.hidden_size)
    is_lstm = False  # the state is h alone, for minLSTM too: it has no separate cell c

    @property
    def path(self) -> Path:
        return Path("scan", f"{self.scan} parallel scan: {type(self).__name__}'s gates do not read "
                            "h_(t-1), so h_t = a_t * h_(t-1) + b_t is linear in the state")

    def reset_parameters(self) -> None:
        # torch.nn.Linear's bound 1/sqrt(D): the only weights are an input projection.
        bound = 1.0 / math.sqrt(self.input_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def input_projection(self, x: Tensor) -> Tensor:
        """W_ih x + b_ih: (..., D) -> (..., G*H), gates packed in the documented order."""
        return F.linear(x, self.weight_ih, self.bias_ih)

    def coefficients(self, k: Tensor) -> tuple[Tensor, Tensor]:
        """Projected input k (..., G*H) -> (a, b), each (..., H): what ``step`` and the scan use."""
        a, b, _ = self._coefficients(k)
        return a, b

    def _coefficients(self, k: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        """(a, b, values the hand-written backward reuses). Out of place: ``step`` runs it
        under autograd."""
        raise NotImplementedError

    def _coefficients_backward(self, k: Tensor, saved: tuple[Tensor, ...], grad_a: Tensor,
                               grad_b: Tensor) -> Tensor:
        """The gradient of ``_coefficients`` by hand: dL/da, dL/db (..., H) -> dL/dk (..., G*H).
        Runs without autograd, so it works in place."""
        raise NotImplementedError

    def log_coefficients(self, k: Tensor) -> tuple[Tensor, Tensor]:
        """Projected input k (..., G*H) -> (log a, log b), each (..., H), without exp/log round trips."""
        raise NotImplementedError

    def forward(self, x: Tensor, state: Tensor | None = None, *, lengths=None,
                reverse: bool = False) -> tuple[Tensor, Tensor]:
        """x (B, T, D) -> (out (B, T, H), h at each sequence's true last step (B, H))."""
        check_input(x, self.input_size)
        B, T = x.shape[:2]
        lengths = check_lengths(lengths, B, T, x.device)
        if state is not None:
            check_state(state, B, self.hidden_size, False)
        if lengths is not None and not bool((lengths < T).any()):
            lengths = None  # all full length: nothing to mask
        if reverse:
            x = reverse_padded(x, lengths)
        k = self.input_projection(x)  # (B, T, G*H)
        valid = None if lengths is None else length_mask(lengths, T)[..., None].to(k.dtype)  # (B, T, 1)
        if self.scan == "log":
            log_a, log_b = self.log_coefficients(k)
            if valid is not None:  # log a = 0, log b = log 0 = -inf at padding
                log_a, log_b = log_a * valid, log_b + torch.log(valid)
            h = log_scan(log_a, log_b, state)
        else:
            h0 = x.new_zeros(B, self.hidden_size) if state is None else state
            h = _CellScan.apply(self, k, h0, valid)
        final = h[:, -1]  # a = 1, b = 0 after each sequence's end carried its last state here
        out = h if valid is None else h * valid
        if reverse:
            out = reverse_padded(out, lengths)
        return out, final

    def step(self, x_t: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One step: x_t (B, D), state h_(t-1) (B, H) or None (zeros) -> (h_t, h_t).

        The same a_t, b_t and h_0 as ``forward``, so T steps equal the scan up to rounding."""
        if not isinstance(x_t, Tensor) or x_t.dim() != 2 or x_t.shape[1] != self.input_size:
            raise ValueError(f"x_t must have shape (B, D) with D = input_size = {self.input_size}; "
                             f"got {_shape(x_t)}")
        if state is None:
            state = x_t.new_zeros(x_t.shape[0], self.hidden_size)
        else:
            check_state(state, x_t.shape[0], self.hidden_size, False)
        a, b = self.coefficients(self.input_projection(x_t))
        h = torch.addcmul(b, a, state)
        return h, h

    def extra_repr(self) -> str:
        extra = "" if self.bias else ", bias=False"
        extra += "" if self.scan == "chunked" else f", scan={self.scan!r}"
        return f"{self.input_size}, {self.hidden_size}{extra}"


class MinGRU(_MinLayer):
    r"""minGRU over time (Feng et al. 2024), log-space-ready form with the paper's g.

    .. math::
        z_t &= \sigma(W_z x_t + b_z), \qquad \tilde h_t = g(W_h x_t + b_h) \\
        h_t &= (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t

    z update gate, :math:`\tilde h` candidate state, g(v) = v + 1/2 for v >= 0 and
    :math:`\sigma(v)` for v < 0 (positive, so log-space is defined). As a scan:
    a_t = 1 - z_t, b_t = z_t * g(k_h); in log space log a_t = -softplus(k_z),
    log b_t = -softplus(-k_z) + log g(k_h).

    **Convention: the paper's.** Here z = 1 takes the *new* candidate; in rnnkit's GRU (PyTorch's
    convention) z = 1 keeps the *old* state. Gate order inside weight_ih (2H, D) and
    bias_ih (2H,): z, h~. No recurrent weights. State: h (B, H), h_0 = 0 or the given state.
    """

    gates = 2

    def _coefficients(self, k: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        k_z, k_h = k.chunk(2, dim=-1)
        z, h_tilde = torch.sigmoid(k_z), _g(k_h)
        return 1 - z, z * h_tilde, (z, h_tilde)

    def _coefficients_backward(self, k, saved, grad_a, grad_b):
        # a = 1 - z, b = z h~: dL/dk_z = (dL/db h~ - dL/da) z (1 - z), dL/dk_h = dL/db z g'
        z, h_tilde = saved
        H = self.hidden_size
        grad_k = torch.empty_like(k)  # (..., 2H)
        torch.mul(grad_b, h_tilde, out=grad_k[..., :H]).sub_(grad_a).mul_(z).mul_(1 - z)
        torch.mul(grad_b, z, out=grad_k[..., H:]).mul_(_g_prime(k[..., H:], h_tilde))
        return grad_k

    def log_coefficients(self, k: Tensor) -> tuple[Tensor, Tensor]:
        k_z, k_h = k.chunk(2, dim=-1)
        return -F.softplus(k_z), -F.softplus(-k_z) + _log_g(k_h)


class MinLSTM(_MinLayer):
    r"""minLSTM over time (Feng et al. 2024), with normalised gates and the paper's g.

    .. math::
        f_t &= \sigma(W_f x_t + b_f), \quad i_t = \sigma(W_i x_t + b_i), \quad
        \tilde h_t = g(W_h x_t + b_h) \\
        f'_t &= \frac{f_t}{f_t + i_t}, \qquad i'_t = \frac{i_t}{f_t + i_t} \\
        h_t &= f'_t \odot h_{t-1} + i'_t \odot \tilde h_t

    f forget gate, i input gate, :math:`\tilde h` candidate state, g as in ``MinGRU``. The
    normalisation (f' + i' = 1) is the paper's length-independent scaling; it is applied in
    *both* ``forward`` and ``step`` (one function computes a_t, b_t for both). f and i are
    floored at the smallest normal float so that f + i > 0 where both sigmoids underflow
    (pre-activations below about -87 in float32); elsewhere the floor changes nothing. As a
    scan: a_t = f'_t, b_t = i'_t * g(k_h); the log-space scan uses log f'_t = log sigma(d),
    log i'_t = log sigma(-d), d = log f - log i = softplus(-k_i) - softplus(-k_f). Gate order
    inside weight_ih (3H, D) and bias_ih (3H,): f, i, h~.

    The state is h (B, H) alone -- minLSTM has no cell state c, so ``is_lstm`` is False and it
    takes and returns a single tensor like a GRU. h_0 = 0 or the given state, never normalised
    or passed through g.
    """

    gates = 3

    def _coefficients(self, k: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        k_f, k_i, k_h = k.chunk(3, dim=-1)
        # Floored at the smallest normal number so that f + i > 0 even where both sigmoids
        # underflow (pre-activations below about -87 in float32); elsewhere exact.
        tiny = torch.finfo(k.dtype).tiny
        f, i = torch.sigmoid(k_f).clamp(min=tiny), torch.sigmoid(k_i).clamp(min=tiny)
        total = f + i
        f_norm, i_norm, h_tilde = f / total, i / total, _g(k_h)
        return f_norm, i_norm * h_tilde, (f, i, f_norm, i_norm, h_tilde)

    def _coefficients_backward(self, k, saved, grad_a, grad_b):
        # a = f', b = i' h~ with f' = f / (f + i), i' = i / (f + i). With
        # q = (dL/da - dL/db h~) f' i': dL/dk_f = q (1 - f), dL/dk_i = -q (1 - i),
        # dL/dk_h = dL/db i' g'. (The floor on f, i is treated as the identity.)
        f, i, f_norm, i_norm, h_tilde = saved
        H = self.hidden_size
        grad_k = torch.empty_like(k)  # (..., 3H)
        q = (grad_a - grad_b * h_tilde).mul_(f_norm).mul_(i_norm)
        torch.mul(q, 1 - f, out=grad_k[..., :H])
        torch.mul(q, i - 1, out=grad_k[..., H:2 * H])
        torch.mul(grad_b, i_norm, out=grad_k[..., 2 * H:]).mul_(_g_prime(k[..., 2 * H:], h_tilde))
        return grad_k

    def log_coefficients(self, k: Tensor) -> tuple[Tensor, Tensor]:
        k_f, k_i, k_h = k.chunk(3, dim=-1)
        d = F.softplus(-k_i) - F.softplus(-k_f)  # log f - log i; log f' = log sigma(d)
        return -F.softplus(-d), -F.softplus(d) + _log_g(k_h)
