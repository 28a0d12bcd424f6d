"""Write JSONL manifests for the Free Spoken Digit Dataset (recordings/{digit}_{speaker}_{take}.wav).

    python bench/fsdd_manifests.py ../shared/datasets/fsdd/recordings runs/data/fsdd
        -> official_train.jsonl (takes 5-49, 2,700), official_test.jsonl (takes 0-4, 300),
           loso_<speaker>_train.jsonl / loso_<speaker>_test.jsonl (leave one speaker out, 6 folds)

Each line is {"path": ..., "label": "<digit>"}, the path relative to the manifest's folder
(as data.format audio reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


def recordings(folder: Path) -> list[tuple[str, str, int, Path]]:
    out = []
    for p in sorted(folder.iterdir()):
        m = NAME.match(p.name)
        if m:
            out.append((m.group(1), m.group(2), int(m.group(3)), p))
    if not out:
        sys.exit(f"{folder}: no {{digit}}_{{speaker}}_{{take}}.wav recordings")
    return out


def write(path: Path, rows: list) -> None:
    with path.open("w", encoding="utf-8") as f:
        for digit, _, _, wav in rows:
            f.write(json.dumps({"path": os.path.relpath(wav.resolve(), path.parent.resolve()), "label": digit}) + "\n")
    print(f"{path}: {len(rows)} utterances")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recordings", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    rows = recordings(args.recordings)
    args.out.mkdir(parents=True, exist_ok=True)
    write(args.out / "official_train.jsonl", [r for r in rows if r[2] >= 5])
    write(args.out / "official_test.jsonl", [r for r in rows if r[2] < 5])
    for speaker in sorted({r[1] for r in rows}):
        write(args.out / f"loso_{speaker}_train.jsonl", [r for r in rows if r[1] != speaker])
        write(args.out / f"loso_{speaker}_test.jsonl", [r for r in rows if r[1] == speaker])


if __name__ == "__main__":
    main()
