"""The probe: is the compiled loop, as built on this machine, faster than torch's own kernels?

The compiled loop is fast where its GEMM tile suits the CPU (csrc/simd.h), and every user's CPU
is another: an AVX-512 server, an AVX2 laptop, an ARM machine, a build for an older ISA than
the machine has (``RNNKIT_MARCH``). So the default never takes it on trust. The first time a
GRU or LSTM layer would run on the compiled loop, the probe times a training step (forward and
backward) and an inference call of the loop against torch.nn's kernel, alternately, for a
one-direction and a bidirectional layer of each cell, at a small and a large size (``SIZES``):
sixteen comparisons, a few seconds.

The two sizes are there because the ratio moves with the work of a step: torch's kernel pays a
fixed cost per step that the loop does not, and the loop's GEMM may be slower than torch's
BLAS (an SSE2 build against MKL's AVX2: 1.15x at the small size and 0.5x at the large one).
For a layer with B x H x (D + H) multiply-adds per step and gate, the verdict takes the ratio
measured at the nearer size, and between the two sizes interpolates it on the logarithm of that
work. Where it is below ``THRESHOLD``, the layer runs on torch's kernel, and its ``path`` says so
with the measured ratios. Layer-norm cells have no torch kernel (their other path is the Python
loop, many times slower) and are not probed.

The verdicts are kept in ``probe.json`` in the extension's build folder, whose name already
follows the source, the -march, the torch installation and the CPU (``_compiled._build_name``),
per number of torch threads; so the probe runs once per build, machine and thread count.
``rnnkit build`` runs it (again, with ``--probe``) and prints it. ``RNNKIT_PROBE=0`` skips it:
the compiled loop then runs wherever it can (benchmarks and tests that compare the paths).

The probe draws its inputs from its own generator and restores torch's random state, so a
seeded run gives the same numbers whether or not it probed first.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time

import torch

from . import _compiled
from .cells import GRUCell, LSTMCell

__all__ = ["enabled", "verdicts", "ratio", "run", "describe", "work"]

# (B, T, H = D): the small and the large layer of the probe. T is short: the ratio follows the
# work per step, and a short T keeps the probe to seconds on a slow build.
SIZES = ((16, 32, 64), (64, 16, 256))
ROUNDS = 5
# Where the loop measured below this share of torch's speed, torch's kernel runs. Not 1.0:
# two paths within noise of each other would flip between machines of one kind.
THRESHOLD = 0.97
_KEYS = [f"{cell}/{mode}/{way}" for cell in ("gru", "lstm") for mode in ("train", "infer") for way in ("uni", "bi")]
_VERSION = 2
_lock = threading.Lock()
_memo: dict[int, dict] = {}  # torch threads -> the record of that probe


def enabled() -> bool:
    value = os.environ.get("RNNKIT_PROBE", "1").strip().lower()
    if value in ("1", "true", "yes", "on", ""):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"RNNKIT_PROBE={os.environ['RNNKIT_PROBE']!r}: expected 1/true/yes/on (probe the "
                     "compiled loop against torch's kernels, the default) or 0/false/no/off (no probe)")


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
    """The loop's speed over torch's expected for this layer, and the measurements it comes
    from; probing first if no verdict is kept for this build and thread count. None when
    nothing is probed (a cell the probe does not cover, the probe turned off, or the loop not
    built). Without ``x`` (the batch size unknown) the lower of the two measured ratios."""
    name = key(cell, training, bidirectional)
    if name is None or not enabled() or not _compiled.available():
        return None
    record = verdicts()
    (small, large), sizes = record["ratios"][name], record["sizes"]
    measured = (f"{describe(name)}: the compiled loop ran at {small:.2f}x torch's kernel at (B, T, H) = "
                f"{tuple(sizes[0])} and {large:.2f}x at {tuple(sizes[1])} on this CPU (probe of this "
                f"{record['isa']} build)")
    if x is None:
        return min(small, large), measured
    w = work(x.shape[0], x.shape[-1], cell.hidden_size)
    w0, w1 = (work(B, H, H) for B, _, H in sizes)
    if w <= w0:
        return small, measured
    if w >= w1:
        return large, measured
    share = math.log(w / w0) / math.log(w1 / w0)
    expected = small + (large - small) * share
    return expected, f"{measured}; about {expected:.2f}x expected at this layer's B x H x (D + H) = {w:,}"


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
            print("rnnkit: timing the compiled recurrence against torch's kernels on this CPU (once per "
                  "build and thread count; a few seconds)...", file=sys.stderr, flush=True)
            record = run()
            _write(threads, record)
        _memo[threads] = record
        return record


def run(sizes=SIZES, rounds: int = ROUNDS) -> dict:
    """Measure now: the loop against torch.nn for each probed kind of layer (``_KEYS``) at each
    of the two sizes."""
    ratios = {name: [] for name in _KEYS}
    with torch.random.fork_rng(devices=[]):
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
    if set(ratios) != set(_KEYS) or not all(
            isinstance(v, list) and len(v) == 2 and all(isinstance(r, (int, float)) and r > 0 for r in v)
            for v in ratios.values()):
        return None
    if not (isinstance(sizes, list) and len(sizes) == 2
            and all(isinstance(s, list) and len(s) == 3 and all(isinstance(n, int) and n > 0 for n in s) for s in sizes)):
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
    everything[str(threads)] = record
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(everything, f, indent=1)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache: the verdict holds for this process
