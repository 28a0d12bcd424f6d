"""The probe: is the compiled loop, as built on this machine, faster than torch's own kernels?

The compiled loop is fast where its GEMM tile suits the CPU (csrc/simd.h), and every user's CPU
is another: an AVX-512 server, an AVX2 laptop, an ARM machine, a build for an older ISA than
the machine has (``RNNKIT_MARCH``). So the default never takes it on trust. The first time a
GRU or LSTM layer would run on the compiled loop, the probe times a training step (forward and
backward) and an inference call of the loop against torch.nn's kernel, alternately, for a
one-direction and a bidirectional layer of each cell, at three sizes (``SIZES``): 24
comparisons, a few seconds.

The sizes are there because the ratio moves with the work of a step: torch's kernel pays a
fixed cost per step that the loop does not, and the loop's GEMM may be slower than torch's
BLAS (an SSE2 build against MKL's AVX2: 1.6x at the small size, 0.5x at the large one). A
layer with B x H x (D + H) multiply-adds per step and gate is judged by the sizes around it:
between two measured sizes, the lower of their two ratios (the ratio moves monotonically with
the work, so the layer's own is no lower than that); below the smallest or above the largest
size, the nearest ratio, or, where the ratio falls in that direction, its trend carried on (on
the logarithm of the work). Where that is below ``THRESHOLD``, the layer runs on torch's kernel,
and its ``path`` says so with the measured ratios. Layer-norm cells have no torch kernel (their
other path is the Python loop, many times slower) and are not probed.

The verdicts are kept in ``probe.json`` in the extension's build folder, whose name already
follows the source, the -march, the torch installation and the CPU (``_compiled._build_name``),
per number of torch threads; so the probe runs once per build, machine and thread count.
``rnnkit build`` runs it (again, with ``--probe``) and prints it. ``RNNKIT_PROBE=0`` skips it:
the compiled loop then runs wherever it can (benchmarks and tests that compare the paths).

The probe draws its inputs from its own generator and restores torch's random state, so a
seeded run gives the same numbers whether or not it probed first.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
import warnings

import torch

from . import _compiled
from ._checks import env_flag
from ._log import get_logger
from .cells import GRUCell, LSTMCell

__all__ = ["enabled", "verdicts", "ratio", "judged", "run", "describe", "work"]

# (B, T, H = D): the layers of the probe, from small to large. T is short: the ratio follows
# the work per step, and a short T keeps the probe to seconds on a slow build.
SIZES = ((16, 32, 64), (32, 16, 128), (64, 16, 256))
ROUNDS = 5
# Where the loop measured below this share of torch's speed, torch's kernel runs. Not 1.0:
# two paths within noise of each other would flip between machines of one kind.
THRESHOLD = 0.97
_KEYS = [f"{cell}/{mode}/{way}" for cell in ("gru", "lstm") for mode in ("train", "infer") for way in ("uni", "bi")]
_VERSION = 3
_lock = threading.Lock()
_log = get_logger(__name__)
_memo: dict[int, dict] = {}  # torch threads -> the record of that probe


def enabled() -> bool:
    return env_flag("RNNKIT_PROBE", True, on="probe the compiled loop against torch's kernels, the default",
                    off="no probe")


def key(cell, training: bool, bidirectional: bool) -> str | None:
    """The probe's name for a layer of this cell, or None for cells it does not probe."""
    kinds = {GRUCell: "gru", LSTMCell: "lstm"}
    if type(cell) not in kinds:
        return None
    return f"{kinds[type(cell)]}/{'train' if training else 'infer'}/{'bi' if bidirectional else 'uni'}"


def work(B: int, D: int, H: int) -> int:
    """Multiply-adds per step and gate of a layer: B x H x (D + H)."""
    return B * H * (D + H)


def ratio(cell, training: bool, bidirectional: bool, x: torch.Tensor | None) -> tuple[float, str] | None:
    """The loop's speed over torch's taken for this layer (see the module's docstring), and the
    measurements it comes from; probing first if no verdict is kept for this build and thread
    count. None when nothing is probed (a cell the probe does not cover, the probe turned off,
    or the loop not built). Without ``x`` (the batch size unknown) the lowest ratio measured
    where all sizes agree on the path, else the middle size's, with a reason that says so."""
    name = key(cell, training, bidirectional)
    if name is None or not enabled() or not _compiled.available():
        return None
    record = verdicts()
    w = None if x is None else work(x.shape[0], x.shape[-1], cell.hidden_size)
    seen = record.setdefault("_judged", {})  # (name, work) -> answer: layers ask on every call
    if (name, w) not in seen:
        seen[(name, w)] = _judge(record, name, w)
    return seen[(name, w)]


