"""rnnkit's BiGRU/BiLSTM against its peers, in one run: tokens/s, GFLOP/s, ratios, GEMM peak.

    python bench/speed.py                         # rnnkit (compiled path), rnnkit on torch's
                                                  # kernel, torch.nn; all configurations
    python bench/speed.py --keras                 # + Keras 3 on TensorFlow (installs
                                                  # tensorflow-cpu + keras into bench/.venv-keras)
    python bench/speed.py --configs 16x500x64x1 --cells gru --json out.json
    python bench/speed.py --memory                # + peak memory of one training step, T = 2000

Implementations, all with the same shapes (B, T, D = H, layers), bidirectional, no padding.
The extension is built for ``RNNKIT_MARCH`` (native by default; ``RNNKIT_MARCH=x86-64-v3``
measures an AVX2 build on a newer CPU), and the machine record names the ISA its GEMM kernel
was built for (``rnnkit_isa``):

* ``rnnkit`` -- ``rnnkit.Stack(..., bidirectional=True)`` as rnnkit runs it by default: the
  compiled path on (``recurrence.set_compiled(True)``), routed by the probe of this build
  (rnnkit/_probe.py: a kind of layer whose loop measured slower than torch's kernel on this
  CPU runs torch's kernel).
* ``rnnkit-cpp`` -- the same with every batch on the C++ loop, whatever the probe says: what
  the loop itself does on this CPU and build.
* ``rnnkit-fused`` -- the same Stack with the compiled path off: torch's kernel through rnnkit.
* ``torch.nn`` -- ``torch.nn.GRU/LSTM(..., bidirectional=True, num_layers=L, batch_first=True)``.
* ``keras`` (``--keras``) -- ``keras.layers.Bidirectional(GRU/LSTM(H, return_sequences=True))``
  stacked L times, TensorFlow backend, ``train_on_batch`` with Adam and MSE; timed in a
  subprocess of this run (bench/_keras_worker.py) right after the torch implementations of the
  same configuration, so not interleaved with them.

Training = forward + backward + Adam step; inference = forward without autograd. rnnkit and
torch.nn are timed interleaved, in rounds, and ratios are paired per round (common.py). Each
configuration is timed in ``--processes`` fresh processes (3 by default) and their rounds
pooled: oneDNN's LSTM runs at one of two speeds, about 2x apart, fixed for the life of a
process (it follows the memory layout), so a single process is a single draw. The last
column gives the range of the per-process ratios.

FLOPs counted: the matrix products only (elementwise gate math is not counted). Per token, per
direction, per layer with input width D_l: forward 2 G H (D_l + H) (input and recurrent
projections; G = 3 for GRU, 4 for LSTM); training 3x forward (backward computes the input
gradient and the weight gradient, each as large as the forward product). D_l = H for the first
layer, 2H after it (concat merge).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import rnnkit  # noqa: E402
from common import (in_fresh_processes, interleaved, machine, median, paired_ratio,  # noqa: E402
                    pool_rounds, table)
from rnnkit import recurrence  # noqa: E402

CONFIGS = ["32x50x128x1", "64x100x256x2", "16x500x64x1", "16x2000x64x2"]
KERAS_VENV = os.path.join(HERE, ".venv-keras")
_DEFAULT_PROBE = os.environ.get("RNNKIT_PROBE", "1")


def parse_config(text: str) -> tuple[int, int, int, int]:
    parts = [int(p) for p in text.lower().split("x")]
    if len(parts) == 3:
        parts.append(1)
    if len(parts) != 4:
        raise SystemExit(f"--configs entries are BxTxH or BxTxHxLAYERS; got {text!r}")
    return tuple(parts)


def flops_per_token(cell: str, H: int, L: int, *, train: bool) -> float:
    G = 3 if cell == "gru" else 4
    total = 0.0
    for layer in range(L):
        D = H if layer == 0 else 2 * H
        total += 2 * (2 * G * H * (D + H))  # two directions
    return total * (3 if train else 1)


def kernel_peak(threads: int) -> float | None:
    """Best GFLOP/s of rnnkit's own GEMM kernel, one (n, n) float32 product per thread
    (bench/kernel.py, built for the extension's -march)."""
    import kernel
    try:
        return kernel.peak(threads)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"NOTE: rnnkit's kernel alone could not be built ({exc}); no kernel peak", flush=True)
        return None


