"""The compiled time loop: GRU, LSTM, layer-norm GRU and layer-norm LSTM over time in C++
(rnnkit/csrc/: recurrence.cpp, the entry points, and one header per concept).

One call runs one or both directions of a layer, each on its own core:

    out, finals = _compiled.run([fw_cell, bw_cell], x, [fw_state, bw_state], lengths,
                               reverse=[False, True])   # out (B, T, Hf+Hb)

Everything of a direction runs in C++ (``_Recurrence``), the two directions of a layer
concurrently on torch's own intra-op threads: the input projection ``xi = W_ih x + b_ih`` one
product per chunk of steps (256 rows of steps x batch), just before those steps, then per step
one small product ``(m * h_prev) W_hh^T`` and the gate arithmetic in one fused pass; backward
through time likewise, with each chunk's share of the weight gradients and its rows of the
input gradient right after its steps. A layer of one direction uses torch's second thread too:
with an even batch of 16 rows or more, each thread runs half of the batch (its rows are
independent recurrences); otherwise the second thread projects the next chunk while the steps
of this one run, and takes half of backward's products. No
torch op runs inside a direction, so it never waits on torch's dispatch. Results take their
memory from a pool of the loop's own and give it back when torch frees them
(``release_scratch`` empties it). For ``LayerNormGRUCell`` and
``LayerNormLSTMCell`` the loop also normalises, per gate, each row's ``W_ih x`` as it reads it
and ``W_hh h`` at each step, and for the LSTM the cell state before its tanh. The math is that
of ``cells.GRUCell`` / ``LSTMCell`` / ``LayerNormGRUCell`` / ``LayerNormLSTMCell``;
tests/test_compiled.py checks outputs and gradients against those cells.

The extension is built with torch.utils.cpp_extension on first use (ninja, a C++ compiler) into
torch's extension cache (``TORCH_EXTENSIONS_DIR``, default ~/.cache/torch_extensions) with
``-march=native``, or the ``-march`` that ``RNNKIT_MARCH`` names (``x86-64-v3`` for AVX2,
``x86-64-v2``, ``armv8-a``: how one machine measures what users of older CPUs get). Its GEMM
tile is explicit SIMD for the ISA it is built for (csrc/simd.h; ``isa()`` names it). The build's
name is hashed from every file of csrc/, the flags, the torch installation and the CPU
(``_build_name``): once per source, -march, environment and kind of CPU. A build that takes
more than a second says so on stderr, and how long it took; ``rnnkit build`` runs it ahead of
time. A build lock older than ten minutes (a build that was killed) is removed with a warning.
If it cannot be built (no compiler, a -march the compiler does not know), ``available()`` is
False, rnnkit warns once and runs the pure paths. Layers use it by default where rnnkit/_probe.py
measured it faster than torch's kernel on this CPU (``recurrence.set_compiled``;
``RNNKIT_COMPILED=0`` turns it off, and then nothing is built).

Gradients: first order only. A second derivative through the loop (``create_graph=True``)
raises; turn the path off (``recurrence.set_compiled(False)``) for that.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import sys
import threading
import time
import warnings

import torch
from torch import Tensor

from ._checks import env_flag
from ._log import get_logger
from .cells import GRUCell, LayerNormGRUCell, LayerNormLSTMCell, LSTMCell

__all__ = ["available", "error", "isa", "supports", "run", "release_scratch"]

_CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
_SOURCE = os.path.join(_CSRC, "recurrence.cpp")  # the one translation unit; it includes csrc/*.h


def _march() -> str:
    """The -march the loop is built for: ``RNNKIT_MARCH`` (e.g. ``x86-64-v3`` for AVX2,
    ``x86-64-v2``, ``x86-64-v4`` for AVX-512, ``armv8-a``), ``native`` by default. Building for
    an older ISA than the machine's is how one machine measures what users of other CPUs get."""
    value = os.environ.get("RNNKIT_MARCH", "native").strip() or "native"
    if not all(c.isalnum() or c in "-_.+" for c in value):
        raise ValueError(f"RNNKIT_MARCH={value!r}: expected a -march value such as native, x86-64-v3 "
                         "(AVX2), x86-64-v2 or armv8-a")
    return value


def _flags() -> list[str]:
    # RNNKIT_TEST_HOOKS=1 (tests/conftest.py sets it) adds the counters the thread tests read;
    # the build users run has none.
    hooks = ["-DRNNKIT_TEST_HOOKS"] if env_flag("RNNKIT_TEST_HOOKS", False, on="the tests' counters",
                                                 off="none, as users build it") else []
    return ["-O3", f"-march={_march()}", "-fno-math-errno", "-fno-trapping-math", *hooks]
