"""rnnkit's recurrent layers against raw torch.nn, in one run.

    python bench/layers.py                      # full table (a few minutes on 2 cores)
    python bench/layers.py --quick              # fewer rounds, first config only
    python bench/layers.py --configs 32x50x128x1,16x500x64x1 --cells gru --json out.json

For each cell (GRU, LSTM) and configuration (B, T, D=H, layers), bidirectional:

* **base** -- ``rnnkit.Stack(..., bidirectional=True)`` against ``torch.nn.GRU/LSTM(...,
  bidirectional=True, num_layers=L)`` with the same weights, with and without padding. With
  padding, lengths are random in [T/4, T] (the longest = T); rnnkit gets ``lengths=`` and
  torch.nn a packed sequence (``pack_padded_sequence`` in, ``pad_packed_sequence`` out), so
  both sides do the same work.
* **variants** -- rnnkit configurations torch.nn cannot express, against torch's plain fused
  layer of the same size (no padding): layer-norm cells, residual + layer norm between layers,
  recurrent dropout, and the sum / mean / mul merges.

Training = forward + backward (loss = mean of the output; the input requires grad, as below
an embedding) + Adam step; inference = eval-mode forward under ``torch.no_grad()``. Tokens/s
count real (non-padded) tokens. Next to each ratio, "best/best" is the best round of torch.nn over
the best round of rnnkit: less sensitive to other processes' bursts on a shared machine. Implementations are timed interleaved, several rounds each,
and the median is reported (see ``common.interleaved``); ratios are rnnkit / torch.nn tokens/s, taken
within each round and then the median over rounds (robust to load that changes between rounds).
Each measurement runs in ``--processes`` fresh processes (3 by default), rounds pooled: torch's
oneDNN LSTM runs at one of two speeds, about 2x apart, fixed per process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import rnnkit  # noqa: E402
from common import (in_fresh_processes, interleaved, machine, median, paired_ratio,  # noqa: E402
                    pool_rounds, table)

CONFIGS = ["32x50x128x1", "64x100x256x2", "16x500x64x1"]
VARIANTS = {
    "layer-norm cells": dict(cell_layer_norm=True),
    "residual + layer_norm": dict(residual=True, layer_norm=True),
    "recurrent dropout 0.25": dict(recurrent_dropout=0.25),
    "merge=sum": dict(merge="sum"),
    "merge=mean": dict(merge="mean"),
    "merge=mul": dict(merge="mul"),
}


def parse_config(text: str) -> tuple[int, int, int, int]:
    parts = [int(p) for p in text.lower().split("x")]
    if len(parts) == 3:
        parts.append(1)
    if len(parts) != 4:
        raise SystemExit(f"--configs entries are BxTxH or BxTxHxLAYERS; got {text!r}")
    return tuple(parts)


# --------------------------------------------------------------------------- step makers

def rnnkit_steps(model: nn.Module, x: torch.Tensor, lengths: torch.Tensor | None):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train():
        model.train()
        opt.zero_grad(set_to_none=True)
        x.grad = None
        out, _ = model(x, lengths=lengths)
        out.mean().backward()
        opt.step()

    def infer():
        model.eval()
        with torch.no_grad():
            model(x, lengths=lengths)

    return train, infer


def torch_steps(module: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor | None):
    opt = torch.optim.Adam(module.parameters(), lr=1e-4)
    T = x.shape[1]

    def forward():
        if lengths is None:
            return module(x)[0]
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(module(packed)[0], batch_first=True, total_length=T)
        return out

    def train():
        module.train()
        opt.zero_grad(set_to_none=True)
        x.grad = None
        forward().mean().backward()
        opt.step()

    def infer():
        module.eval()
        with torch.no_grad():
            forward()

    return train, infer


def torch_module(cell: str, H: int, L: int) -> nn.RNNBase:
    cls = nn.GRU if cell == "gru" else nn.LSTM
    return cls(H, H, num_layers=L, bidirectional=True, batch_first=True)


# ------------------------------------------------------------------------------- the run

def time_rounds(impls: dict[str, tuple], args) -> dict[str, dict[str, list[float]]]:
    """{mode: {name: seconds per call in each round}}, interleaved rounds in this process."""
    return {mode: interleaved({name: fns[k] for name, fns in impls.items()},
                              rounds=args.rounds, target=args.target, warmup=args.warmup)
            for mode, k in (("train", 0), ("infer", 1))}


def timed(job: dict, impls: dict[str, tuple], args) -> dict[str, dict[str, list[float]]]:
    """``time_rounds`` of the implementations ``job`` describes, in ``args.processes`` fresh
    processes (each builds them again from ``job``), the rounds pooled; in this process when
    1 (common.in_fresh_processes says why)."""
    if args.processes <= 1:
        return time_rounds(impls, args)
    job = dict(job, rounds=args.rounds, target=args.target, warmup=args.warmup, threads=args.threads,
               compiled=args.compiled)
    return pool_rounds(in_fresh_processes(__file__, job, args.processes))


def measure(times: dict[str, dict[str, list[float]]], tokens: int) -> dict[str, dict[str, float]]:
    """times: {mode: {name: rounds}}; names starting with "torch" are baselines. Returns
    name -> {train_tps, infer_tps, and per baseline "train_ratio<suffix>", "infer_ratio<suffix>"},
    the ratios paired per round (see common); for a baseline named "torch" the suffix is ""."""
    result = {name: {} for name in times["train"]}
    for mode, by_name in times.items():
        for name, samples in by_name.items():
            result[name][f"{mode}_tps"] = tokens / median(samples)
            for base in (b for b in by_name if b.startswith("torch")):
                suffix = base[len('torch'):]
                result[name][f"{mode}_ratio{suffix}"] = paired_ratio(by_name[base], samples)
                # best round against best round: what each does when the machine leaves it alone
                result[name][f"{mode}_best{suffix}"] = min(by_name[base]) / min(samples)
    return result


def base_impls(cell: str, cfg, padded: bool):
    B, T, H, L = cfg
    torch.manual_seed(0)
    stack = rnnkit.Stack(H, [H] * L, cell=cell, bidirectional=True)
    module = stack.to_torch()
    x = torch.randn(B, T, H, requires_grad=True)
    lengths = None
    if padded:
        lengths = torch.randint(max(1, T // 4), T + 1, (B,))
        lengths[0] = T
    tokens = int(lengths.sum()) if padded else B * T
    return {"rnnkit": rnnkit_steps(stack, x, lengths), "torch": torch_steps(module, x, lengths)}, tokens, stack


def first_layer_path(stack, x: torch.Tensor, lengths, *, train: bool) -> str:
    """The path the stack's first layer takes for this input in this mode (the forward
    direction), with the batch size the LSTM routing rule reads; ``Stack.paths`` has no input."""
    from rnnkit import recurrence
    layer = stack.layers[0]
    stack.train(train)
    fw, bw = layer.forward_layer, layer.backward_layer
    padded = lengths is not None and bool((lengths < x.shape[1]).any())
    with torch.set_grad_enabled(train):
        paths = recurrence.bidirectional_paths(
            fw.cell, bw.cell, recurrent_dropout=(fw.recurrent_dropout, bw.recurrent_dropout), training=train,
            padded=padded, x=x, recompute_chunk=(fw.recompute_chunk, bw.recompute_chunk))
    return str(paths.forward)


def bench_base(cell: str, cfg, padded: bool, args) -> dict:
    B, T, H, L = cfg
    impls, tokens, stack = base_impls(cell, cfg, padded)
    r = measure(timed(dict(kind="base", cell=cell, cfg=list(cfg), padded=padded), impls, args), tokens)
    x = torch.randn(B, T, H)
    lengths = torch.randint(max(1, T // 4), T + 1, (B,)) if padded else None
    path = (f"train: {first_layer_path(stack, x, lengths, train=True)}; "
            f"infer: {first_layer_path(stack, x, lengths, train=False)}")
    return dict(cell=cell, config=f"({B}, {T}, {H}) x{L}", padding="yes" if padded else "no",
                path=str(path),
                **{f"{impl}_{k}": v for impl, d in r.items() for k, v in d.items()},
                train_ratio=r["rnnkit"]["train_ratio"], infer_ratio=r["rnnkit"]["infer_ratio"],
                train_best=r["rnnkit"]["train_best"], infer_best=r["rnnkit"]["infer_best"])


def variant_impls(cell: str, cfg, names: list[str]):
    B, T, H, L = cfg
    torch.manual_seed(0)
    x = torch.randn(B, T, H, requires_grad=True)
    depth = {name: max(L, 2) if VARIANTS[name].get("residual") else L for name in names}
    impls = {f"torch x{d}": torch_steps(torch_module(cell, H, d), x, None) for d in sorted(set(depth.values()))}
    stacks = {}
    for name in names:
        stacks[name] = rnnkit.Stack(H, [H] * depth[name], cell=cell, bidirectional=True, **VARIANTS[name])
        impls[name] = rnnkit_steps(stacks[name], x, None)
    return impls, stacks, depth


def bench_variants(cell: str, cfg, names: list[str], args) -> list[dict]:
    """Variants against torch's plain bidirectional layer with as many layers: a residual only
    starts at the second layer, so that variant gets two layers (and a two-layer baseline)."""
    B, T, H, L = cfg
    impls, stacks, depth = variant_impls(cell, cfg, names)
    r = measure(timed(dict(kind="variants", cell=cell, cfg=list(cfg), names=names), impls, args), B * T)
    rows = []
    x = torch.randn(B, T, H)
    for name in names:
        train_path = first_layer_path(stacks[name], x, None, train=True)
        infer_path = first_layer_path(stacks[name], x, None, train=False)
        base = r[f"torch x{depth[name]}"]
        rows.append(dict(cell=cell, config=f"({B}, {T}, {H}) x{depth[name]}", variant=name,
                         path=f"train: {train_path}; infer: {infer_path}",
                         rnnkit_train_tps=r[name]["train_tps"], rnnkit_infer_tps=r[name]["infer_tps"],
                         torch_train_tps=base["train_tps"], torch_infer_tps=base["infer_tps"],
                         train_ratio=r[name][f"train_ratio x{depth[name]}"],
                         infer_ratio=r[name][f"infer_ratio x{depth[name]}"],
                         train_best=r[name][f"train_best x{depth[name]}"],
                         infer_best=r[name][f"infer_best x{depth[name]}"]))
    return rows


BASE_COLUMNS = [("cell", "cell", "s"), ("config", "(B, T, H) x layers", "s"), ("padding", "padding", "s"),
                ("rnnkit_train_tps", "rnnkit train tok/s", ",.0f"), ("torch_train_tps", "torch.nn train tok/s", ",.0f"),
                ("train_ratio", "train ratio", ".2f"), ("train_best", "best/best", ".2f"),
                ("rnnkit_infer_tps", "rnnkit infer tok/s", ",.0f"), ("torch_infer_tps", "torch.nn infer tok/s", ",.0f"),
                ("infer_ratio", "infer ratio", ".2f"), ("infer_best", "best/best", ".2f"), ("path", "rnnkit path", "s")]
VARIANT_COLUMNS = [("cell", "cell", "s"), ("config", "(B, T, H) x layers", "s"), ("variant", "variant", "s"),
                   ("rnnkit_train_tps", "rnnkit train tok/s", ",.0f"), ("torch_train_tps", "torch.nn train tok/s", ",.0f"),
                   ("train_ratio", "train ratio", ".2f"), ("train_best", "best/best", ".2f"),
                   ("rnnkit_infer_tps", "rnnkit infer tok/s", ",.0f"), ("torch_infer_tps", "torch.nn infer tok/s", ",.0f"),
                   ("infer_ratio", "infer ratio", ".2f"), ("infer_best", "best/best", ".2f"), ("path", "rnnkit path", "s")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help="comma-separated BxTxH[xLAYERS] (D = H); default %(default)s")
    p.add_argument("--cells", default="gru,lstm", help="comma-separated: gru, lstm")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="comma-separated variant names, or 'none'; default all")
    p.add_argument("--no-base", action="store_true", help="skip the rnnkit vs torch.nn base table")
    paths = p.add_mutually_exclusive_group()
    paths.add_argument("--compiled", action="store_true",
                       help="rnnkit layers take the compiled path where it applies (the default since "
                            "it became rnnkit's default; kept for the recorded commands)")
    paths.add_argument("--pure", action="store_true",
                       help="compiled path off (recurrence.set_compiled(False)): torch's fused "
                            "kernels and the Python loop, as in the runs recorded before it was the default")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--rounds", type=int, default=11, help="timed rounds per implementation (median)")
    p.add_argument("--target", type=float, default=0.15, help="seconds per timed round")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls first")
    p.add_argument("--quick", action="store_true", help="5 rounds of 0.1 s, first config only")
    p.add_argument("--json", help="also write all rows and the machine record to this file")
    p.add_argument("--processes", type=int, default=3,
                   help="fresh processes per measurement, rounds pooled (1: time in this one)")
    p.add_argument("--time-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.time_worker:
        job = json.loads(args.time_worker)
        args.rounds, args.target, args.warmup = job["rounds"], job["target"], job["warmup"]
        torch.set_num_threads(job["threads"])
        from rnnkit import recurrence
        recurrence.set_compiled(job["compiled"])
        if job["kind"] == "base":
            impls = base_impls(job["cell"], tuple(job["cfg"]), job["padded"])[0]
        else:
            impls = variant_impls(job["cell"], tuple(job["cfg"]), job["names"])[0]
        print(json.dumps(time_rounds(impls, args)))
        return 0
    if args.quick:
        args.rounds, args.target = 5, 0.1
        args.configs = args.configs.split(",")[0]
    torch.set_num_threads(args.threads)
    from rnnkit import recurrence
    recurrence.set_compiled(not args.pure)
    args.compiled = not args.pure
    configs = [parse_config(c) for c in args.configs.split(",")]
    cells = args.cells.split(",")
    variants = [] if args.variants == "none" else args.variants.split(",")
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"--variants: unknown {v!r}; choose from {', '.join(VARIANTS)}")
    info = machine()
    print(f"machine: {info}", flush=True)
    base, var = [], []
    for cell in cells:
        for cfg in configs:
            if not args.no_base:
                for padded in (False, True):
                    row = bench_base(cell, cfg, padded, args)
                    base.append(row)
                    print(f"base {cell} {row['config']} pad={row['padding']}: train {row['train_ratio']:.2f}x "
                          f"infer {row['infer_ratio']:.2f}x", flush=True)
            if variants:
                for row in bench_variants(cell, cfg, variants, args):
                    var.append(row)
                    print(f"variant {cell} {row['config']} {row['variant']}: train {row['train_ratio']:.2f}x "
                          f"infer {row['infer_ratio']:.2f}x", flush=True)
    info["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    print()
    print(f"Machine: {info['cpu']} ({info['cpu_flags']}), {info['logical_cpus']} logical CPUs, "
          f"torch {info['torch']}, {info['torch_threads']} threads, load {info['load_avg_1m']} -> "
          f"{info['load_avg_1m_end']}; rnnkit compiled path {'on' if args.compiled else 'off'}")
    if base:
        print("\nrnnkit vs torch.nn (same weights; ratio = rnnkit / torch.nn tokens/s)\n")
        print(table(base, BASE_COLUMNS))
    if var:
        print("\nrnnkit variants vs torch's plain fused bidirectional layer of the same size\n")
        print(table(var, VARIANT_COLUMNS))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "args": vars(args), "base": base, "variants": var}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