def gemm_peak(threads: int, seconds: float = 0.5) -> dict:
    """Best float32 torch.mm GFLOP/s over a few square sizes, on ``threads`` threads."""
    best = {}
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        reps, t0 = 0, time.perf_counter()
        samples = []
        while time.perf_counter() - t0 < seconds:
            s = time.perf_counter()
            torch.mm(a, b)
            samples.append(time.perf_counter() - s)
            reps += 1
        gflops = 2 * n ** 3 / min(samples) / 1e9  # the best call: the machine's peak, not its load
        if gflops > best.get("gflops", 0):
            best = {"gflops": gflops, "n": n, "threads": threads}
    return best


# ------------------------------------------------------------------------ implementations

def train_infer(forward, params):
    opt = torch.optim.Adam(params, lr=1e-4)

    def train():
        opt.zero_grad(set_to_none=True)
        forward(True).mean().backward()
        opt.step()

    def infer():
        with torch.no_grad():
            forward(False)

    return train, infer


def rnnkit_impl(stack, x, compiled: bool, *, forced: bool = False):
    """``forced``: every batch on the C++ loop -- the probe off and the LSTM routing rule off --
    whatever rnnkit's default would route (the "rnnkit-cpp" rows)."""
    def forward(training):
        recurrence.set_compiled(compiled)
        os.environ["RNNKIT_PROBE"] = "0" if forced else _DEFAULT_PROBE
        stack.train(training)
        return stack(x)[0]
    return train_infer(forward, stack.parameters())


def torch_impl(module, x):
    def forward(training):
        module.train(training)
        return module(x)[0]
    return train_infer(forward, module.parameters())


def time_config(cell: str, cfg, args) -> dict:
    """Seconds per call of every implementation, interleaved rounds, in this process:
    {mode: {name: [seconds per round]}}."""
    B, T, H, L = cfg
    torch.manual_seed(0)
    stack = rnnkit.Stack(H, [H] * L, cell=cell, bidirectional=True)
    module = stack.to_torch()
    x = torch.randn(B, T, H, requires_grad=True)
    impls = {"torch": torch_impl(module, x), "rnnkit": rnnkit_impl(stack, x, True),
             "rnnkit-fused": rnnkit_impl(stack, x, False), "rnnkit-cpp": rnnkit_impl(stack, x, True, forced=True)}
    times = {}
    for mode, k in (("train", 0), ("infer", 1)):
        times[mode] = interleaved({n: f[k] for n, f in impls.items()}, rounds=args.rounds,
                                  target=args.target, warmup=args.warmup)
    recurrence.set_compiled(True)
    os.environ["RNNKIT_PROBE"] = _DEFAULT_PROBE
    return times


def time_in_processes(cell: str, cfg, args) -> tuple[dict, dict]:
    """``time_config`` in ``args.processes`` fresh processes, one after the other; the rounds
    of all of them pooled (common.in_fresh_processes says why). Also returns, per mode and implementation, the range of its per-process paired ratio to
    torch.nn ("0.95-1.52")."""
    if args.processes <= 1:
        times = time_config(cell, cfg, args)
        return times, {mode: {} for mode in times}
    job = dict(cell=cell, cfg=list(cfg), rounds=args.rounds, target=args.target, warmup=args.warmup,
               threads=args.threads)
    runs = in_fresh_processes(__file__, job, args.processes)
    times = pool_rounds(runs)
    spread = {}
    for mode in times:
        spread[mode] = {}
        for name in times[mode]:
            r = [paired_ratio(run[mode]["torch"], run[mode][name]) for run in runs]
            spread[mode][name] = f"{min(r):.2f}-{max(r):.2f}"
    return times, spread


def run_keras(cell, cfg, args) -> dict | None:
    """Keras' seconds per round, like the torch implementations' in as many fresh processes,
    rounds pooled; plus the versions."""
    python = os.path.join(KERAS_VENV, "bin", "python")
    job = dict(cell=cell, config=cfg, threads=args.threads, rounds=args.rounds, target=args.target,
               warmup=args.warmup)
    runs = []
    for _ in range(max(1, args.processes)):
        proc = subprocess.run([python, os.path.join(HERE, "_keras_worker.py"), json.dumps(job)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"keras failed on {cell} {cfg}: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
            return None
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    pooled = {mode: [t for run in runs for t in run[mode]] for mode in ("train", "infer")}
    return dict(pooled, versions=runs[0]["versions"])


def ensure_keras() -> None:
    """Create bench/.venv-keras with tensorflow-cpu and keras from PyPI (once)."""
    python = os.path.join(KERAS_VENV, "bin", "python")
    if os.path.exists(python) and subprocess.run([python, "-c", "import keras, tensorflow"],
                                                 capture_output=True).returncode == 0:
        return
    print(f"installing tensorflow-cpu + keras into {KERAS_VENV} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", KERAS_VENV], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "tensorflow-cpu", "keras"], check=True)