# The directions run on torch's own intra-op threads (at::parallel_for). With torch's OpenMP
# backend that is a `#pragma omp parallel` in an inline template of ATen's headers, i.e. in this
# extension's code: without -fopenmp the pragma is ignored and both directions run one after
# the other on one thread. The loader resolves libgomp.so.1 to the copy torch already loaded,
# so there is one OpenMP runtime and one thread pool. Other backends need no flag.
_OPENMP = ["-fopenmp"] if "parallel backend: OpenMP" in torch.__config__.parallel_info() else []
_lock = threading.Lock()
_log = get_logger(__name__)
_ext = None
_error: str | None = None


def _load():
    global _ext, _error
    if _ext is not None or _error is not None:
        return _ext
    with _lock:
        if _ext is not None or _error is not None:
            return _ext
        try:
            from torch.utils.cpp_extension import load

            _ninja_on_path()
            _compiler_on_path()
            _ext = _build_with_or_without_openmp(load)
        except Exception as exc:  # no compiler, no ninja, a -march it does not know, a bad RNNKIT_MARCH, ...
            _error = _reason(exc)
            warnings.warn(f"rnnkit: the compiled recurrence could not be built ({_error}); "
                          "GRU/LSTM layers run on the pure PyTorch paths instead", RuntimeWarning,
                          stacklevel=4)
    return _ext


def _build_with_or_without_openmp(load):
    """A compiler that rejects -fopenmp (one without OpenMP support) still gets the loop, built
    without it: the two directions of a bidirectional layer then run one after the other,
    which a warning says."""
    global _OPENMP
    try:
        return _build(load)
    except Exception as exc:
        # Only a failure that is about OpenMP (the flag rejected, omp.h or libgomp missing) is
        # worth a second build: any other would fail again, twice as slowly.
        if not _OPENMP or not re.search(r"openmp|omp\.h|gomp|libomp", str(exc), re.IGNORECASE):
            raise
        first = _reason(exc)
        _OPENMP = []
        module = _build(load)
        warnings.warn(f"rnnkit: the compiled recurrence was built without -fopenmp ({first}); the two "
                      "directions of a bidirectional layer run one after the other", RuntimeWarning,
                      stacklevel=5)
        return module


