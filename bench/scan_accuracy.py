"""Accuracy of a bidirectional minGRU / minLSTM against a bidirectional GRU on JapaneseVowels.

JapaneseVowels (UEA, 270 train / 370 test series of 12 LPC channels, 7-29 steps, 9 speakers).
Each model: rnnkit.Stack(12, [H], cell=..., bidirectional=True) -> masked mean over time (or
the two directions' final states) -> Linear(2H, 9). Same seed, data order, optimiser and number
of epochs for every cell; the test set is only scored after the last epoch (no selection on it).

    .venv/bin/python bench/scan_accuracy.py                    # 5 seeds, gru vs mingru vs minlstm
    .venv/bin/python bench/scan_accuracy.py --seeds 0 --cells gru mingru
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import rnnkit

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "japanese_vowels"


def read_ts(path: Path) -> tuple[list[torch.Tensor], list[str]]:
    """A UEA .ts file -> (series (T, channels) each, labels). Only what JapaneseVowels uses."""
    series, labels, in_data = [], [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            in_data = line.lower() == "@data"
            continue
        *channels, label = line.split(":")
        try:
            values = [[float(v) for v in channel.split(",")] for channel in channels]
        except ValueError as err:
            raise ValueError(f"{path}:{number}: {err}") from None
        if len({len(v) for v in values}) != 1:
            raise ValueError(f"{path}:{number}: channels have different lengths")
        series.append(torch.tensor(values).T)  # (T, channels)
        labels.append(label)
    return series, labels


def pad(series: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in series])
    x = torch.zeros(len(series), int(lengths.max()), series[0].shape[1])
    for i, s in enumerate(series):
        x[i, :len(s)] = s
    return x, lengths


class Classifier(nn.Module):
    def __init__(self, cell: str, D: int, H: int, K: int, pool: str) -> None:
        super().__init__()
        self.rnn = rnnkit.Stack(D, [H], cell=cell, bidirectional=True)
        self.out = nn.Linear(self.rnn.output_size, K)
        self.pool = pool

    def forward(self, x, lengths):
        y, states = self.rnn(x, lengths=lengths)  # (B, T, 2H), zero at padding
        if self.pool == "mean":
            pooled = y.sum(1) / lengths[:, None].to(y.dtype)
        else:  # forward state after the last token, backward state after the first
            pooled = torch.cat([states[-1].forward, states[-1].backward], dim=-1)
        return self.out(pooled)


def run(cell: str, seed: int, data, args) -> tuple[float, float]:
    (x_tr, l_tr, y_tr), (x_te, l_te, y_te) = data
    torch.manual_seed(seed)
    model = Classifier(cell, x_tr.shape[2], args.hidden, int(y_tr.max()) + 1, args.pool)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    order = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(y_tr), generator=order).split(args.batch):
            T = int(l_tr[idx].max())
            loss = F.cross_entropy(model(x_tr[idx, :T], l_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_te, l_te).argmax(-1) == y_te).float().mean().item()
    return accuracy, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder with JapaneseVowels_{TRAIN,TEST}.ts")
    parser.add_argument("--cells", nargs="+", default=["gru", "mingru", "minlstm"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--pool", choices=["mean", "last"], default="mean")
    parser.add_argument("--threads", type=int, default=1,
                        help="1: these tiny batches gain nothing from more, and shared cores punish them")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    train, train_labels = read_ts(args.data / "JapaneseVowels_TRAIN.ts")
    test, test_labels = read_ts(args.data / "JapaneseVowels_TEST.ts")
    classes = sorted(set(train_labels))
    # Standardise each channel with training statistics over real (unpadded) steps.
    steps = torch.cat(train)
    mean, std = steps.mean(0), steps.std(0)
    data = []
    for series, labels in ((train, train_labels), (test, test_labels)):
        x, lengths = pad([(s - mean) / std for s in series])
        data.append((x * (torch.arange(x.shape[1])[None, :, None] < lengths[:, None, None]),
                     lengths, torch.tensor([classes.index(c) for c in labels])))
    print(f"JapaneseVowels: {len(train)} train / {len(test)} test, {len(classes)} classes; "
          f"H={args.hidden}, epochs={args.epochs}, batch={args.batch}, lr={args.lr}, pool={args.pool}")
    results = {cell: [] for cell in args.cells}
    for seed in args.seeds:
        for cell in args.cells:  # interleaved, so load from other processes hits all cells alike
            accuracy, seconds = run(cell, seed, data, args)
            results[cell].append(accuracy)
            print(f"seed {seed} {cell:8s} test accuracy {100 * accuracy:.2f}%  ({seconds:.1f} s training)",
                  flush=True)
    print("\n| cell | test accuracy, mean over seeds | std | per seed |")
    print("|---|---:|---:|---|")
    for cell, accs in results.items():
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"| Bi-{cell} | {100 * statistics.mean(accs):.2f}% | {100 * std:.2f} | "
              f"{', '.join(f'{100 * a:.1f}' for a in accs)} |")


if __name__ == "__main__":
    main()
