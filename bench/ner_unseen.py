"""How much of a tagging run's dev and test sets is new to it: the share of gold entities whose
(type, text) never occurs in the training part, as `rnnkit train CONFIG` splits the files
(dev_fraction draws with the run's seed). With --checkpoint, also that checkpoint's recall on
the test entities seen and unseen in training, and its precision on the entities it predicts
of each kind (span matches by seqeval's IOB2 chunks).

    python bench/ner_unseen.py examples/msra_ner.yaml --seed 0 --checkpoint runs/quality/msra_ner/seed0/best

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from seqeval.metrics.sequence_labeling import get_entities

ROOT = Path(__file__).resolve().parents[1]


def entities(tokens: list[str], tags: list[str]) -> set[tuple[str, int, int, str]]:
    """(type, start, end, text) of every chunk, ends inclusive, as seqeval reads IOB2."""
    return {(kind, start, end, "".join(tokens[start:end + 1])) for kind, start, end in get_entities(list(tags))}


def unseen_share(examples, known: set[tuple[str, str]]) -> dict:
    found = [(kind, text) for ex in examples for kind, _, _, text in entities(ex.tokens, ex.tags)]
    return {"entities": len(found), "unseen": sum(e not in known for e in found) / max(1, len(found))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="a tagging config (examples/msra_ner.yaml)")
    ap.add_argument("--seed", type=int, default=0, help="the run's trainer.seed (it draws the dev split)")
    ap.add_argument("--checkpoint", help="a checkpoint folder to score on the test entities, seen and unseen")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from rnnkit.config import load_config
    from rnnkit.run.reading import _splits

    cfg = load_config(args.config, overrides=[f"trainer.seed={args.seed}"])
    train, dev, test = _splits(cfg)
    known = {(kind, text) for ex in train for kind, _, _, text in entities(ex.tokens, ex.tags)}
    out = {"config": args.config, "seed": args.seed, "train_sentences": len(train)}
    for name, part in (("dev", dev), ("test", test)):
        if part:
            out[name] = unseen_share(part, known)
    if args.checkpoint and test:
        from rnnkit.run.predictor import Predictor

        predictor = Predictor(args.checkpoint)
        hits = {"seen": [0, 0, 0, 0], "unseen": [0, 0, 0, 0]}  # gold, gold found, predicted, predicted right
        records = predictor.records((json.dumps({"tokens": ex.tokens}) for ex in test), source="test")
        for ex, rec in zip(test, records):
            gold, pred = entities(ex.tokens, ex.tags), entities(ex.tokens, rec["tags"])
            for e in gold:
                row = hits["seen" if (e[0], e[3]) in known else "unseen"]
                row[0] += 1
                row[1] += e in pred
            for e in pred:
                row = hits["seen" if (e[0], e[3]) in known else "unseen"]
                row[2] += 1
                row[3] += e in gold
        out["checkpoint"] = args.checkpoint
        for kind, (n_gold, found, n_pred, right) in hits.items():
            out[f"test_{kind}"] = {"gold": n_gold, "recall": found / max(1, n_gold),
                                   "predicted": n_pred, "precision": right / max(1, n_pred)}
    print(json.dumps(out, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