def _reason(exc: Exception) -> str:
    """The useful line of a failed build: the compiler's first error (``file:line: error: ...``)
    or a missing tool, rather than torch's "Error building extension" or ninja's closing
    "build stopped"."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for wanted in ("error:", "not found", "no such file"):
        for line in lines:
            if wanted in line.lower():
                return f"{type(exc).__name__}: {line}"
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"


def _build_name() -> str:
    """The extension's name in torch's cache: one per source, flags (``RNNKIT_MARCH`` among
    them), torch installation and CPU.

    torch keys its build folder on the name only, and the binary is built for -march=native by
    default: a cache shared between machines (an NFS home, a Docker image), between two rnnkit
    checkouts or between two environments must not hand one of them the other's binary.
    """
    digest = hashlib.sha256()
    for name in sorted(os.listdir(_CSRC)):
        if name.endswith((".cpp", ".h")):
            with open(os.path.join(_CSRC, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    # torch's build.ninja names the sources by path: two checkouts of the same source (git
    # worktrees, a copy) sharing one name would each find the other's build.ninja and rebuild
    digest.update(os.path.abspath(_CSRC).encode())
    digest.update(" ".join(_flags() + _OPENMP).encode())
    digest.update(torch.__version__.encode())
    # torch's build folder records the include paths of the environment that built it: two
    # virtual environments sharing the cache would rebuild each other's binary in turn.
    digest.update(os.path.dirname(torch.__file__).encode())
    digest.update(platform.machine().encode())
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            cpu = [line for line in f if line.startswith(("model name", "flags"))][:2]
        digest.update("".join(cpu).encode())
    except OSError:
        digest.update(platform.processor().encode())
    return f"rnnkit_recurrence_{digest.hexdigest()[:12]}"


_STALE_LOCK_SECONDS = 600


def _clear_stale_lock(name: str) -> None:
    # torch's build lock has no timeout: a build killed half-way (a job's time limit, Ctrl-C)
    # leaves it behind and every later run would wait forever. No build takes ten minutes.
    try:  # a private helper of torch's: if a torch version lacks it, there is no lock to clear
        from torch.utils.cpp_extension import _get_build_directory

        lock = os.path.join(_get_build_directory(name, verbose=False), "lock")
    except (ImportError, AttributeError, TypeError, OSError):
        return
    try:
        age = time.time() - os.path.getmtime(lock)
    except OSError:
        return
    if age > _STALE_LOCK_SECONDS:
        warnings.warn(f"rnnkit: removing a build lock left {age / 60:.0f} min ago by a process that "
                      f"did not finish: {lock}", RuntimeWarning, stacklevel=5)
        try:
            os.remove(lock)
        except OSError:
            pass


def _build(load):
    # A cached build loads in well under a second; a real one compiles for ~20 s (minutes on a
    # busy machine), which a user deserves to be told about instead of a silent pause.
    name = _build_name()
    _clear_stale_lock(name)
    start, shown = time.monotonic(), threading.Event()

    def tell():
        shown.set()
        _log.info("rnnkit: building the compiled recurrence for this CPU and torch version (C++, once; "
                  "or waiting for another process that builds it)...")

    notice = threading.Timer(1.0, tell)
    notice.daemon = True
    notice.start()
    ok = False
    try:
        module = load(name=name, sources=[_SOURCE], extra_cflags=_flags() + _OPENMP,
                      extra_ldflags=_OPENMP, verbose=False)
        ok = True
        return module
    finally:
        notice.cancel()
        if shown.is_set():
            outcome = "ready" if ok else "failed"
            _log.info("rnnkit: compiled recurrence %s (%.0f s)", outcome, time.monotonic() - start)


def _compiler_on_path() -> None:
    """Fail at once, in one line, when there is no C++ compiler: torch's own check would first
    print two long warnings about the compiler's version and ABI."""
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler.split()[0] if compiler.strip() else "c++") is None:
        where = "$CXX" if "CXX" in os.environ else "c++"
        raise RuntimeError(f"no C++ compiler: {where} = {compiler!r} is not on PATH (install g++ or "
                           "clang++, or set CXX)")


def _ninja_on_path() -> None:
    # torch runs `ninja` from PATH; a venv used without activating it (.venv/bin/python -m
    # pytest, as CI does) has the pip-installed ninja only in its own bin directory.
    if shutil.which("ninja") is not None:
        return
    try:
        import ninja

        bindir = ninja.BIN_DIR
    except (ImportError, AttributeError):
        bindir = os.path.dirname(sys.executable)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def release_scratch() -> int:
    """Free the memory the loop keeps between calls (its scratch, and its freed results: at
    most 32 buffers, none above 256 MB, 768 MB in all); returns how many bytes that was. The
    next call allocates anew."""
    return int(_ext.release_scratch()) if _ext is not None else 0


def set_projection_chunk_rows(rows: int) -> int:
    """Set how many rows (steps x batch) of the input projection are taken at a time: forward
    projects a chunk just before its steps, backward takes a chunk's share of the weight
    gradients and its rows of dx right after them (256 by default, measured in
    docs/benchmarks.md); returns the previous value. For tests and benchmarks: outputs and dx
    do not depend on it, weight gradients only by rounding (they are summed chunk by chunk).
    """
    return _set_rows("set_projection_chunk_rows", rows)


def set_batch_half_rows(rows: int) -> int:
    """Set the smallest half of a batch that a layer of one direction is split into: a batch of
    an even number of rows, at least twice this many, runs as two halves, one per thread (8 by
    default, at least one register tile of the GEMM on every ISA; docs/benchmarks.md); returns
    the previous value.
    For tests and benchmarks: results do not depend on it, weight gradients only by rounding
    (the halves' shares are summed)."""
    return _set_rows("set_batch_half_rows", rows)


def _set_rows(setter: str, rows: int) -> int:
    if not available():
        raise RuntimeError(f"the compiled recurrence is not available: {_error}")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ValueError(f"rows must be an int >= 1, got {rows!r}")
    return int(getattr(_ext, setter)(rows))


def available() -> bool:
    """True when the extension is built (building it now if it never was)."""
    return _load() is not None


def isa() -> str | None:
    """The instruction set the loop's GEMM kernel was built for (csrc/simd.h): ``avx512``,
    ``avx2``, ``neon``, ``sse2`` or ``scalar``; None when it is not built."""
    return str(_ext.isa()) if available() else None


def error() -> str | None:
    """Why the extension is not available, or None."""
    _load()
    return _error


