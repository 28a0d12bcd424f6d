"""Digit strings from the Free Spoken Digit Dataset: each utterance 3-7 recordings of one speaker
joined with random silence (0.05-0.4 s, faint noise), for CTC (examples/fsdd_strings.yaml).
Built from the official split: training strings use takes 5-49 only, test strings takes 0-4
only, so no recording is heard in both.

    python bench/fsdd_strings.py ../shared/datasets/fsdd/recordings runs/data/fsdd_strings
        -> train.jsonl (3,000 strings), test.jsonl (500), wav/*.wav; {"path", "transcript": "40715"}

Seeded (--seed); one speaker per string, as one person says a phone number.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf

NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")
SR = 8000


def build(pool: dict, n: int, rng, out: Path, prefix: str) -> list[dict]:
    speakers = sorted(pool)
    rows = []
    for i in range(n):
        speaker = speakers[rng.integers(len(speakers))]
        files = pool[speaker]
        k = int(rng.integers(3, 8))
        chosen = [files[j] for j in rng.integers(len(files), size=k)]
        parts, digits = [], ""
        for digit, path in chosen:
            x, rate = sf.read(path, dtype="float32")
            if rate != SR:
                raise SystemExit(f"{path}: sample rate {rate}, expected {SR}")
            parts += [silence(rng), x]
            digits += digit
        parts.append(silence(rng))
        name = f"wav/{prefix}_{i:05d}.wav"
        sf.write(out / name, np.concatenate(parts), SR)
        rows.append({"path": name, "transcript": digits})
    return rows


def silence(rng) -> np.ndarray:
    n = int(SR * rng.uniform(0.05, 0.4))
    return (1e-3 * rng.standard_normal(n)).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recordings", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    train, test = defaultdict(list), defaultdict(list)
    for p in sorted(args.recordings.iterdir()):
        m = NAME.match(p.name)
        if m:
            (test if int(m.group(3)) < 5 else train)[m.group(2)].append((m.group(1), p))
    (args.out / "wav").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for name, pool, n in (("train", train, args.train), ("test", test, args.test)):
        rows = build(pool, n, rng, args.out, name)
        (args.out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{args.out / name}.jsonl: {len(rows)} strings, {sum(len(r['transcript']) for r in rows)} digits")


if __name__ == "__main__":
    main()