def _judge(record: dict, name: str, w: int | None) -> tuple[float, str]:
    if "error" in record:
        return 0.0, f"the probe of this {record['isa']} build failed ({record['error']})"
    ratios, sizes = record["ratios"][name], record["sizes"]
    at = ", ".join(f"{r:.2f}x at {tuple(s)}" for r, s in zip(ratios, sizes))
    measured = (f"{describe(name)}: the compiled loop ran at {at} (B, T, H) against torch's kernel on this CPU "
                f"(probe of this {record['isa']} build)")
    if w is None:  # no batch to judge by: one verdict for all sizes where all agree, else the middle one's
        if min(ratios) >= THRESHOLD or max(ratios) < THRESHOLD:
            return min(ratios), measured
        return ratios[len(ratios) // 2], (f"{measured}; the path follows each batch's size: the loop where the "
                                          f"ratio around its B x H x (D + H) is at least {THRESHOLD}")
    taken = judged(ratios, [work(B, H, H) for B, _, H in sizes], w)
    return taken, f"{measured}; taken as {taken:.2f}x at this layer's B x H x (D + H) = {w:,}"


def judged(ratios: list[float], works: list[int], w: int) -> float:
    """The ratio a layer of work ``w`` is judged by, from ``ratios`` measured at ``works``
    (increasing): the lower of the two around it; outside them the nearest, or its falling
    trend carried on, on the logarithm of the work."""
    logs = [math.log(v) for v in works]
    x = math.log(w)
    if x < logs[0] or x > logs[-1]:
        end, other = (0, 1) if x < logs[0] else (-1, -2)
        slope = (ratios[end] - ratios[other]) / (logs[end] - logs[other])  # change per log-work outward
        carried = ratios[end] + slope * (x - logs[end])
        return min(ratios[end], carried)
    if x in logs:
        return ratios[logs.index(x)]
    k = max(i for i in range(len(logs)) if logs[i] < x)
    return min(ratios[k], ratios[k + 1])


def verdicts(*, again: bool = False) -> dict:
    """This build's probe record for the current number of torch threads: ``ratios`` (the loop's
    speed over torch's, per ``cell/mode/direction``, at each of ``sizes``), ``isa``, ``threads``,
    ``when``.
    Read from probe.json, or measured now (``again`` measures whatever is kept)."""
    threads = torch.get_num_threads()
    with _lock:
        if not again and threads in _memo:
            return _memo[threads]
        record = None if again else _read(threads)
        if record is None:
            # One process probes at a time (the workers of a torchrun job start together, and two
            # probes at once would time each other); the others then read what it kept.
            with _file_lock():
                record = None if again else _read(threads)
                if record is None:
                    record = _measure(threads)
        _memo[threads] = record
        return record


