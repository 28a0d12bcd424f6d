"""One whole training epoch, streamed, over a generated 2 GB CoNLL file (issue #15's test).

    python bench/streaming_epoch.py [--gb 2] [--dir /tmp/rnnkit_epoch]

Writes the file as ``bench/streaming.py`` does (random CoNLL-2003-like tags: the tag-scheme
reader warns once that they break IOB2, and the metrics mean nothing), makes the vocabulary
pass, then trains a small tagger (GRU 16, embedding 16, batch 256, 1 thread) for one epoch over
every sentence of the file with ``data.streaming: true``, and reports the epoch's time, tokens/s
and the process's peak RSS. Prints one JSON record; the files are deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import machine  # noqa: E402
from bench.streaming import config as streamed, write_conll  # noqa: E402
from rnnkit.run import VOCAB_FILE, prepare, train, write_vocab_file  # noqa: E402


def config(d: Path, **data):
    return streamed(d, size=16, batch_size=256, progress=True, **data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=2.0, help="size of the generated train file (GB, 1e9 bytes)")
    ap.add_argument("--dir", default="/tmp/rnnkit_epoch", help="where the files go (deleted afterwards)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    out: dict = {"machine": machine(), "command": " ".join(["python"] + sys.argv)}
    try:
        began = time.perf_counter()
        lines, sentences = write_conll(d / "train.conll", int(args.gb * 1e9))
        write_conll(d / "dev.conll", 200_000, seed=1, sentences=500)
        out["file"] = {"bytes": (d / "train.conll").stat().st_size, "lines": lines, "sentences": sentences}
        t = time.perf_counter()
        p = prepare(config(d))
        out["vocab_pass_s"], out["examples"] = round(time.perf_counter() - t, 1), p.counts["train"]
        (d / "run").mkdir(exist_ok=True)
        write_vocab_file(d / "run" / VOCAB_FILE, config(d), p.vocabs, p.counts["train"])
        del p
        t = time.perf_counter()
        train(config(d, vocab=str(d / "run" / VOCAB_FILE)), stream=sys.stderr)
        log = [json.loads(line) for line in (d / "run" / "log.jsonl").read_text().splitlines()]
        out["epoch"] = {"seconds": round(time.perf_counter() - t, 1), "steps": log[-1].get("step"),
                        "tokens_per_s": log[-1].get("tokens_per_s"), "train_loss": log[-1].get("train_loss")}
        out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        out["total_s"] = round(time.perf_counter() - began, 1)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
