"""Unidirectional layers on rnnkit's default paths against torch.nn: training and inference.

    python bench/unidirectional.py
    python bench/unidirectional.py --configs 32x50x128,64x100x256x2 --cells gru --rounds 7

``rnnkit.Stack(H, [H]*L, cell=...)`` (one direction: a language model's or decoder's
encoder) against its ``to_torch()`` twin with the same weights; training step = forward,
backward (loss = mean of the output, the input requires grad) and an Adam step; inference =
forward under ``torch.no_grad()``. ``rnnkit`` is the default routing (the probe of this build,
rnnkit/_probe.py); ``rnnkit-cpp`` runs every batch on the C++ loop whatever
the routing says. Timed interleaved in rounds (common.interleaved), in
``--processes`` fresh processes (3 by default; oneDNN's LSTM speed is fixed per process), the
rounds pooled; ratios are paired per round, then the median.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from common import in_fresh_processes, interleaved, machine, median, paired_ratio, pool_rounds, table  # noqa: E402

import rnnkit  # noqa: E402

CONFIGS = "32x50x128,64x100x256x2,16x500x64,64x35x512x2"


def parse_config(text: str) -> tuple[int, int, int, int]:
    parts = [int(v) for v in text.lower().split("x")]
    if len(parts) not in (3, 4) or min(parts) < 1:
        raise SystemExit(f"--configs: {text!r} is not BxTxH or BxTxHxLAYERS with positive integers")
    return (*parts, 1)[:4] if len(parts) == 3 else tuple(parts)


def steps(model, x):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train():
        opt.zero_grad(set_to_none=True)
        model(x)[0].mean().backward()
        opt.step()

    def infer():
        with torch.no_grad():
            model(x)
    return train, infer


def time_config(cell: str, cfg, args) -> dict:
    """{mode: {name: seconds per call in each round}} in this process."""
    B, T, H, L = cfg
    torch.manual_seed(0)
    stack = rnnkit.Stack(H, [H] * L, cell=cell)
    twin = stack.to_torch()
    x = torch.randn(B, T, H, requires_grad=True)
    impls = {"rnnkit": steps(stack, x), "torch.nn": steps(twin, x)}
    train, infer = steps(stack, x)
    probe = os.environ.get("RNNKIT_PROBE", "1")

    def on_loop(fn):  # every batch on the C++ loop: the probe off
        def run():
            os.environ["RNNKIT_PROBE"] = "0"
            try:
                fn()
            finally:
                os.environ["RNNKIT_PROBE"] = probe
        return run
    impls["rnnkit-cpp"] = (on_loop(train), on_loop(infer))
    return {mode: interleaved({n: f[k] for n, f in impls.items()}, rounds=args.rounds, target=args.target)
            for mode, k in (("train", 0), ("infer", 1))}


def in_processes(cell: str, cfg, args) -> dict:
    if args.processes <= 1:
        return time_config(cell, cfg, args)
    job = dict(cell=cell, cfg=list(cfg), rounds=args.rounds, target=args.target, threads=args.threads)
    return pool_rounds(in_fresh_processes(__file__, job, args.processes))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default=CONFIGS, help="comma-separated BxTxH[xLAYERS] (D = H); default %(default)s")
    p.add_argument("--cells", default="gru,lstm")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--target", type=float, default=0.2, help="seconds per timed round")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--processes", type=int, default=3, help="fresh processes per configuration, rounds pooled")
    p.add_argument("--time-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.time_worker:
        job = json.loads(args.time_worker)
        args.rounds, args.target = job["rounds"], job["target"]
        torch.set_num_threads(job["threads"])
        print(json.dumps(time_config(job["cell"], tuple(job["cfg"]), args)))
        return 0
    torch.set_num_threads(args.threads)
    rnnkit.recurrence.prepare()  # the build and the probe now, not inside a worker's timing
    info = machine()
    rows = []
    for cell in args.cells.split(","):
        for B, T, H, L in map(parse_config, args.configs.split(",")):
            times = in_processes(cell, (B, T, H, L), args)
            stack = rnnkit.Stack(H, [H] * L, cell=cell)
            x = torch.randn(B, T, H, requires_grad=True)
            for mode in ("train", "infer"):
                with torch.set_grad_enabled(mode == "train"):
                    path = rnnkit.recurrence.choose_path(stack.layers[0].cell, x=x).name
                t = times[mode]
                row = dict(cell=cell, config=f"({B}, {T}, {H}) x{L}", mode=mode,
                           rnnkit=B * T / median(t["rnnkit"]), torch=B * T / median(t["torch.nn"]),
                           ratio=paired_ratio(t["torch.nn"], t["rnnkit"]), path=path)
                if "rnnkit-cpp" in t:
                    row["cpp"] = paired_ratio(t["torch.nn"], t["rnnkit-cpp"])
                rows.append(row)
                print(f"{cell} {(B, T, H, L)} {mode}: {row['ratio']:.2f}x", flush=True)
    from rnnkit import _compiled
    print(f"\nMachine: {info['cpu']} ({info['cpu_flags']}), {info['logical_cpus']} logical CPUs; rnnkit built with "
          f"-march={os.environ.get('RNNKIT_MARCH', 'native')} (GEMM kernel: {_compiled.isa()}); torch "
          f"{info['torch']}, {args.threads} threads; load {info['load_avg_1m']} -> {round(os.getloadavg()[0], 2)}\n")
    print(table(rows, [("cell", "cell", "s"), ("config", "(B, T, H) x layers", "s"), ("mode", "mode", "s"),
                       ("rnnkit", "rnnkit tok/s", ",.0f"), ("torch", "torch.nn tok/s", ",.0f"),
                       ("ratio", "rnnkit vs torch.nn", ".2f"), ("cpp", "C++ loop vs torch.nn", ".2f"),
                       ("path", "rnnkit path", "s")]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
