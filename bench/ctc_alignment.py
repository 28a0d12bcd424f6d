"""Picture of a Transcriber's CTC alignment for one utterance: its log-mel frames (top) and the
per-frame symbol posteriors (bottom; rows blank, then the alphabet), the greedy labelling in the
title.

    python bench/ctc_alignment.py runs/fsdd_strings/best runs/data/fsdd_strings/test.jsonl \
        --line 4 --out docs/img/ctc_alignment.png
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from rnnkit.data import collate  # noqa: E402
from rnnkit.models import ctc_greedy  # noqa: E402
from rnnkit.run.audio import read_audio, transcriber_items  # noqa: E402
from rnnkit.run.heads import _restore  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("manifest")
    ap.add_argument("--line", type=int, default=1, help="1-based manifest line")
    ap.add_argument("--out", default="docs/img/ctc_alignment.png")
    args = ap.parse_args()
    loaded, cfg, vocabs = _restore(args.checkpoint)
    torch.set_num_threads(1)  # as the example trains: the compiled loop's probe for 1 thread is reused
    # paths are relative to the manifest's folder: a one-line copy sits beside it while it is read
    with open(args.manifest, encoding="utf-8") as f, tempfile.NamedTemporaryFile(
            "w", dir=Path(args.manifest).parent, suffix=".jsonl", delete=False, encoding="utf-8") as g:
        g.write(next(itertools.islice(f, args.line - 1, None)))
    try:
        [ex] = read_audio(cfg.data, g.name)
    finally:
        os.unlink(g.name)
    batch = collate(transcriber_items(vocabs, [ex]))
    model = loaded.model.eval()
    with torch.no_grad():
        log_probs, lengths = model(batch)
    symbols = vocabs["symbols"].itos_
    order = [0] + sorted(range(1, len(symbols)), key=lambda i: symbols[i])
    hyp = "".join(symbols[i] for i in ctc_greedy(log_probs, lengths)[0])
    post = log_probs[0].exp().T[order]  # (S, T')
    fig, (a, b) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=False, gridspec_kw={"height_ratios": [1, 1.2]})
    a.imshow(ex.values.T, origin="lower", aspect="auto", cmap="magma")
    a.set_ylabel("log-mel band")
    a.set_xlabel(f"input frame ({cfg.data.hop_length / cfg.data.sample_rate * 1000:.0f} ms each)")
    a.set_title(f"{ex.path.rsplit('/', 1)[-1]}: reference {ex.transcript}, greedy CTC {hyp}")
    b.imshow(post.numpy(), aspect="auto", cmap="Greys", interpolation="nearest", vmin=0, vmax=1)
    b.set_yticks(range(len(order)), ["blank" if i == 0 else symbols[i] for i in order])
    b.set_xlabel(f"output frame ({2 ** model.pyramid * cfg.data.hop_length / cfg.data.sample_rate * 1000:.0f} ms each)")
    b.set_ylabel("symbol posterior")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"{args.out}: {ex.transcript} -> {hyp}")


if __name__ == "__main__":
    main()
