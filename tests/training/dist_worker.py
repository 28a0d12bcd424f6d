"""Workers for tests/training/test_distributed.py, started by torch.distributed.run.

    dist_worker.py bad-label OUT        a tiny softmax tagger trained from a list of batches in
                                        which only rank 1's rows (odd rows) hold a tag id the head
                                        does not know: rank 1 fails at its first step while rank 0
                                        waits for it
    dist_worker.py train CFG [CFG ...]  rnnkit.run.train on each config in turn, in the same
                                        processes; a config whose name ends in "resume" resumes
                                        its out_dir (as `rnnkit train CFG --resume` does)
"""

import sys

import torch

from rnnkit.config import load_config
from rnnkit.models import SequenceTagger
from rnnkit.run import train
from rnnkit.training import Trainer, TrainerConfig


def bad_label(out_dir: str) -> None:
    torch.manual_seed(0)
    head = SequenceTagger(vocab_size=10, num_tags=3, embedding_dim=4, encoder={"hidden_sizes": [4]})
    labels = torch.tensor([[0, 1, 2], [0, 7, 1], [2, 2, 0], [1, 9, 0]])  # rows 1 and 3: tags 7, 9
    batch = {"inputs": torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9], [1, 3, 5]]),
             "lengths": torch.tensor([3, 3, 3, 3]), "labels": labels}
    cfg = TrainerConfig(epochs=1, progress=False, plots=False, num_threads=1, out_dir=out_dir)
    Trainer(head, cfg, train=[batch] * 4).fit()


def train_all(paths: list[str]) -> None:
    for path in paths:
        cfg = load_config(path)
        train(cfg, resume=cfg.name.endswith("resume"))


if __name__ == "__main__":
    if sys.argv[1] == "bad-label":
        bad_label(sys.argv[2])
    else:
        train_all(sys.argv[2:])
