"""Per-step cost of a small-batch training step, and what the fused optimizer takes off it.

    python bench/step_overhead.py [--batches 8 16 32 64] [--steps 30] [--threads 1] [--profile 16]

The model is the held-out NER trial's (issue #13): a word + character BiLSTM-CRF tagger
(vocabulary 20,000 x 100, characters 80 x 25 through a BiLSTM of 25, a word BiLSTM of 200,
9 tags with a CRF, dropout 0.5), trained on random sentences of 5-30 words of up to 12
characters. For each batch size it times the same steps (forward, backward, clipping, update)
with the optimizer as rnnkit builds it (``build_optimizer``: torch's fused Adam) and with
torch's default Adam on the CPU (a loop of small ops per parameter), alternating the two so
that both see the same load, and prints tokens/s and ms/step for each and their ratio.
``--profile B`` prints torch.profiler's table of one batch size (the rows that add up).
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from rnnkit.models import SequenceTagger
from rnnkit.training.options import TrainerConfig
from rnnkit.training.trainer import build_optimizer

V, C, K, WORD_CHARS = 20_000, 80, 9, 12


def model() -> SequenceTagger:
    torch.manual_seed(0)
    return SequenceTagger(vocab_size=V, num_tags=K, embedding_dim=100, output="crf",
                          encoder={"cell": "lstm", "hidden_sizes": [200], "bidirectional": True},
                          char_vocab_size=C, char_embedding_dim=25, char_hidden_size=25, dropout=0.5)


def batches(B: int, n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        lengths = torch.tensor(sorted((rng.randint(5, 30) for _ in range(B)), reverse=True))
        T = int(lengths.max())
        pad = torch.arange(T)[None] >= lengths[:, None]
        words = torch.randint(1, V, (B, T), generator=g).masked_fill(pad, 0)
        chars = torch.randint(1, C, (B, T, WORD_CHARS), generator=g).masked_fill(pad[..., None], 0)
        labels = torch.randint(0, K, (B, T), generator=g).masked_fill(pad, -100)
        out.append({"inputs": words, "lengths": lengths, "chars": chars, "labels": labels})
    return out


def step(m, opt, batch) -> None:
    opt.zero_grad(set_to_none=True)
    m.loss(batch).backward()
    torch.nn.utils.clip_grad_norm_(m.parameters(), 5.0)
    opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--steps", type=int, default=30, help="timed steps per batch size and optimizer")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", type=int, default=None, metavar="B")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TrainerConfig(optimizer={"name": "adam", "lr": 1e-3})
    print(f"torch {torch.__version__}, {args.threads} thread(s); tokens/s (ms/step), {args.steps} steps each")
    print("| batch | rnnkit (fused Adam) | torch.optim.Adam default | ratio |")
    print("|---|---|---|---|")
    for B in args.batches:
        data = batches(B, args.steps)
        tokens = sum(int(b["lengths"].sum()) for b in data)
        runs = {}
        for name in ("fused", "loop"):
            m = model()
            opt = build_optimizer(m, cfg) if name == "fused" else torch.optim.Adam(m.parameters(), lr=1e-3)
            for b in data[:3]:  # warm-up: the compiled loop's probe, allocator, first-step state
                step(m, opt, b)
            runs[name] = (m, opt)
        seconds = {"fused": 0.0, "loop": 0.0}
        for b in data:  # alternate, so a change of load hits both
            for name, (m, opt) in runs.items():
                t = time.perf_counter()
                step(m, opt, b)
                seconds[name] += time.perf_counter() - t
        f, l = (tokens / seconds[k] for k in ("fused", "loop"))
        print(f"| {B} | {f:,.0f} ({1e3 * seconds['fused'] / len(data):.1f}) | "
              f"{l:,.0f} ({1e3 * seconds['loop'] / len(data):.1f}) | {f / l:.2f}x |")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        m = model()
        opt = build_optimizer(m, cfg)
        data = batches(args.profile, args.steps)
        for b in data[:3]:
            step(m, opt, b)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for b in data:
                step(m, opt, b)
        print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
