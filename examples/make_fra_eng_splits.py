"""Held-out splits of the Tatoeba English-French pairs (manythings.org's fra.txt) for
examples/fra_eng.yaml: one seeded draw, the same whatever seed a training run uses, so that
runs with different seeds are scored on the same test sentences.

    python examples/make_fra_eng_splits.py [--pairs ../shared/datasets/fra_eng/fra.txt]
        [--out runs/data/fra_eng] [--dev 0.01] [--test 0.02] [--seed 0] [--short 10]

Writes OUT/train.txt, OUT/dev.txt, OUT/test.txt (lines copied as they are: the 2-column d2l
file and the newer 3-column export with attribution both work) and OUT/test_short.txt, the
test pairs whose English side has at most --short words (whitespace-separated), which issue
#13 scores on its own:

    rnnkit evaluate runs/fra_eng/best runs/data/fra_eng/test_short.txt

The file is sorted by length, so the draw is a seeded random one, not a cut. Tatoeba repeats
an English sentence with several translations; a pair whose English side is in test or dev is
kept out of train, so that no test source is seen in training.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", default="../shared/datasets/fra_eng/fra.txt", help="source TAB target [TAB ...] per line")
    ap.add_argument("--out", default="runs/data/fra_eng", help="output folder")
    ap.add_argument("--dev", type=float, default=0.01, help="share of English sentences in dev")
    ap.add_argument("--test", type=float, default=0.02, help="share of English sentences in test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--short", type=int, default=10, help="test_short.txt: English side of at most this many words")
    args = ap.parse_args(argv)
    if not (0 < args.dev < 1 and 0 < args.test < 1 and args.dev + args.test < 1):
        sys.exit(f"--dev ({args.dev}) and --test ({args.test}) must be shares in (0, 1) summing below 1")
    path = Path(args.pairs)
    if not path.is_file():
        sys.exit(f"{path}: no such file (the Tatoeba pairs; see ../shared/datasets/fra_eng/SOURCE.md)")
    by_source: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) < 2:
                sys.exit(f"{path}:{n}: expected source TAB target, found {len(cols)} column(s)")
            by_source.setdefault(cols[0], []).append(line)
    sources = sorted(by_source)
    random.Random(args.seed).shuffle(sources)
    n_test, n_dev = round(len(sources) * args.test), round(len(sources) * args.dev)
    split = {"test": sources[:n_test], "dev": sources[n_test:n_test + n_dev], "train": sources[n_test + n_dev:]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, keys in split.items():
        lines = [line for key in keys for line in by_source[key]]
        (out / f"{name}.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        print(f"{out / name}.txt: {len(lines):,} pairs ({len(keys):,} English sentences)")
    short = [line for key in split["test"] if len(key.split()) <= args.short for line in by_source[key]]
    (out / "test_short.txt").write_text("".join(line + "\n" for line in short), encoding="utf-8")
    print(f"{out / 'test_short.txt'}: {len(short):,} test pairs with at most {args.short} English words")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