def supports(cell) -> str | None:
    """None if the compiled loop can run this cell, else the reason it cannot."""
    if type(cell) not in (GRUCell, LSTMCell, LayerNormGRUCell, LayerNormLSTMCell):
        return f"{type(cell).__name__} has no compiled loop"
    if cell.weight_hh.dtype not in (torch.float32, torch.float64):
        return f"dtype {cell.weight_hh.dtype} has no compiled loop"
    if cell.weight_hh.device.type != "cpu":
        return "the compiled loop is CPU-only"
    return None


def _empty(like: Tensor) -> Tensor:
    return like.new_empty(0)


# The kinds of recurrence.cpp.
_GRU, _LSTM, _LN_GRU, _LN_LSTM = 0, 1, 2, 3


def _unpack_forward(res: list, n: int, lstm: bool) -> tuple[Tensor, list, list]:
    """The extension's forward result -> out, the final states flat (h or h, c per direction)
    and what backward needs: the directions' S, then their C (LSTM kinds), then their A."""
    out, rest = res[0], res[1:]
    per = 5 if lstm else 3  # hN, [cN], S, [C], A
    finals, S, C, A = [], [], [], []
    for k in range(n):
        r = rest[k * per:(k + 1) * per]
        finals += r[:2] if lstm else r[:1]
        S.append(r[2] if lstm else r[1])
        if lstm:
            C.append(r[3])
        A.append(r[-1])
    return out, finals, S + C + A


def _final_grads(dfinals: tuple, n: int, lstm: bool, like: Tensor) -> tuple[list, list]:
    """Gradients of the flat final states -> dhN, dcN lists (empty tensors where none came)."""
    step = 2 if lstm else 1
    some = [d if d is not None else _empty(like) for d in dfinals]
    return [some[k * step] for k in range(n)], [some[k * step + 1] for k in range(n)] if lstm else []


def _first_order_only() -> None:
    # Backward runs with grad mode on exactly when a graph of the gradient is asked for
    # (create_graph=True: hessians, gradient penalties); the C++ backward builds none, so the
    # second derivative would be silently zero.
    if torch.is_grad_enabled():
        raise RuntimeError(
            "rnnkit's compiled recurrence computes first-order gradients only, and this backward "
            "was asked for a graph of them (create_graph=True: a second derivative, hessian or "
            "gradient penalty). Run the model with rnnkit.recurrence.set_compiled(False) (or "
            "RNNKIT_COMPILED=0) for that: torch's kernels and the Python loop are twice "
            "differentiable.")


_SLOTS = 9  # per direction: W_ih, b_ih, h0, c0, W_hh, b_hh, gain, shift, mask


class _Recurrence(torch.autograd.Function):
    """One or more directions of one kind of cell over x (B, T, D), input projection included.
    Per direction nine inputs: W_ih (G*H, D), b_ih, h0 (B, H), c0 (B, H), W_hh (G*H, H), b_hh,
    gain, shift, mask (B, H); each optional one (b_ih, b_hh, c0 for the GRU kinds, mask) an
    empty tensor when absent. gain and shift are the layer-norm kinds' (empty otherwise): all
    the cell's layer norms as rows -- LN_hh's G, LN_c's one (LN_LSTM), then LN_ih's G: (6, H)
    for LayerNormGRUCell, (9, H) for LayerNormLSTMCell."""

    @staticmethod
    def forward(ctx, kind: int, train: bool, reverse: tuple, lengths: Tensor, eps: float, x: Tensor,
                *flat: Tensor):
        wi, bi, h0, c0, w, b, gain, shift, m = (list(flat[k::_SLOTS]) for k in range(_SLOTS))
        lstm, ln = kind in (_LSTM, _LN_LSTM), kind in (_LN_GRU, _LN_LSTM)
        res = _ext.forward(kind, train, lengths, x, wi, bi, h0, c0 if lstm else [], w, b, m,
                           list(reverse), gain if ln else [], shift if ln else [], eps)
        out, finals, saved = _unpack_forward(res, len(h0), lstm)
        ctx.kind, ctx.reverse, ctx.n, ctx.lstm, ctx.ln = kind, list(reverse), len(h0), lstm, ln
        # The loop's states and activations go through save_for_backward too, not onto ctx:
        # only then do saved-tensor hooks see them -- activation checkpointing
        # (recompute_chunk) drops them after forward and recomputes them for backward.
        ctx.save_for_backward(lengths, x, *flat, *saved)
        return (out, *finals)

    @staticmethod
    def backward(ctx, dout: Tensor, *dfinals: Tensor):
        _first_order_only()
        n, lstm, ln = ctx.n, ctx.lstm, ctx.ln
        lengths, x, *rest = ctx.saved_tensors
        flat, rest = rest[:_SLOTS * n], rest[_SLOTS * n:]
        S, C, A = rest[:n], rest[n:2 * n] if lstm else [], rest[-n:]
        wi, bi, h0, c0, w, b, gain, shift, m = (list(flat[k::_SLOTS]) for k in range(_SLOTS))
        if dout is None:
            dout = x.new_zeros(x.shape[0], x.shape[1], sum(t.shape[1] for t in w))
        dhN, dcN = _final_grads(dfinals, n, lstm, x)
        res = _ext.backward(ctx.kind, lengths, dout, x, wi, bi, h0, c0 if lstm else [], w, b, m,
                            ctx.reverse, S, C, A, dhN, dcN, gain if ln else [])
        # per direction: dh0, [dc0], dW_hh, db_hh, [d gain, d shift], dW_ih, db_ih; then dx,
        # summed over the directions
        per = 5 + lstm + 2 * ln
        grads = []
        for k in range(n):
            r = iter(res[k * per:(k + 1) * per])
            dh0 = next(r)
            dc0 = next(r) if lstm else None
            dw, db = next(r), next(r)
            dgain, dshift = (next(r), next(r)) if ln else (None, None)
            dwi, dbi = next(r), next(r)
            grads += [dwi, dbi if bi[k].numel() else None, dh0, dc0, dw, db if b[k].numel() else None,
                      dgain, dshift, None]
        return (None, None, None, None, None, res[-1], *grads)