# ------------------------------------------------------------------------------- memory

def memory_worker(cell: str, cfg, impl: str, window: int | None) -> None:
    """One training step in this (fresh) process; prints the peak RSS growth it caused in MB."""
    B, T, H, L = cfg
    torch.manual_seed(0)
    x = torch.randn(B, T, H, requires_grad=True)
    if impl == "torch.nn":
        model = nn.GRU(H, H, num_layers=L, bidirectional=True, batch_first=True) if cell == "gru" else \
            nn.LSTM(H, H, num_layers=L, bidirectional=True, batch_first=True)
    else:  # "rnnkit", "rnnkit-fused" or "rnnkit-cpp" (every batch on the C++ loop),
        # optionally "... +recompute K" (recompute_chunk=K)
        name, _, chunk = impl.partition(" +recompute ")
        model = rnnkit.Stack(H, [H] * L, cell=cell, bidirectional=True,
                             recompute_chunk=int(chunk) if chunk else None)
        recurrence.set_compiled(name != "rnnkit-fused")
        os.environ["RNNKIT_PROBE"] = "0" if name == "rnnkit-cpp" else _DEFAULT_PROBE
    # A short step first, so that library start-up (thread pools, kernel JITs, the extension)
    # is not counted as the step's memory.
    model(x[:, :8].detach().requires_grad_())[0].mean().backward()
    model.zero_grad(set_to_none=False)
    # VmHWM is this process's own high-water mark (ru_maxrss would carry the parent's over exec).
    before = _status_kb("VmRSS")
    saved = {}

    def pack(t):  # what autograd keeps for backward (distinct storages), outside any checkpoint
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)[0]
    out.mean().backward()
    print(json.dumps({"peak_mb": (_status_kb("VmHWM") - before) / 1024,
                      "saved_mb": sum(saved.values()) / 2**20}))


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure_memory(cell, cfg, impl) -> float | None:
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-worker",
                           json.dumps([cell, list(cfg), impl])], capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], flush=True)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------- the run

