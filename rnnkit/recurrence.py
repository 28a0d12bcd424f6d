"""Running a cell over time: the one place that chooses how.

Three paths compute the same function:

* ``fused`` -- torch's own multi-step kernels (the ones behind torch.nn.RNN/GRU/LSTM, with
  packed sequences for variable lengths; cuDNN's on CUDA tensors). Chosen whenever the cell is a
  plain RNN/GRU/LSTM cell and nothing per step needs Python (no recurrent dropout in training).
  The weight list handed to the kernel is kept between calls (``_fused_weights``); on CUDA the
  weights are first laid out in one cuDNN buffer, as ``torch.nn.LSTM.flatten_parameters`` does,
  so that cuDNN neither warns nor copies them on every call.
* ``loop`` -- the cell's own ``recurrent_step`` in a time loop, with the input projection of all
  steps done in one GEMM before the loop. Used for layer-normalised cells, recurrent dropout and
  any cell without a fused kernel.
* ``compiled`` -- rnnkit's C++ time loop (``rnnkit._compiled``): GRU, LSTM, layer-norm GRU
  and layer-norm LSTM cells, forward and backward through time, both directions of a
  bidirectional layer at once, recurrent dropout included. **On by default** for
  float32/float64 CPU tensors, where it is faster: a GRU or LSTM layer takes it where the probe
  of this build (``rnnkit._probe``: the loop timed against torch's kernel on this CPU at three
  sizes, once per build) found it at least 0.97x torch's kernel around the layer's size
  (docs/benchmarks.md, section 2). The extension is built on first use (once per machine,
  -march and torch version, about 35 s; ``rnnkit build`` does it ahead of time). If it cannot
  be built, rnnkit warns once and the other paths run. ``set_compiled(False)`` or
  ``RNNKIT_COMPILED=0`` turns it off; while tracing, scripting, exporting or under
  ``torch.compile`` it is never taken (the fused and loop paths are plain torch ops those tools
  understand).

While ``torch.export`` (or the ONNX exporter on it) captures a graph, a fourth path, ``graph``,
runs the cell's ``recurrent_step`` inside one ``scan`` operator (ONNX ``Scan``): the same
equations as ``loop``, but with T left dynamic and lengths handled by masks instead of data-
dependent Python, so one exported graph takes any batch size, length and padding.

``choose_path`` says which one a configuration gets and why; layers report it through their
``path`` property. Lengths are handled here for every path: outputs are zero at padded steps,
the final state is the state at each sequence's own last step, and ``reverse=True`` runs each
sequence from its own last token back to its first (never from the padding).
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
from torch import Tensor, _VF
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence
from torch.utils.checkpoint import checkpoint

from . import _compiled, _probe
from ._checks import env_flag, exporting
from .cells import GRUCell, LSTMCell, RNNCell, State

__all__ = ["Path", "BiPaths", "choose_path", "bidirectional_paths", "run", "run_bidirectional", "run_layers",
           "reverse_padded", "length_mask", "set_compiled", "compiled_enabled", "use_compiled", "prepare",
           "release_scratch", "padding_fill", "zero_padding", "record_states"]


class Path(NamedTuple):
    """Which execution path a layer runs, and if not the fused one, why."""

    name: str  # "fused", "compiled", "loop", "graph" (here) or "scan" (rnnkit.scan)
    reason: str | None = None

    def __str__(self) -> str:
        return self.name if self.reason is None else f"{self.name} ({self.reason})"


_FUSED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _compiled_from_environment() -> bool:
    return env_flag("RNNKIT_COMPILED", True, on="the compiled path, the default",
                    off="torch's kernels and the loop")


_use_compiled = _compiled_from_environment()


def _records_gradients(cell, x: Tensor | None) -> bool:
    """Training as the loop itself tells it (_compiled.run): gradients recorded for x or any of
    the cell's parameters (a learned initial state with every weight frozen is not seen here:
    the probe's inference verdict then decides, and either path gives the same gradients)."""
    if not torch.is_grad_enabled():
        return False
    return (x is not None and x.requires_grad) or any(p.requires_grad for p in cell.parameters())


