"""A Transcriber's error rates on a manifest with greedy and prefix-beam decoding (beam 8, 32),
and the time each takes (1 thread).

    python bench/ctc_decoding.py runs/fsdd_strings/best runs/data/fsdd_strings/test.jsonl
"""
import sys
import time

import torch

torch.set_num_threads(1)
from rnnkit.run.heads import _restore, metrics_for
from rnnkit.run.reading import read_file
from rnnkit.run.batches import _batches
from rnnkit.training.trainer import evaluate_batches
loaded, cfg, vocabs = _restore(sys.argv[1])
examples = read_file(cfg.data, sys.argv[2])
batches = _batches(cfg, vocabs, examples, train=False)
for decoding, beam in (("greedy", 1), ("beam", 8), ("beam", 32)):
    loaded.model.decoding, loaded.model.beam_size = decoding, beam
    t = time.perf_counter()
    out = evaluate_batches(loaded.model, batches, metrics_for(cfg, vocabs))
    print(decoding, beam, {k: round(v, 5) for k, v in out.items()}, f"{time.perf_counter() - t:.1f} s")