COLUMNS = [("cell", "cell", "s"), ("config", "(B, T, H) x layers", "s"), ("mode", "mode", "s"),
           ("impl", "implementation", "s"), ("tps", "tokens/s", ",.0f"), ("gflops", "GFLOP/s", ".1f"),
           ("of_peak", "% of GEMM peak", ".0f"),
           ("vs_torch", "vs torch.nn", ".2f"), ("best_vs_torch", "best/best vs torch.nn", ".2f"),
           ("vs_best_peer", "vs best peer", ".2f"),
           ("per_process", "vs torch.nn per process", "s")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated BxTxH[xLAYERS]")
    p.add_argument("--cells", default="gru,lstm")
    p.add_argument("--keras", action="store_true", help="also time Keras 3 / TensorFlow (own venv)")
    p.add_argument("--memory", action="store_true", help="peak memory of a (16, 2000, 64) x2 training step")
    p.add_argument("--memory-only", action="store_true", help="only the memory table (no timing)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--target", type=float, default=0.2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="3 rounds of 0.1 s")
    p.add_argument("--json", help="write all rows and the machine record here")
    p.add_argument("--processes", type=int, default=3,
                   help="fresh processes per configuration, rounds pooled (1: time in this one)")
    p.add_argument("--memory-worker", help=argparse.SUPPRESS)
    p.add_argument("--time-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_worker:
        cell, cfg, impl = json.loads(args.memory_worker)
        memory_worker(cell, tuple(cfg), impl, None)
        return 0
    if args.time_worker:
        job = json.loads(args.time_worker)
        args.rounds, args.target, args.warmup = job["rounds"], job["target"], job["warmup"]
        torch.set_num_threads(job["threads"])
        recurrence.set_compiled(True)
        print(json.dumps(time_config(job["cell"], tuple(job["cfg"]), args)))
        return 0
    if args.quick:
        args.rounds, args.target = 3, 0.1
    recurrence.set_compiled(True)
    from rnnkit import _compiled
    if not _compiled.available():
        print(f"NOTE: the compiled path is not available ({_compiled.error()}); 'rnnkit' runs the pure paths")
    if args.keras:
        ensure_keras()
    info = machine()
    info["rnnkit_march"] = os.environ.get("RNNKIT_MARCH", "native")
    info["rnnkit_isa"] = _compiled.isa()
    from rnnkit import _probe
    if _compiled.available() and _probe.enabled():
        # the probe's verdicts, which the "rnnkit" rows follow (measured now if none are kept)
        info["probe"] = _probe.verdicts()["ratios"]
    peak = gemm_peak(args.threads)
    info["torch_mm_peak_gflops"] = round(peak["gflops"], 1)
    info["torch_mm_peak_n"] = peak["n"]
    kpeak = kernel_peak(args.threads)
    info["rnnkit_kernel_peak_gflops"] = round(kpeak, 1) if kpeak else None
    # The machine's GEMM peak: the better of torch.mm (MKL) and rnnkit's own kernel, both on
    # the same threads; MKL does not reach this CPU's AVX-512 peak.
    info["gemm_peak_gflops"] = round(max(peak["gflops"], kpeak or 0.0), 1)
    print(f"machine: {info}", flush=True)
    rows, keras_versions = [], None
    args.memory = args.memory or args.memory_only
    for cell in ([] if args.memory_only else args.cells.split(",")):
        for cfg in map(parse_config, args.configs.split(",")):
            B, T, H, L = cfg
            times, spread = time_in_processes(cell, cfg, args)
            keras = run_keras(cell, list(cfg), args) if args.keras else None
            if keras:
                keras_versions = keras.pop("versions")
            for mode in ("train", "infer"):
                fpt = flops_per_token(cell, H, L, train=mode == "train")
                samples = dict(times[mode])
                if keras:
                    samples["keras"] = keras[mode]
                best_peer = min(median(samples[n]) for n in ("torch", "keras") if n in samples)
                for name, s in samples.items():
                    sec = median(s)
                    rows.append(dict(cell=cell, config=f"({B}, {T}, {H}) x{L}", mode=mode,
                                     impl={"torch": "torch.nn"}.get(name, name),
                                     tps=B * T / sec, gflops=B * T * fpt / sec / 1e9,
                                     of_peak=100 * B * T * fpt / sec / 1e9 / info["gemm_peak_gflops"],
                                     vs_torch=paired_ratio(times[mode]["torch"], s) if name != "keras"
                                     else median(times[mode]["torch"]) / sec,
                                     vs_best_peer=best_peer / sec,
                                     best_vs_torch=min(times[mode]["torch"]) / min(s),
                                     per_process=spread[mode].get(name, "")))
                line = ", ".join(f"{r['impl']} {r['tps']:,.0f} tok/s {r['gflops']:.1f} GF/s ({r['vs_torch']:.2f}x)"
                                 for r in rows if r["cell"] == cell and r["mode"] == mode
                                 and r["config"] == f"({B}, {T}, {H}) x{L}")
                print(f"{cell} {cfg} {mode}: {line}", flush=True)
    memory = []
    if args.memory:
        for cell in args.cells.split(","):
            impls = ["torch.nn", "rnnkit-fused", "rnnkit", "rnnkit-fused +recompute 100", "rnnkit +recompute 100"]
            if cell == "lstm":  # what the routing rule weighs: the C++ loop under recompute
                impls.append("rnnkit-cpp +recompute 100")
            for impl in impls:
                mb = measure_memory(cell, (16, 2000, 64, 2), impl) or {}
                memory.append(dict(cell=cell, config="(16, 2000, 64) x2", impl=impl, **mb))
                print(f"memory {cell} {impl}: {mb}", flush=True)
    info["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    if keras_versions:
        info["keras"] = keras_versions
    print(f"\nMachine: {info['cpu']} ({info['cpu_flags']}), {info['logical_cpus']} logical CPUs; rnnkit built "
          f"with -march={info['rnnkit_march']} (GEMM kernel: {info['rnnkit_isa']}); torch "
          f"{info['torch']}, {info['torch_threads']} threads; GEMM peak {info['gemm_peak_gflops']} GFLOP/s "
          f"(float32; torch.mm {info['torch_mm_peak_gflops']} at n={info['torch_mm_peak_n']}, rnnkit kernel "
          f"{info['rnnkit_kernel_peak_gflops']}; best call); load {info['load_avg_1m']} -> "
          f"{info['load_avg_1m_end']}" + (f"; keras {keras_versions}" if keras_versions else ""))
    print("\n" + table(rows, COLUMNS))
    if memory:
        print("\nPeak memory of one training step (growth of the resident high-water mark over the "
              "resident size after a short warm-up step, fresh process)\n")
        print(table(memory, [("cell", "cell", "s"), ("config", "(B, T, H) x layers", "s"),
                             ("impl", "implementation", "s"), ("saved_mb", "saved for backward MB", ".1f"),
                             ("peak_mb", "peak RSS growth MB", ".0f")]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "args": vars(args), "rows": rows, "memory": memory}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