def set_compiled(enabled: bool = True) -> None:
    """Switch the compiled path on (the default) or off for the cells it supports, in this
    process. Off, GRU and LSTM layers run torch's fused kernels and layer-norm cells the
    Python loop."""
    global _use_compiled
    _use_compiled = bool(enabled)


def compiled_enabled() -> bool:
    """Whether the compiled path is on in this process (``RNNKIT_COMPILED``, ``set_compiled``)."""
    return _use_compiled


def use_compiled(enabled: bool = True) -> None:
    """The old name of ``set_compiled`` (a ``use_*`` name reads as a bool); kept for scripts
    that call it."""
    import warnings

    warnings.warn("rnnkit.recurrence.use_compiled is renamed set_compiled", DeprecationWarning, stacklevel=2)
    set_compiled(enabled)


_recording: list | None = None  # the list record_states() fills, while it is active


@contextlib.contextmanager
def record_states():
    """Within it, every recurrent layer runs on the Python loop and keeps each step's hidden
    state h_t (B, H) as a node of the graph whose gradient is retained, so that after
    ``loss.backward()`` each ``h_t.grad`` is dL/dh_t through all later steps (backpropagation
    through time). Yields a list of ``(cell, reverse, lengths, [h per step])``, one entry per
    direction run, in the order they ran. For inspection, not speed (rnnkit.inspect)."""
    global _recording
    previous, _recording = _recording, []
    try:
        yield _recording
    finally:
        _recording = previous


def prepare() -> None:
    """Build the compiled loop (once per machine) and run its probe (once per build and thread
    count) now, if the compiled path is on: both happen on first use otherwise, inside the
    first forward call that needs them (a benchmark or a demo would count them as its first
    step)."""
    if _use_compiled and _compiled.available() and _probe.enabled():
        _probe.verdicts()


def release_scratch() -> int:
    """Free the compiled loop's pooled memory: its scratch buffers, and the memory of its
    results (outputs, the states and activations saved for backward, input gradients) once
    torch has freed them, kept so that the next call does not fault in fresh pages (at most
    32 buffers, 768 MB in all). Returns the bytes freed."""
    return _compiled.release_scratch()


def _graph_capture() -> str | None:
    """Why the compiled loop cannot run now although it could run the cell: a graph is being
    captured or transformed (the C++ call is opaque to it), or autocast may hand it another
    dtype. None when it can."""
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return "TorchScript"
    if torch.onnx.is_in_onnx_export():
        return "ONNX export"
    if torch.compiler.is_compiling():
        return "torch.compile / torch.export"
    if _functorch_active():
        return "a torch.func transform (grad, vmap, jvp)"
    if torch.is_autocast_enabled("cpu"):
        return "CPU autocast"
    return None


def _functorch_active() -> bool:
    try:
        return bool(torch._C._are_functorch_transforms_active())
    except AttributeError:  # a torch without the query: assume none
        return False


def _compiled_path(cell, dropout: bool, x: Tensor | None = None, bidirectional: bool = False,
                   fill: float = 1.0) -> Path | None:
    if not _use_compiled or _compiled.supports(cell) is not None or _graph_capture() is not None:
        return None
    if x is not None and (x.dtype != cell.weight_hh.dtype or x.device != cell.weight_hh.device):
        return None  # torch's paths raise (or cast) as torch does
    if not _compiled.available():
        return None
    if dropout:
        return Path("compiled", "recurrent dropout needs the mask inside the step; C++ time loop")
    probed = _probe.ratio(cell, _records_gradients(cell, x), bidirectional, x)
    if probed is not None and probed[0] < _probe.THRESHOLD:
        return Path("fused", f"{probed[1]}: torch's kernel is faster here")
    if probed is not None and probed[0] * fill < _probe.THRESHOLD and _work_bound(cell, x):
        # The loop runs every row up to the longest sequence; torch's packed kernel only the
        # real steps. The probe timed full batches, so its ratio shrinks by the real share.
        return Path("fused", f"{probed[1]}; {fill:.0%} of this padded batch's steps are real, so "
                             f"about {probed[0] * fill:.2f}x: torch's packed kernel is faster here")
    if probed is None:
        return Path("compiled", "C++ time loop, faster than torch's kernel on CPU")
    if x is None:  # the measurements, and whether the batch's size decides
        return Path("compiled", f"C++ time loop: {probed[1]}")
    return Path("compiled", f"C++ time loop, {probed[0]:.2f}x torch's kernel around this layer's size on this "
                            f"CPU ({_compiled.isa()} build)")


