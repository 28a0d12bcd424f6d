"""Shared helpers of the benchmarks: the machine record and interleaved, repeated timing.

Timings on a shared machine are noisy, so every benchmark here times its implementations
*interleaved* (A, B, C, A, B, C, ...) rather than one after another, repeats each several
times and reports the median: a burst of load from another process then hits all of them
alike instead of skewing one.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch


def machine() -> dict:
    """CPU model, core count, load, torch version and threads: what a number was measured on."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    flags = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        have = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f" {f}" in out]
        flags = ",".join(have)
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu": cpu,
        "cpu_flags": flags,
        "logical_cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def calibrate(fn: Callable[[], object], target: float) -> int:
    """How many calls of ``fn`` take about ``target`` seconds (at least 1)."""
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    return max(1, int(target / max(dt, 1e-6)))


def interleaved(fns: dict[str, Callable[[], object]], *, rounds: int = 5, target: float = 0.3,
                warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per call of each function in each of ``rounds`` interleaved rounds.

    Each function first runs ``warmup`` times (allocator, caches, lazy init), then gets a call
    count that takes about ``target`` seconds; every round times each function once for that
    many calls, in turn. Use ``median`` on a list, and ``paired_ratio`` for a ratio: the ratio
    within each round, then the median, so load that changes between rounds cancels out.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    counts = {name: calibrate(fn, target) for name, fn in fns.items()}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            n = counts[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t0) / n)
    return samples


def in_fresh_processes(script: str, job: dict, processes: int) -> list[dict]:
    """Runs ``python script --time-worker JOB`` in ``processes`` fresh processes, one after the
    other, and returns what each printed on its last line (JSON). Why fresh processes: torch's
    oneDNN LSTM runs at one of two speeds, about 2x apart, fixed for the life of a process (it
    follows the memory layout), so one process is one draw."""
    runs = []
    for _ in range(processes):
        proc = subprocess.run([sys.executable, os.path.abspath(script), "--time-worker", json.dumps(job)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"timing {job} failed in its process:\n{proc.stderr[-2000:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return runs


def pool_rounds(runs: list[dict]) -> dict[str, dict[str, list[float]]]:
    """{mode: {name: rounds}} of several processes -> the same with all their rounds, in order
    (each round's samples stay together, so ratios paired per round stay paired)."""
    return {mode: {name: [t for run in runs for t in run[mode][name]] for name in runs[0][mode]}
            for mode in runs[0]}


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def paired_ratio(slow_times: list[float], fast_times: list[float]) -> float:
    """Median over rounds of ``slow / fast`` time, i.e. the speed of ``fast`` relative to ``slow``."""
    return statistics.median(s / f for s, f in zip(slow_times, fast_times))


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A markdown table: columns are (key, header, format)."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    rule = "|" + "|".join("---" if f == "s" else "---:" for _, _, f in columns) + "|"
    lines = [head, rule]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            v = row.get(key)
            cells.append("" if v is None else (format(v, fmt) if fmt != "s" else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
