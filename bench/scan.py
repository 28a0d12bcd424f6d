"""Training speed of bidirectional minGRU / minLSTM against torch.nn.GRU(bidirectional=True).

One training step = forward + backward + Adam update of a one-layer bidirectional network with
input size D = H on random data (B, T, D); loss = mean of squared outputs. All models and shapes
are timed in one run, interleaved (every repeat times each model once, in turn, at each thread
count), so a burst of load from other processes hits all of them alike; the tables report
medians and the load average before and after.

    .venv/bin/python bench/scan.py                       # the three shapes of docs/benchmarks.md, section 3
    .venv/bin/python bench/scan.py --shapes 16,500,64 --repeats 5 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

from rnnkit import Bidirectional
from rnnkit.scan import MinGRU, MinLSTM

SHAPES = ((16, 500, 64), (16, 2000, 64), (32, 50, 128))


class TorchGRU(nn.Module):
    def __init__(self, H: int) -> None:
        super().__init__()
        self.rnn = nn.GRU(H, H, batch_first=True, bidirectional=True)

    def forward(self, x):
        return self.rnn(x)[0]


class Scan(nn.Module):
    def __init__(self, cls, H: int, scan: str) -> None:
        super().__init__()
        self.bi = Bidirectional(cls(H, H, scan=scan))

    def forward(self, x):
        return self.bi(x)[0]


MODELS = {
    "torch.nn.GRU": lambda H: TorchGRU(H),
    "MinGRU chunked": lambda H: Scan(MinGRU, H, "chunked"),
    "MinLSTM chunked": lambda H: Scan(MinLSTM, H, "chunked"),
    "MinGRU log": lambda H: Scan(MinGRU, H, "log"),
    "MinLSTM log": lambda H: Scan(MinLSTM, H, "log"),
}


def train_step(model, opt, x) -> float:
    start = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = model(x).square().mean()
    loss.backward()
    opt.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=[",".join(map(str, s)) for s in SHAPES],
                        help="B,T,H triples")
    parser.add_argument("--repeats", type=int, default=9, help="timed steps per model and shape")
    parser.add_argument("--threads", nargs="+", type=int, default=[2, 1],
                        help="intra-op thread counts, each timed (interleaved) in its own table")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    torch.manual_seed(0)
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes]
    runs = {}
    for B, T, H in shapes:
        x = torch.randn(B, T, H)
        for name in args.models:
            model = MODELS[name](H)
            opt = torch.optim.Adam(model.parameters(), 1e-3)
            for threads in args.threads:
                runs[threads, (B, T, H), name] = (model, opt, x, [])
    load_before = os.getloadavg()
    for (threads, *_), (model, opt, x, _) in runs.items():  # warm-up: allocator, Adam state
        torch.set_num_threads(threads)
        train_step(model, opt, x)
    for _ in range(args.repeats):
        for (threads, *_), (model, opt, x, times) in runs.items():
            torch.set_num_threads(threads)
            times.append(train_step(model, opt, x))
    load_after = os.getloadavg()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs; median of {args.repeats} interleaved "
          f"training steps (forward + backward + Adam), bidirectional, D = H; load average "
          f"(1/5/15 min) before {'/'.join(f'{v:.1f}' for v in load_before)}, after "
          f"{'/'.join(f'{v:.1f}' for v in load_after)}")
    for threads in args.threads:
        print(f"\ntorch.set_num_threads({threads})\n")
        print("| B, T, H | model | ms / step | tokens / s | x torch.nn.GRU |")
        print("|---|---|---:|---:|---:|")
        for B, T, H in shapes:
            base = runs.get((threads, (B, T, H), "torch.nn.GRU"))
            base = statistics.median(base[3]) if base else None
            for name in args.models:
                t = statistics.median(runs[threads, (B, T, H), name][3])
                ratio = f"{base / t:.1f}x" if base else "-"
                print(f"| {B}, {T}, {H} | {name} | {t * 1e3:.1f} | {B * T / t:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
