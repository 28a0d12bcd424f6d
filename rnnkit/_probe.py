"""The probe: is the compiled loop, as built on this machine, faster than torch's own kernels?

The compiled loop is fast where its GEMM tile suits the CPU (csrc/simd.h), and every user's CPU
is another: an AVX-512 server, an AVX2 laptop, an ARM machine, a build for an older ISA than
the machine has (``RNNKIT_MARCH``). So the default never takes it on trust. The first time a
GRU or LSTM layer would run on the compiled loop, the probe times one training step (forward
and backward) and one inference call of the loop against torch.nn's kernel, alternately, for a
one-direction and a bidirectional layer of each cell, at (32, 32, 128): eight comparisons, about
two seconds. Where the loop is slower, layers of that kind run on torch's kernel, and their
``path`` says so with the measured ratio. Layer-norm cells have no torch kernel (their other
path is the Python loop, many times slower) and are not probed.

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
import os
import sys
import threading
import time

import torch

from . import _compiled
from .cells import GRUCell, LSTMCell

__all__ = ["enabled", "verdicts", "ratio", "run", "describe"]

SHAPE = (32, 32, 128)  # B, T, H = D: a layer in the middle of the sizes users train
ROUNDS = 7
# Where the loop measured below this share of torch's speed, torch's kernel runs. Not 1.0:
# two paths within noise of each other would flip between machines of one kind.
THRESHOLD = 0.97
_KEYS = [f"{cell}/{mode}/{way}" for cell in ("gru", "lstm") for mode in ("train", "infer") for way in ("uni", "bi")]
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


def ratio(cell, training: bool, bidirectional: bool) -> float | None:
    """The loop's speed over torch's for layers like this one, probing first if no verdict is
    kept for this build and thread count; None when nothing is probed (a cell the probe does not
    cover, the probe turned off, or the loop not built)."""
    name = key(cell, training, bidirectional)
    if name is None or not enabled() or not _compiled.available():
        return None
    return verdicts()["ratios"].get(name)


def verdicts(*, again: bool = False) -> dict:
    """This build's probe record for the current number of torch threads: ``ratios`` (the loop's
    speed over torch's, per ``cell/mode/direction``), ``isa``, ``shape``, ``threads``, ``when``.
    Read from probe.json, or measured now (``again`` measures whatever is kept)."""
    threads = torch.get_num_threads()
    with _lock:
        if not again and threads in _memo:
            return _memo[threads]
        record = None if again else _read(threads)
        if record is None:
            print("rnnkit: timing the compiled recurrence against torch's kernels on this CPU (once per "
                  "build; about 2 s)...", file=sys.stderr, flush=True)
            record = run()
            _write(threads, record)
        _memo[threads] = record
        return record


def run(shape: tuple[int, int, int] = SHAPE, rounds: int = ROUNDS) -> dict:
    """Measure now: the loop against torch.nn for each probed kind of layer (``_KEYS``)."""
    B, T, H = shape
    ratios = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        x = torch.randn(B, T, H)
        for name in _KEYS:
            cell, mode, way = name.split("/")
            ratios[name] = round(_compare(cell, mode == "train", way == "bi", x, rounds), 3)
    return {"ratios": ratios, "isa": _compiled.isa(), "shape": list(shape), "threads": torch.get_num_threads(),
            "when": time.strftime("%Y-%m-%d %H:%M:%S")}


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


def describe(name: str, value: float) -> str:
    cell, mode, way = name.split("/")
    what = f"{'bidirectional ' if way == 'bi' else ''}{cell.upper()} {'training' if mode == 'train' else 'inference'}"
    return f"{what}: the compiled loop ran at {value:.2f}x torch's kernel"


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
    if not isinstance(record, dict) or not isinstance(record.get("ratios"), dict):
        return None
    ratios = record["ratios"]
    if set(ratios) != set(_KEYS) or not all(isinstance(v, (int, float)) and v > 0 for v in ratios.values()):
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
