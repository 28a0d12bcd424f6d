"""docs/models.md, "Contextual vectors: the bank example": does a pre-trained biLM give "bank" by a
river and "bank" with money far-apart vectors, where a static embedding gives one?

    python bench/bilm_bank.py runs/bilm_ud/best [--png docs/img/bilm_bank.png]

Embeds twelve sentences (six of each sense) with ``rnnkit.embed.embed_file`` at the token layer
(layer 0: the static embedding both directions read) and at the top layer (merged [forward;
backward]); compares the twelve "bank" vectors by cosine similarity after subtracting the mean
vector of all tokens of the sentences (every recurrent state shares a large common component, which
puts all raw cosines near 0.9 and says nothing about the words); prints within- and across-sense
mean similarity and leave-one-out nearest-neighbour sense accuracy, and draws both matrices.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

RIVER = ["We walked along the river bank and watched the water .",
         "The fishermen sat on the muddy bank of the stream .",
         "The boat drifted toward the grassy bank of the lake .",
         "Trees grew on the steep bank above the river .",
         "The children played on the bank of the creek all afternoon .",
         "Flood water rose over the bank and into the fields ."]
MONEY = ["She deposited the check at the bank on Monday .",
         "The bank raised its interest rates again .",
         "He borrowed money from the bank to buy a house .",
         "The bank approved the loan for the small business .",
         "I opened a savings account at the bank last year .",
         "The bank reported higher profits this quarter ."]


def bank_vectors(checkpoint: str, layer, out: Path) -> tuple[np.ndarray, np.ndarray]:
    from rnnkit.embed import embed_file

    embed_file(checkpoint, RIVER + MONEY, out, layer=layer)
    index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    merged = np.load(out / "merged.npy")
    rows = [i for i, r in enumerate(index) if r["token"] == "bank"]
    assert len(rows) == len(RIVER) + len(MONEY), "one 'bank' per sentence"
    centred = merged - merged.mean(0)
    return centred[rows], merged[rows]


def cosine(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(n == 0, 1, n)) @ (x / np.where(n == 0, 1, n)).T


def report(sim: np.ndarray, k: int) -> dict:
    sense = np.array([0] * k + [1] * (len(sim) - k))
    same = sense[:, None] == sense[None]
    off = ~np.eye(len(sim), dtype=bool)
    masked = np.where(off, sim, -np.inf)
    nearest = masked.argmax(1)
    # a tie (identical vectors: the static embedding) is decided by chance, not by index order
    ties = (masked == masked.max(1, keepdims=True)).sum(1) > 1
    correct = np.where(ties, 0.5, (sense[nearest] == sense).astype(float))
    return {"within": float(sim[same & off].mean()), "across": float(sim[~same].mean()),
            "nn_accuracy": float(correct.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--png", default=None)
    args = parser.parse_args()
    results, sims = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, layer in (("static (layer 0)", 0), ("contextual (top, merged)", "top")):
            centred, _ = bank_vectors(args.checkpoint, layer, Path(tmp) / str(layer))
            sims[name] = cosine(centred)
            results[name] = report(sims[name], len(RIVER))
    print(json.dumps(results, indent=1))
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        labels = [f"river {i + 1}" for i in range(len(RIVER))] + [f"money {i + 1}" for i in range(len(MONEY))]
        fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.4), constrained_layout=True)
        for ax, (name, sim) in zip(axes, sims.items()):
            im = ax.imshow(sim, vmin=0, vmax=1, cmap="viridis")
            r = results[name]
            ax.set_title(f"{name}\nwithin {r['within']:.2f}, across {r['across']:.2f}, "
                         f"1-NN sense {r['nn_accuracy']:.0%}", fontsize=9)
            ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
            ax.set_yticks(range(len(labels)), labels, fontsize=7)
            ax.axhline(len(RIVER) - 0.5, color="k", lw=0.8)
            ax.axvline(len(RIVER) - 0.5, color="k", lw=0.8)
        fig.colorbar(im, ax=axes, shrink=0.8, label="cosine (mean-centred)")
        fig.suptitle('"bank" in 12 sentences: cosine similarity of its vectors', fontsize=10)
        fig.savefig(args.png, dpi=80)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