def _work_bound(cell, x: Tensor | None) -> bool:
    """Whether a step of this layer is mostly arithmetic, so that padded rows cost what real
    ones do: at least the work of the probe's middle size. Below it a step's fixed costs (one
    kernel call per step on either path) dominate, and torch's packed kernel saves little by
    skipping rows (a UD tagger, character BiLSTM included, tagged one sentence at a time 1.2x
    faster on the loop than on torch's packed kernels; docs/benchmarks.md, section 5)."""
    if x is None:
        return False
    B, _, H = _probe.SIZES[len(_probe.SIZES) // 2]
    return _probe.work(x.shape[0], x.shape[-1], cell.hidden_size) >= _probe.work(B, H, H)


def choose_path(cell, *, recurrent_dropout: float = 0.0, training: bool = False,
                padded: bool = False, x: Tensor | None = None, bidirectional: bool = False,
                fill: float = 1.0) -> Path:
    """The path ``run`` takes for this cell and configuration (``x``: the input, whose dtype and
    device must be the weights' for the compiled loop, and whose size the probe's verdict
    follows; ``bidirectional``: the cell is one direction of a bidirectional layer, run
    together with the other; ``fill``: the share of real steps in a padded batch,
    sum(lengths) / (B x max(lengths)) (see ``padding_fill``): the compiled loop runs every row
    to the longest sequence and torch's packed kernel only the real steps, so the probe's ratio
    is taken times ``fill``; ``padded`` is kept for callers and changes nothing by itself)."""
    if exporting():
        return Path("graph", "torch.export: the time loop as one scan operator, T and lengths dynamic")
    if _recording is not None:
        return Path("loop", "record_states(): each step's state kept for inspection")
    compiled = _compiled_path(cell, recurrent_dropout > 0 and training, x, bidirectional, fill)
    if compiled is not None:
        return compiled
    if type(cell) not in (RNNCell, GRUCell, LSTMCell):
        return Path("loop", f"{type(cell).__name__} has no fused kernel")
    if recurrent_dropout > 0 and training:
        return Path("loop", "recurrent dropout needs one mask per sequence inside the step")
    if cell.weight_ih.dtype not in _FUSED_DTYPES:
        return Path("loop", f"dtype {cell.weight_ih.dtype} has no fused kernel")
    if cell.weight_ih.is_cuda:
        return Path("fused", "CUDA tensors: cuDNN's kernel (the compiled loop is CPU-only)")
    return Path("fused")


def length_mask(lengths: Tensor, T: int) -> Tensor:
    """(B,) lengths -> (B, T) bool, True at real (non-padded) steps."""
    return torch.arange(T, device=lengths.device) < lengths[:, None]


def zero_padding(x: Tensor, valid: Tensor) -> Tensor:
    """x (B, T, ...) with every step past its row's length set to 0 (``valid``: (B, T) or
    (B, T, 1), True at real steps). Whatever lies in the padding -- even NaN -- would otherwise
    reach the weight gradients (NaN * 0 is NaN) through an input projection of all steps, as
    it never does on torch's packed kernel."""
    if valid.dim() < x.dim():
        valid = valid.reshape(*valid.shape[:2], *([1] * (x.dim() - 2)))
    return x.masked_fill(~valid, 0.0)


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of x (B, T, ...) within its own length; padding stays in place.

    The backward direction is gathered per sequence, not flipped as a block: flipping would
    put the padding first and start the backward pass on it. Applying this twice is the
    identity, so the same call undoes it.
    """
    if lengths is None:
        return x.flip(1)
    B, T = x.shape[:2]
    t = torch.arange(T, device=x.device).expand(B, T)
    lens = lengths.to(x.device)[:, None]
    index = torch.where(t < lens, lens - 1 - t, t)  # (B, T)
    index = index.view(B, T, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


def padding_fill(lengths: Tensor | None, T: int) -> float:
    """The share of real steps in the box the compiled loop runs: sum(lengths) / (B x
    max(lengths)); 1.0 without lengths."""
    if lengths is None or exporting():
        return 1.0
    return float(lengths.sum()) / (lengths.shape[0] * max(int(lengths.max()), 1))


def _needs_lengths(lengths: Tensor | None, T: int) -> bool:
    return lengths is not None and (exporting() or bool((lengths < T).any()))


# ----------------------------------------------------------------------------- fused path

def _mode(cell) -> str:
    if isinstance(cell, LSTMCell):
        return "lstm"
    if isinstance(cell, GRUCell):
        return "gru"
    return "rnn_tanh" if cell.nonlinearity == "tanh" else "rnn_relu"


def _flat_weights(cell) -> list[Tensor]:
    if cell.bias:
        return [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
    return [cell.weight_ih, cell.weight_hh]


def _fused_weights(cells: list, x: Tensor, *, num_layers: int = 1, bidirectional: bool = False) -> list[Tensor]:
    """The weights of ``cells`` in the order torch's fused kernels take them, kept on the first
    cell between calls.

    The list holds the Parameters themselves, so the optimizer's in-place updates (which bump a
    parameter's version but keep its storage) are seen without rebuilding it; it is rebuilt when
    a parameter is replaced or moves (``.to()``, ``.double()``, a loaded state with
    ``assign=True``): the key is each parameter's identity and data pointer. On CUDA (cuDNN) the
    weights are first copied into one flat buffer and made views of it
    (``torch._cudnn_rnn_flatten_weight``, as ``nn.RNNBase.flatten_parameters``); afterwards the
    pointers are the buffer's, so the flattening happens once per placement, not per call."""
    params = [w for cell in cells for w in _flat_weights(cell)]
    try:
        key = tuple((id(p), p.data_ptr()) for p in params)
    except RuntimeError:  # torch.func's wrapped tensors have no storage: nothing to keep
        return params
    cache = cells[0].__dict__.setdefault("_fused_cache", {})
    group = tuple(id(cell) for cell in cells)
    kept = cache.get(group)
    if kept is not None and kept[0] == key:
        return kept[1]
    if x.is_cuda and torch.backends.cudnn.is_acceptable(x) and torch._use_cudnn_rnn_flatten_weight():
        from torch.backends.cudnn import rnn as cudnn_rnn

        first = cells[0]
        mode = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN_TANH", "rnn_relu": "RNN_RELU"}[_mode(first)]
        with torch.no_grad():
            torch._cudnn_rnn_flatten_weight(
                params, 4 if first.bias else 2, first.input_size, cudnn_rnn.get_cudnn_mode(mode),
                first.hidden_size, 0, num_layers, True, bidirectional)
        key = tuple((id(p), p.data_ptr()) for p in params)
    cache[group] = (key, params)
    return params


def _fused(cells: list, x: Tensor, states: list[State], lengths: Tensor | None,
           training: bool, *, num_layers: int = 1, dropout: float = 0.0) -> tuple[Tensor, list[State]]:
    """Run cells with torch's kernel: per layer one (uni) or two (forward, backward) cells.

    ``states`` holds one state per cell, each (B, H) or ((B, H), (B, H)). Returns the last
    layer's output (B, T, H) or (B, T, 2H) and the final states per cell, in the order of
    ``cells``. ``dropout`` acts between layers in training, as torch.nn.GRU's does.

    Under CPU autocast an LSTM runs in the weights' dtype with autocast off: autocast sends an
    unpacked LSTM to oneDNN in bfloat16 beside float32 weights, which oneDNN refuses on CPUs
    without bfloat16 instructions (torch.nn.LSTM fails the same way, torch 2.13; a packed one
    already runs in float32). GRU and RNN kernels keep autocast's own behaviour; the layers around
    the recurrence run in the autocast dtype either way.
    """
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and isinstance(cells[0], LSTMCell):
        dtype = cells[0].weight_ih.dtype
        states = [tuple(t.to(dtype) for t in s) if isinstance(s, tuple) else s.to(dtype) for s in states]
        with torch.autocast("cpu", enabled=False):
            return _fused(cells, x.to(dtype), states, lengths, training, num_layers=num_layers, dropout=dropout)
    mode, bidirectional = _mode(cells[0]), len(cells) == 2 * num_layers
    weights = _fused_weights(cells, x, num_layers=num_layers, bidirectional=bidirectional)
    lstm = mode == "lstm"
    if lstm:
        hx = (torch.stack([s[0] for s in states]), torch.stack([s[1] for s in states]))
    else:
        hx = torch.stack(states)  # (layers * directions, B, H)
    B, T = x.shape[:2]
    packed = _needs_lengths(lengths, T)
    if packed:
        seq = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        order = seq.sorted_indices.to(x.device)
        hx = (hx[0][:, order], hx[1][:, order]) if lstm else hx[:, order]
        args = (seq.data, seq.batch_sizes, hx, weights, cells[0].bias, num_layers, dropout, training,
                bidirectional)
    else:
        args = (x, hx, weights, cells[0].bias, num_layers, dropout, training, bidirectional, True)
    if lstm:
        out, h, c = _VF.lstm(*args)
        final = (h, c)
    else:
        out, h = getattr(_VF, mode)(*args)
        final = (h,)
    if packed:
        unorder = seq.unsorted_indices.to(x.device)
        final = tuple(f[:, unorder] for f in final)
        out = PackedSequence(out, seq.batch_sizes, seq.sorted_indices, seq.unsorted_indices)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
    per_cell = [(final[0][d], final[1][d]) if lstm else final[0][d] for d in range(len(cells))]
    return out, per_cell


# ------------------------------------------------------------------------------ loop path

def _select(keep: Tensor, new: State, old: State) -> State:
    if isinstance(new, tuple):
        return tuple(torch.where(keep, n, o) for n, o in zip(new, old))
    return torch.where(keep, new, old)


def _dropout_mask(state: State, rate: float) -> Tensor:
    # Variational dropout (Gal & Ghahramani 2016): one mask per sequence for all steps.
    keep = 1.0 - rate
    h0 = state[0] if isinstance(state, tuple) else state
    return torch.bernoulli(h0.new_full(h0.shape, keep)) / keep


def _loop(cell, x: Tensor, state: State, lengths: Tensor | None, *, reverse: bool,
          mask: Tensor | None = None) -> tuple[Tensor, State]:
    B, T = x.shape[:2]
    if reverse:
        x = reverse_padded(x, lengths)
    padded = _needs_lengths(lengths, T)
    steps = int(lengths.max()) if padded else T
    valid = length_mask(lengths.to(x.device), T)[..., None] if padded else None  # (B, T, 1)
    if padded:
        x = zero_padding(x, valid)
    xi = cell.input_projection(x)  # (B, T, G*H): all input GEMMs at once
    outputs = []
    for t in range(steps):
        new = cell.recurrent_step(xi[:, t], state, mask)
        # A finished sequence keeps its state, so the final state is the one at its own end.
        state = _select(valid[:, t], new, state) if padded else new
        h = state[0] if isinstance(state, tuple) else state
        if _recording is not None and h.requires_grad:
            h.retain_grad()
        outputs.append(h)
    if _recording is not None:
        _recording.append((cell, reverse, lengths, list(outputs)))
    out = torch.stack(outputs, dim=1)  # (B, steps, H)
    if steps < T:
        out = torch.cat([out, out.new_zeros(B, T - steps, out.shape[-1])], dim=1)
    if padded:
        out = out * valid
    if reverse:
        out = reverse_padded(out, lengths)
    return out, state


# ----------------------------------------------------------------------------- graph path

def _graph(cell, x: Tensor, state: State, lengths: Tensor | None, *, reverse: bool,
           mask: Tensor | None) -> tuple[Tensor, State]:
    """``_loop`` as one ``scan`` operator: an exported graph loops over whatever T it is given.

    Every row runs all T steps; at a padded step the state is kept (a select, not Python), so
    the final state is the one at the row's own end, as on the other paths.
    """
    from torch._higher_order_ops.scan import scan

    B, T = x.shape[:2]
    if reverse:
        x = reverse_padded(x, lengths)
    lengths = lengths if lengths is not None else torch.full((B,), T, dtype=torch.long, device=x.device)
    valid = length_mask(lengths.to(x.device), T)[..., None]  # (B, T, 1)
    xi = cell.input_projection(zero_padding(x, valid))  # (B, T, G*H)

    def step(carry, inputs):
        xi_t, keep = inputs  # (B, G*H), (B, 1)
        new = _select(keep, cell.recurrent_step(xi_t, carry, mask), carry)
        h = new[0] if isinstance(new, tuple) else new
        return new, h.clone()  # scan may not return an alias of its carry

    final, out = scan(step, state, (xi.transpose(0, 1), valid.transpose(0, 1)))
    out = out.transpose(0, 1) * valid  # (B, T, H), zeros at padding
    if reverse:
        out = reverse_padded(out, lengths)
    return out, final


# ------------------------------------------------------------------------------ the API

def run(cell, x: Tensor, state: State | None = None, lengths: Tensor | None = None, *,
        reverse: bool = False, recurrent_dropout: float = 0.0, training: bool = False,
        recompute_chunk: int | None = None) -> tuple[Tensor, State]:
    """Run ``cell`` over x (B, T, D) -> (output (B, T, H), final state).

    ``lengths`` (B,) int64, each in [1, T], or None for full-length sequences; ``state`` the
    initial state or None for zeros; ``reverse`` runs each sequence from its last real step;
    ``recompute_chunk`` bounds memory when gradients are recorded (see ``_run_chunked``).
    Inputs are assumed validated by the calling layer.
    """
    if state is None:
        state = cell.initial_state(x.shape[0], x)
    mask = _dropout_mask(state, recurrent_dropout) if recurrent_dropout > 0 and training else None
    if _chunked(recompute_chunk, x):
        return _run_chunked(cell, x, state, lengths, reverse=reverse, mask=mask, training=training,
                            chunk=recompute_chunk)
    return _run(cell, x, state, lengths, reverse=reverse, mask=mask, training=training)


def _chunked(recompute_chunk: int | None, x: Tensor) -> bool:
    return (bool(recompute_chunk) and torch.is_grad_enabled() and not exporting() and _recording is None
            and x.shape[1] > recompute_chunk)


def _run(cell, x: Tensor, state: State, lengths: Tensor | None, *, reverse: bool,
         mask: Tensor | None, training: bool) -> tuple[Tensor, State]:
    needs_lengths = _needs_lengths(lengths, x.shape[1])
    # A mask exists only for recurrent dropout in training: that is all choose_path asks.
    path = choose_path(cell, recurrent_dropout=float(mask is not None), training=training,
                       padded=needs_lengths, x=x, fill=padding_fill(lengths, x.shape[1]) if needs_lengths else 1.0)
    if path.name == "compiled":
        padded = lengths if needs_lengths else None
        out, (final,) = _compiled.run([cell], x, [state], padded, reverse=[reverse], masks=[mask])
        return out, final
    if path.name == "graph":
        return _graph(cell, x, state, lengths, reverse=reverse, mask=mask)
    if path.name == "fused":
        if reverse:
            out, (final,) = _fused([cell], reverse_padded(x, lengths), [state], lengths, training)
            return reverse_padded(out, lengths), final
        out, (final,) = _fused([cell], x, [state], lengths, training)
        return out, final
    return _loop(cell, x, state, lengths, reverse=reverse, mask=mask)


def _run_chunked(cell, x: Tensor, state: State, lengths: Tensor | None, *, reverse: bool,
                 mask: Tensor | None, training: bool, chunk: int) -> tuple[Tensor, State]:
    """``_run`` over consecutive chunks of ``chunk`` steps, each under activation checkpointing
    (Chen et al. 2016): backward keeps the inputs and the state at each chunk boundary and
    recomputes one chunk's activations at a time, so activation memory grows with T/chunk
    states plus one chunk instead of with T. Same outputs and gradients as one pass; about one
    extra forward pass of compute. Rows whose sequence ended before a chunk sit it out."""
    B, T = x.shape[:2]
    if reverse:
        x = reverse_padded(x, lengths)  # then every chunk runs forward in time
    lstm = isinstance(state, tuple)

    def piece(xc, s, lc, m):
        return _run(cell, xc, s, lc, reverse=False, mask=m, training=training)

    outs = []
    for start in range(0, T, chunk):
        xc = x[:, start:start + chunk]
        n = xc.shape[1]
        lc = None if lengths is None else (lengths - start).clamp(0, n)
        if lc is None or bool((lc > 0).all()):
            out, state = checkpoint(piece, xc, state, lc, mask, use_reentrant=False)
            outs.append(out)
            continue
        rows = (lc > 0).nonzero().squeeze(1)  # sequences still running in this chunk
        out = xc.new_zeros(B, n, cell.hidden_size)
        if rows.numel():
            def take(t: Tensor) -> Tensor:
                return t.index_select(0, rows)

            sub_state = tuple(map(take, state)) if lstm else take(state)
            sub_mask = take(mask) if mask is not None else None
            sub_out, sub_final = checkpoint(piece, take(xc), sub_state, take(lc), sub_mask,
                                            use_reentrant=False)
            out = out.index_copy(0, rows, sub_out)
            state = (tuple(t.index_copy(0, rows, u) for t, u in zip(state, sub_final)) if lstm
                     else state.index_copy(0, rows, sub_final))
        outs.append(out)
    out = torch.cat(outs, dim=1)
    return (reverse_padded(out, lengths) if reverse else out), state


def _same_kernel(a, b) -> bool:
    return (type(a) is type(b) and a.hidden_size == b.hidden_size and a.bias == b.bias
            and getattr(a, "nonlinearity", None) == getattr(b, "nonlinearity", None)
            and a.weight_ih.dtype == b.weight_ih.dtype)


def run_layers(cells: list[list], x: Tensor, states: list[State | None], lengths: Tensor | None, *,
               dropout: float, recurrent_dropout: list[float], training: bool):
    """Several layers (each a list of one or two direction cells) in one torch kernel call, with
    ``dropout`` between them: the batch is packed once for all layers. Returns (output, final
    state per cell) or None when they cannot share one call (another path, or different kernels
    or sizes); the caller then runs them layer by layer."""
    flat = [c for layer in cells for c in layer]
    padded = _needs_lengths(lengths, x.shape[1])
    bidirectional = [len(layer) == 2 for layer in cells for _ in layer]
    fill = padding_fill(lengths, x.shape[1]) if padded else 1.0
    if any(choose_path(c, recurrent_dropout=p, training=training, padded=padded, x=x, bidirectional=bi,
                       fill=fill).name
           != "fused" for c, p, bi in zip(flat, recurrent_dropout, bidirectional)):
        return None
    if len({len(layer) for layer in cells}) != 1 or not all(_same_kernel(flat[0], c) for c in flat[1:]):
        return None
    B = x.shape[0]
    states = [s if s is not None else c.initial_state(B, x) for c, s in zip(flat, states)]
    return _fused(flat, x, states, lengths, training, num_layers=len(cells), dropout=dropout)


class BiPaths(NamedTuple):
    """The paths of a bidirectional layer's two directions, and whether one call runs both."""

    forward: Path
    backward: Path
    together: bool


def bidirectional_paths(fw_cell, bw_cell, *, recurrent_dropout: tuple[float, float] = (0.0, 0.0),
                        training: bool = False, padded: bool = False, x: Tensor | None = None,
                        recompute_chunk: tuple[int | None, int | None] = (None, None),
                        fill: float = 1.0) -> BiPaths:
    """The paths ``run_bidirectional`` takes for the two directions (``fill``: as ``choose_path``'s).
    One call runs both when
    they choose the same path and can share it: one compiled call (the same cell type and
    dtype) or one torch call (the same kernel and sizes). Otherwise -- and when
    ``recompute_chunk`` applies, which runs the directions one at a time -- each direction runs
    on its own and chooses its path as a single direction. Without ``x``, chunking is taken to
    apply whenever a chunk size is set and gradients are being recorded."""
    if x is not None:
        chunked = any(_chunked(k, x) for k in recompute_chunk)
    else:
        chunked = any(recompute_chunk) and torch.is_grad_enabled()
    cells = (fw_cell, bw_cell)
    if not chunked:
        fw, bw = (choose_path(c, recurrent_dropout=p, training=training, padded=padded, x=x, bidirectional=True,
                              fill=fill)
                  for c, p in zip(cells, recurrent_dropout))
        if fw.name == bw.name == "compiled" and type(fw_cell) is type(bw_cell) and (
                fw_cell.weight_hh.dtype == bw_cell.weight_hh.dtype):
            return BiPaths(fw, bw, True)
        if fw.name == bw.name == "fused" and _same_kernel(fw_cell, bw_cell):
            return BiPaths(fw, bw, True)
    fw, bw = (choose_path(c, recurrent_dropout=p, training=training, padded=padded, x=x, fill=fill)
              for c, p in zip(cells, recurrent_dropout))
    return BiPaths(fw, bw, False)


def run_bidirectional(fw_cell, bw_cell, x: Tensor, states: tuple[State | None, State | None],
                      lengths: Tensor | None, *, recurrent_dropout: tuple[float, float] = (0.0, 0.0),
                      training: bool = False,
                      recompute_chunk: tuple[int | None, int | None] = (None, None)) -> tuple[Tensor, State, State]:
    """Both directions over x -> (out (B, T, Hf+Hb), forward final, backward final).

    The output holds the forward direction's Hf features, then the backward's Hb: the concat
    merge as it comes, and split views for the other merges. When both cells take the fused
    path with the same kernel, one bidirectional torch call runs them (as
    torch.nn.GRU(bidirectional=True) does), and the compiled path runs both in one call, one
    direction per core; otherwise each direction runs on its own.
    ``recurrent_dropout`` and ``recompute_chunk`` hold one value per direction; chunking runs
    the directions one by one.
    """
    B = x.shape[0]
    fw_state = states[0] if states[0] is not None else fw_cell.initial_state(B, x)
    bw_state = states[1] if states[1] is not None else bw_cell.initial_state(B, x)
    needs_lengths = _needs_lengths(lengths, x.shape[1])
    paths = bidirectional_paths(fw_cell, bw_cell, recurrent_dropout=recurrent_dropout, training=training,
                                padded=needs_lengths, x=x, recompute_chunk=recompute_chunk,
                                fill=padding_fill(lengths, x.shape[1]) if needs_lengths else 1.0)
    names = {paths.forward.name, paths.backward.name} if paths.together else set()
    if names == {"compiled"}:
        # One C++ call runs both directions, each on its own core.
        masks = [_dropout_mask(s, p) if p > 0 and training else None
                 for s, p in zip((fw_state, bw_state), recurrent_dropout)]
        padded = lengths if needs_lengths else None
        out, (fw_final, bw_final) = _compiled.run([fw_cell, bw_cell], x, [fw_state, bw_state], padded,
                                                  reverse=[False, True], masks=masks)
        return out, fw_final, bw_final
    if names == {"fused"}:
        out, (fw_final, bw_final) = _fused([fw_cell, bw_cell], x, [fw_state, bw_state], lengths, training)
        return out, fw_final, bw_final
    # Each direction on its own, as a single direction (and chunked if asked).
    fw_out, fw_final = run(fw_cell, x, fw_state, lengths, recurrent_dropout=recurrent_dropout[0],
                           training=training, recompute_chunk=recompute_chunk[0])
    bw_out, bw_final = run(bw_cell, x, bw_state, lengths, reverse=True, recurrent_dropout=recurrent_dropout[1],
                           training=training, recompute_chunk=recompute_chunk[1])
    return torch.cat([fw_out, bw_out], dim=-1), fw_final, bw_final
