"""Streaming a CoNLL file larger than memory is wished to be (issue #15): peak RSS and throughput.

    python bench/streaming.py --gb 2 --dir /tmp/rnnkit_stream --steps 300

1. writes DIR/train.conll, ~GB gigabytes of generated CoNLL-2003-like sentences (4 columns,
   ``word POS CHUNK TAG``), and a small DIR/dev.conll;
2. ``prepare`` with ``data.streaming: true``: the one vocabulary-and-count pass over the file;
3. ``rnnkit.run.train`` with the vocabulary of step 2 (``data.vocab``, so no second pass) for
   ``--steps`` optimizer steps (``trainer.max_steps_per_epoch``): the model's tokens/s, from
   which a whole epoch's time is estimated;
4. breaks the file's last token line (3 columns instead of 4, same size, so the count that
   vocab.json records still holds), then runs one whole epoch of the streaming pipeline of
   step 2 without the model: read -> encode -> shuffle buffer -> bucket -> collate, every batch
   of the file up to the broken line (tokens/s of the data side), which must stop with
   ``train.conll:LINE: ...``.

Peak RSS is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of this one process, after each step
(it only grows). The files are deleted at the end unless ``--keep``. Prints one JSON record.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import machine  # noqa: E402
from rnnkit.config import parse_config  # noqa: E402
from rnnkit.run import VOCAB_FILE, prepare, train, write_vocab_file  # noqa: E402

TAGS = ["O"] * 6 + ["B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
POS = ["NN", "NNP", "VB", "DT", "IN", "JJ", "RB", "CD", "PRP", "VBD"]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def write_conll(path: Path, size: int, *, seed: int = 0, sentences: int = 20_000) -> tuple[int, int]:
    """~``size`` bytes of sentences drawn from ``sentences`` generated ones (Zipf-like words);
    returns (lines, sentences written)."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(30_000)]
    cum, total = [], 0.0
    for i in range(len(words)):
        total += 1 / (i + 1)
        cum.append(total)
    blocks = []
    for _ in range(sentences):
        n = rng.randint(3, 40)
        toks = rng.choices(words, cum_weights=cum, k=n)
        blocks.append("".join(f"{w} {rng.choice(POS)} I-NP {rng.choice(TAGS)}\n" for w in toks) + "\n")
    lines = written = count = 0
    with open(path, "w", encoding="utf-8") as f:
        f.write("-DOCSTART- -X- -X- O\n\n")
        lines, written = 2, 22
        while written < size:
            chunk = rng.choices(blocks, k=1000)
            text = "".join(chunk)
            f.write(text)
            written += len(text)
            lines += text.count("\n")
            count += len(chunk)
    return lines, count


def break_last_token_line(path: Path, lines: int) -> int:
    """Make the file's last token line (line ``lines - 1``; ``lines`` is the final blank line)
    3 columns instead of 4, in place and at the same size: a run that trusts the vocabulary
    file's count reads it only in the training pass. Returns its line number."""
    with open(path, "r+b") as f:
        f.seek(-200, 2)
        tail = f.read()
        start = tail.rstrip(b"\n").rfind(b"\n") + 1  # the last token line, within the tail
        line = tail[start:tail.index(b"\n", start)]
        f.seek(-200 + start, 2)
        f.write(line.replace(b" ", b"_", 1))
    return lines - 1


def config(d: Path, *, size: int = 32, batch_size: int = 64, progress: bool = False, **data) -> object:
    """The streamed tagger run on DIR's files: a GRU and an embedding of ``size``."""
    return parse_config({
        "name": "stream-bench",
        "data": {"format": "conll", "train": str(d / "train.conll"), "dev": str(d / "dev.conll"),
                 "streaming": True, "shuffle_buffer": 10_000, **data},
        "model": {"type": "SequenceTagger",
                  "options": {"embedding_dim": size, "encoder": {"cell": "gru", "hidden_sizes": [size]}}},
        "trainer": {"epochs": 1, "batch_size": batch_size, "progress": progress, "plots": False, "num_threads": 1,
                    "overwrite": True, "out_dir": str(d / "run")}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=2.0, help="size of the generated train file (GB, 1e9 bytes)")
    ap.add_argument("--dir", default="/tmp/rnnkit_stream", help="where the files go (deleted afterwards)")
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps of the training step")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    args = ap.parse_args()
    torch.set_num_threads(1)
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    out: dict = {"machine": machine(), "command": " ".join(["python"] + sys.argv)}
    try:
        began = time.perf_counter()
        lines, sentences = write_conll(d / "train.conll", int(args.gb * 1e9))
        write_conll(d / "dev.conll", 200_000, seed=1, sentences=500)
        size = (d / "train.conll").stat().st_size
        out["file"] = {"bytes": size, "lines": lines, "sentences": sentences,
                       "seconds_to_write": round(time.perf_counter() - began, 1)}
        out["rss_mb_after_writing"] = round(peak_mb(), 1)

        cfg = config(d)
        t = time.perf_counter()
        p = prepare(cfg)
        out["vocab_pass"] = {"seconds": round(time.perf_counter() - t, 1), "examples": p.counts["train"],
                             "vocab": len(p.vocabs["words"]), "MB_per_s": round(size / 1e6 / (time.perf_counter() - t), 1),
                             "rss_mb": round(peak_mb(), 1)}
        (d / "run").mkdir(exist_ok=True)
        write_vocab_file(d / "run" / VOCAB_FILE, cfg, p.vocabs, p.counts["train"])

        cfg = config(d, vocab=str(d / "run" / VOCAB_FILE))
        cfg = cfg.model_copy(update={"trainer": cfg.trainer.model_copy(update={"max_steps_per_epoch": args.steps})})
        t = time.perf_counter()
        train(cfg, stream=sys.stderr)
        log = [json.loads(line) for line in (d / "run" / "log.jsonl").read_text().splitlines()]
        tps = log[-1]["tokens_per_s"]
        out["training"] = {"steps": args.steps, "seconds_incl_dev": round(time.perf_counter() - t, 1),
                           "train_tokens_per_s": tps, "dev": log[-1].get("dev"), "rss_mb": round(peak_mb(), 1)}

        bad_line = break_last_token_line(d / "train.conll", lines)
        t, batches, tokens, error = time.perf_counter(), 0, 0, None
        p.train.set_epoch(1)
        try:
            for batch in p.train:
                batches += 1
                tokens += int(batch["lengths"].sum())
        except ValueError as e:
            error = str(e)
        seconds = time.perf_counter() - t
        out["pipeline_epoch"] = {"seconds": round(seconds, 1), "batches_before_the_error": batches,
                                 "batches_of_the_epoch": len(p.train), "tokens": tokens,
                                 "tokens_per_s": round(tokens / seconds), "held_items_max": p.train.dataset.held_,
                                 "rss_mb": round(peak_mb(), 1)}
        out["training"]["estimated_full_epoch_minutes"] = round(tokens / tps / 60, 1)
        expected = f"{d / 'train.conll'}:{bad_line}:"
        out["malformed"] = {"error": error, "expected_prefix": expected,
                            "names_the_line": bool(error) and error.startswith(expected)}
        out["peak_rss_mb"] = round(peak_mb(), 1)
    finally:
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
