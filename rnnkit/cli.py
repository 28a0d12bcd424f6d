"""The ``rnnkit`` command: ``demo``, ``train``, ``evaluate``, ``predict``.

    rnnkit demo [--out runs/demo]
    rnnkit train CONFIG.yaml [--set trainer.epochs=3 ...] [--resume]
    rnnkit evaluate CHECKPOINT DATA
    rnnkit predict CHECKPOINT [FILE|-] > predictions.jsonl
"""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, train_size=args.train_size, test_size=args.test_size, epochs=args.epochs,
             seed=args.seed, progress=args.progress)
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1; got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnkit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo", help="GRU vs BiGRU on words whose tag only later words decide",
        description="Generate a corpus where ambiguous words (\"Teddy\" in \"Teddy Roosevelt was a "
                    "president\" vs \"Teddy bears are on sale\") are tagged by the words after them; "
                    "train a GRU and a BiGRU tagger with the same budget; print their accuracy, save "
                    "checkpoints and learning curves, and tag example sentences.")
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--epochs", type=_positive, default=5, help="epochs per model (default: 5)")
    demo.add_argument("--train-size", type=_positive, default=3000, help="training sentences (default: 3000)")
    demo.add_argument("--test-size", type=_positive, default=1000, help="test sentences (default: 1000)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--progress", action="store_true", help="show tqdm progress bars")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
