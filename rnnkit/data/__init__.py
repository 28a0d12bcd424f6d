"""rnnkit.data: readers for real formats, tokenisation, vocabularies, embeddings and batching.

Data flows one way: reader -> examples (plain Python) -> Encoder (vocabularies, length checks)
-> collate / samplers -> batch dicts in the docs/contracts.md format. Nothing here imports
rnnkit.models or rnnkit.training.

    from rnnkit.data import read_conllu, Vocab, Encoder, collate, BucketBatchSampler
    train = read_conllu("en_ewt-ud-train.conllu", tag="upos")
    words = Vocab(min_freq=2).fit(ex.tokens for ex in train)
    chars = Vocab(specials=("<pad>", "<unk>"), name="char").fit_chars(ex.tokens for ex in train)
    tags = Vocab.for_labels((t for ex in train for t in ex.tags), name="tag")
    enc = Encoder(vocab=words, label_vocab=tags, char_vocab=chars, max_length=200)
    items = enc.encode_all(train)
    loader = DataLoader(items, batch_sampler=BucketBatchSampler(
        [len(x["inputs"]) for x in items], batch_size=32, seed=0), collate_fn=collate)
    batches = Batches(items, batch_size=32, seed=0)   # the same without a DataLoader; set_epoch(e)

A file larger than memory (``data.streaming``): the ``iter_*`` readers yield the same examples
lazily, and ``rnnkit.data.streaming`` batches them from a bounded buffer, sharded by rank and
DataLoader worker (``StreamingDataset``, ``StreamingBatches``; ``StreamingLM`` for token streams).
"""

from .batching import IGNORE_INDEX, Batches, BucketBatchSampler, LMStream, collate
from .conll import iter_conll, iter_conllu, read_conll, read_conllu
from .embeddings import load_embeddings
from .encode import Encoder
from .examples import PairExample, SeriesExample, TaggedExample, TextExample
from .series import SeriesScaler, TSData, read_series_csv, read_ts
from .series_table import (SeriesTable, SeriesWindow, chronological_split, read_series_table,
                           series_windows)
from .text_readers import (iter_delimited, iter_jsonl, iter_label_text, iter_lm_text, iter_parallel,
                           read_delimited, read_folder, read_jsonl, read_label_text, read_lines,
                           read_lm_text, read_parallel)
from .tokenize import Tokenizer
from .frames import FramesExample, load_frames, read_frames_manifest  # numeric frames (format frames)
from .vocab import BOS, EOS, PAD, SPECIALS, UNK, Vocab

__all__ = [
    # readers
    "read_delimited", "read_jsonl", "read_label_text", "read_lines", "read_folder",
    "read_parallel", "read_lm_text", "read_conll", "read_conllu", "read_ts", "read_series_csv",
    "TSData", "SeriesScaler", "read_series_table", "SeriesTable", "SeriesWindow", "chronological_split",
    "series_windows",
    # the same readers, lazily (data.streaming)
    "iter_conll", "iter_conllu", "iter_delimited", "iter_jsonl", "iter_label_text", "iter_parallel",
    "iter_lm_text",
    # examples
    "TextExample", "TaggedExample", "PairExample", "SeriesExample",
    # tokens and vocabularies
    "Tokenizer", "Vocab", "PAD", "UNK", "BOS", "EOS", "SPECIALS", "load_embeddings",
    # encoding and batching
    "Encoder", "collate", "BucketBatchSampler", "Batches", "LMStream", "IGNORE_INDEX",
    # numeric frames with a manifest
    "FramesExample", "read_frames_manifest", "load_frames",
]
