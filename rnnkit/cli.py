"""Command line: ``rnnkit demo`` (more subcommands arrive with the trainer)."""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    import torch

    import rnnkit

    torch.manual_seed(0)
    x = torch.randn(3, 6, 8)
    lengths = torch.tensor([6, 4, 2])
    bi = rnnkit.Bidirectional(rnnkit.GRU(8, 16), merge="concat")
    out, state = bi(x, lengths=lengths)
    print(f"BiGRU output {tuple(out.shape)}, path {bi.path.forward}; "
          f"forward state {tuple(state.forward.shape)}, backward state {tuple(state.backward.shape)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rnnkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the demo")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