def _states(finals: list, n: int, lstm: bool) -> list:
    return [(finals[2 * k], finals[2 * k + 1]) for k in range(n)] if lstm else finals


def run(cells: list, x: Tensor, states: list, lengths: Tensor | None, *, reverse: list[bool],
        masks: list[Tensor | None] | None = None) -> tuple[Tensor, list]:
    """Run each cell over x (B, T, D) in its direction; all cells of one type.

    Returns the outputs side by side (B, T, sum of H), zero at padded steps, and the final
    state of each cell. ``lengths`` (B,) int64 or None; ``masks`` one recurrent-dropout mask
    (B, H) per cell or None.
    """
    if _load() is None:
        raise RuntimeError(f"the compiled recurrence is not available: {_error}")
    masks = masks or [None] * len(cells)
    if lengths is not None:
        # The loop projects every step, padding included: whatever lies there (even NaN) must
        # not reach the weight gradients, as it never does on torch's packed kernel.
        valid = torch.arange(x.shape[1], device=x.device) < lengths[:, None]  # (B, T)
        x = x.masked_fill(~valid[..., None], 0.0)
    lstm, ln = cells[0].is_lstm, isinstance(cells[0], (LayerNormGRUCell, LayerNormLSTMCell))
    kind = (_LN_LSTM if lstm else _LN_GRU) if ln else (_LSTM if lstm else _GRU)
    flat = []
    for cell, state, mask in zip(cells, states, masks):
        h0, c0 = state if lstm else (state, _empty(x))
        if ln:  # all the cell's layer norms as rows of one gain and one shift; autograd splits
            # their gradients back: LN_hh's, LN_c's (LSTM), then LN_ih's
            gain = torch.cat([cell.gain_hh] + ([cell.gain_c[None]] if lstm else []) + [cell.gain_ih])
            shift = torch.cat([cell.shift_hh] + ([cell.shift_c[None]] if lstm else []) + [cell.shift_ih])
        else:
            gain = shift = _empty(x)
        optional = [cell.bias_ih, cell.bias_hh, mask]  # layer-norm cells have no biases
        b_ih, b_hh, mask = (t if t is not None else _empty(x) for t in optional)
        flat += [cell.weight_ih, b_ih, h0, c0, cell.weight_hh, b_hh, gain, shift, mask]
    lens = lengths if lengths is not None else torch.empty(0, dtype=torch.long)
    # Without autograd (inference) the loop keeps two rows of state and saves no activations.
    train = torch.is_grad_enabled() and (x.requires_grad or any(t.requires_grad for t in flat))
    res = _Recurrence.apply(kind, train, tuple(reverse), lens, getattr(cells[0], "eps", 0.0), x, *flat)
    return res[0], _states(list(res[1:]), len(cells), lstm)