def _measure(threads: int) -> dict:
    _log.info("rnnkit: timing the compiled recurrence against torch's kernels on this CPU (once per build "
              "and thread count; a few seconds)...")
    try:
        record = run()
    except Exception as exc:  # out of memory, a broken build, ...: torch's kernels, not kept
        error = f"{type(exc).__name__}: {exc}".strip()
        warnings.warn(f"rnnkit: the probe of the compiled recurrence failed ({error}); GRU and LSTM layers run "
                      "on torch's kernels in this process", RuntimeWarning, stacklevel=4)
        return {"version": _VERSION, "error": error, "ratios": {}, "sizes": [], "isa": _compiled.isa(),
                "threads": threads, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    _write(threads, record)
    return record


@contextlib.contextmanager
def _file_lock():
    """An exclusive lock on probe.json's lock file (POSIX), or nothing where there is none."""
    path = _path()
    try:
        import fcntl
        handle = open(f"{path}.lock", "a") if path else None
    except (ImportError, OSError):
        handle = None
    if handle is None:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run(sizes=SIZES, rounds: int = ROUNDS) -> dict:
    """Measure now: the loop against torch.nn for each probed kind of layer (``_KEYS``) at each
    of the sizes."""
    ratios = {name: [] for name in _KEYS}
    # whatever mode the layer that asked runs in (no_grad, inference_mode): the probe times
    # training steps too
    with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad():
        torch.manual_seed(0)
        for B, T, H in sizes:
            x = torch.randn(B, T, H)
            for name in _KEYS:
                cell, mode, way = name.split("/")
                ratios[name].append(round(_compare(cell, mode == "train", way == "bi", x, rounds), 3))
    return {"version": _VERSION, "ratios": ratios, "sizes": [list(s) for s in sizes], "isa": _compiled.isa(),
            "threads": torch.get_num_threads(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}


def _compare(cell: str, training: bool, bidirectional: bool, x: torch.Tensor, rounds: int) -> float:
    """torch's best time over the loop's, the two timed alternately: the best of several calls
    is what each costs when nothing else runs (a median moved with whatever else ran, a build
    finishing or a test on the other core, by up to 7x in a first try)."""
    B, T, H = x.shape
    n = 2 if bidirectional else 1
    module = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(H, H, batch_first=True,
                                                                   bidirectional=bidirectional)
    cells = []
    for k in range(n):  # the same weights as torch's module: the same work
        c = (LSTMCell if cell == "lstm" else GRUCell)(H, H)
        sfx = "_reverse" if k else ""
        with torch.no_grad():
            for ours, theirs in (("weight_ih", "weight_ih_l0"), ("weight_hh", "weight_hh_l0"),
                                 ("bias_ih", "bias_ih_l0"), ("bias_hh", "bias_hh_l0")):
                getattr(c, ours).copy_(getattr(module, theirs + sfx))
        cells.append(c)
    states = [c.initial_state(B, x) for c in cells]
    xg = x.detach().requires_grad_(training)

    def loop():
        with torch.set_grad_enabled(training):
            out, _ = _compiled.run(cells, xg, states, None, reverse=[False, True][:n])
            if training:
                out.sum().backward()

    def torch_kernel():
        with torch.set_grad_enabled(training):
            out, _ = module(xg)
            if training:
                out.sum().backward()

    times = {loop: [], torch_kernel: []}
    for fn in (loop, torch_kernel, loop, torch_kernel):  # warm-up: caches, pools, oneDNN's plans
        fn()
    for _ in range(rounds):
        for fn in (loop, torch_kernel):
            start = time.perf_counter()
            fn()
            times[fn].append(time.perf_counter() - start)
    return min(times[torch_kernel]) / min(times[loop])


def describe(name: str) -> str:
    cell, mode, way = name.split("/")
    return f"{'bidirectional ' if way == 'bi' else ''}{cell.upper()} {'training' if mode == 'train' else 'inference'}"


def _path() -> str | None:
    try:
        return os.path.join(os.path.dirname(_compiled._ext.__file__), "probe.json")
    except (AttributeError, TypeError):
        return None


def _read(threads: int) -> dict | None:
    path = _path()
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f).get(str(threads))
    except (OSError, ValueError, AttributeError):
        return None  # none yet, or unreadable: measure again
    if not isinstance(record, dict) or record.get("version") != _VERSION or not isinstance(record.get("ratios"), dict):
        return None
    ratios, sizes = record["ratios"], record.get("sizes")
    if not (isinstance(sizes, list) and len(sizes) >= 2
            and all(isinstance(s, list) and len(s) == 3 and all(isinstance(n, int) and n > 0 for n in s) for s in sizes)):
        return None
    works = [work(B, H, H) for B, _, H in sizes]
    if works != sorted(set(works)):
        return None
    if set(ratios) != set(_KEYS) or not all(
            isinstance(v, list) and len(v) == len(sizes) and all(isinstance(r, (int, float)) and r > 0 for r in v)
            for v in ratios.values()):
        return None
    return record


def _write(threads: int, record: dict) -> None:
    path = _path()
    if path is None:
        return
    try:
        with open(path, encoding="utf-8") as f:
            everything = json.load(f)
        if not isinstance(everything, dict):
            everything = {}
    except (OSError, ValueError):
        everything = {}
    everything[str(threads)] = {k: v for k, v in record.items() if not k.startswith("_")}
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(everything, f, indent=1)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache: the verdict holds for this process
