"""Unidirectional layers on rnnkit's default paths against torch.nn, training step, one run.

    python bench/unidirectional.py
    python bench/unidirectional.py --configs 32x50x128,64x100x256x2 --cells gru --rounds 7

``rnnkit.Stack(H, [H]*L, cell=...)`` (one direction: a language model's or decoder's
encoder) against its ``to_torch()`` twin with the same weights; training step = forward,
backward (loss = mean of the output, the input requires grad) and an Adam step. Timed
interleaved in rounds (common.interleaved); the ratio is paired per round, then the median.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from common import interleaved, machine, median, paired_ratio, table  # noqa: E402

import rnnkit  # noqa: E402

CONFIGS = "32x50x128,64x100x256x2,16x500x64,64x35x512x2"


def parse_config(text: str) -> tuple[int, int, int, int]:
    parts = [int(v) for v in text.lower().split("x")]
    if len(parts) not in (3, 4) or min(parts) < 1:
        raise SystemExit(f"--configs: {text!r} is not BxTxH or BxTxHxLAYERS with positive integers")
    return (*parts, 1)[:4] if len(parts) == 3 else tuple(parts)


def training_step(model, x):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        model(x)[0].mean().backward()
        opt.step()
    return step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default=CONFIGS, help="comma-separated BxTxH[xLAYERS] (D = H); default %(default)s")
    p.add_argument("--cells", default="gru,lstm")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--target", type=float, default=0.2, help="seconds per timed round")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    rows = []
    for cell in args.cells.split(","):
        for B, T, H, L in map(parse_config, args.configs.split(",")):
            torch.manual_seed(0)
            stack = rnnkit.Stack(H, [H] * L, cell=cell)
            twin = stack.to_torch()
            x = torch.randn(B, T, H, requires_grad=True)
            times = interleaved({"rnnkit": training_step(stack, x), "torch.nn": training_step(twin, x)},
                                rounds=args.rounds, target=args.target)
            rows.append(dict(cell=cell, config=f"({B}, {T}, {H}) x{L}",
                             rnnkit=B * T / median(times["rnnkit"]), torch=B * T / median(times["torch.nn"]),
                             ratio=paired_ratio(times["torch.nn"], times["rnnkit"]), path=stack.paths[0].name))
            print(f"{cell} {(B, T, H, L)}: {rows[-1]['ratio']:.2f}x", flush=True)
    print(f"\nMachine: {info['cpu']} ({info['cpu_flags']}), {info['logical_cpus']} logical CPUs, torch "
          f"{info['torch']}, {args.threads} threads; load {info['load_avg_1m']} -> {round(os.getloadavg()[0], 2)}\n")
    print(table(rows, [("cell", "cell", "s"), ("config", "(B, T, H) x layers", "s"),
                       ("rnnkit", "rnnkit train tok/s", ",.0f"), ("torch", "torch.nn train tok/s", ",.0f"),
                       ("ratio", "ratio", ".2f"), ("path", "rnnkit path", "s")]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
