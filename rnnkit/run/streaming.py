"""``data.streaming``: the train file read lazily each epoch, after one pass that counts it and
fits the vocabularies; dev and test are read whole."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

from ..config import Config
from ..data import Vocab, iter_lm_text
from ..data._io import line_offsets
from ..data.streaming import StreamingBatches, StreamingDataset, StreamingLM
from .batches import UnkReplace, _batches, _encoder
from .heads import Prepared, _build_head, metrics_for
from .reading import Retagger, _cap, _read, _tokenizer, is_regression, iter_file
from .vocabs import count_vocabs, read_vocab_file


# A streaming language model's rows seek to the nearest indexed line before their first token:
# one index entry per this many lines (a few KB of index per GB, a few ms of skipping).
LM_INDEX_LINES = 1000


@dataclass(frozen=True)
class LMTrainFile:
    """``read(start)`` of a streaming language model: the token lists of the train file's lines
    from ``start = (byte offset, line number)`` on."""

    cfg: Config

    def __call__(self, start: tuple[int, int]) -> Iterator[list[str]]:
        d = self.cfg.data
        return iter_lm_text(d.train, tokenizer=_tokenizer(d.tokenizer), encoding=d.encoding, start=start)


def count_lm_tokens(cfg: Config, *, fit: bool) -> tuple[dict | None, int, list[tuple[int, int, int]]]:
    """One pass over an lm_text train file: (the word vocabulary if ``fit``, the number of
    tokens N -- the first ``data.max_train_examples`` -- and the index StreamingLM seeks by)."""
    d = cfg.data
    cap = d.max_train_examples
    counts, n, marks = Counter(), 0, []
    for i, tokens in enumerate(iter_file(d, d.train)):  # one list per line, blank lines too
        if i % LM_INDEX_LINES == 0:
            marks.append(n)
        if cap is not None and n + len(tokens) >= cap:
            tokens = tokens[:cap - n]
        if fit:
            counts.update(tokens)
        n += len(tokens)
        if cap is not None and n >= cap:
            break
    offsets = line_offsets(d.train, LM_INDEX_LINES)
    index = [(offsets[j], j * LM_INDEX_LINES + 1, before) for j, before in enumerate(marks)]
    vocabs = {"words": Vocab(min_freq=d.min_freq, max_size=d.max_vocab).fit_counts(counts)} if fit else None
    return vocabs, n, index


@dataclass(frozen=True)
class TrainFile:
    """``read()`` of a streaming run: the train file's examples as they are read (the first
    ``data.max_train_examples``). A dataclass, so that DataLoader workers can be sent it."""

    cfg: Config

    def __call__(self) -> Iterator:
        d = self.cfg.data
        examples = iter_file(d, d.train, label_type="float" if is_regression(self.cfg) else "class")
        if d.format == "conll" and self.cfg.model.type == "SequenceTagger" and d.tag_scheme != "none":
            examples = _retag_each(self.cfg, examples)
        return examples if d.max_train_examples is None else islice(examples, d.max_train_examples)


def _retag_each(cfg: Config, examples: Iterable) -> Iterator:
    """``_retag`` one sentence at a time, for a file read lazily: under ``tag_scheme: auto`` each
    sentence's scheme is read from its own tags (``schemes.detect`` of the one sentence). A file
    written in one scheme gets exactly the tags the whole-file reading gives."""
    from ..data import schemes

    declared = cfg.data.tag_scheme
    retaggers: dict = {}
    for ex in examples:
        if ex.tags is not None and (declared != "auto" or schemes.span_tags(ex.tags)):
            scheme = schemes.detect([ex.tags]) if declared == "auto" else declared
            ex = retaggers.setdefault(scheme, Retagger(cfg, scheme))(ex)
        yield ex
    for retag in retaggers.values():
        retag.report(cfg.data.train)


def _prepare_streaming(cfg: Config, *, rank: int, world: int) -> Prepared:
    """``prepare`` for ``data.streaming``: one pass over the train file counts its examples and
    fits the vocabularies (or ``data.vocab`` gives them), then batches are read from the file
    each epoch; dev and test are read whole."""
    d, read = cfg.data, TrainFile(cfg)
    vocabs, n = read_vocab_file(cfg) if d.vocab is not None else (None, None)
    if d.format == "lm_text":  # the rows' index is made by this pass whatever the vocabulary
        counted, n, index = count_lm_tokens(cfg, fit=vocabs is None)
        vocabs = vocabs or counted
    elif vocabs is None:
        vocabs, n = count_vocabs(cfg, read())
    elif n is None:  # a vocabulary of another file (or of none): count this one
        n = sum(1 for _ in read())
    cap = d.max_eval_examples
    dev = _cap(cfg, _read(cfg, d.dev), cap, 2) if d.dev is not None else None
    test = _cap(cfg, _read(cfg, d.test), cap, 3) if d.test is not None else None
    model = _build_head(cfg, vocabs, [])
    place = dict(rank=rank if world > 1 else None, world_size=world if world > 1 else None)
    if d.format == "lm_text":
        batches = StreamingLM(LMTrainFile(cfg), vocabs["words"].encode, index=index, num_tokens=n,
                              batch_size=cfg.trainer.batch_size, bptt=d.bptt, **place)
    else:
        batches = StreamingBatches(StreamingDataset(
            read, _encoder(cfg, vocabs), num_examples=n, batch_size=cfg.trainer.batch_size,
            shuffle_buffer=d.shuffle_buffer, seed=cfg.trainer.seed, num_workers=d.num_workers, **place))
    if d.unk_replace:
        batches = UnkReplace(batches, vocabs["words"], d.unk_replace, seed=cfg.trainer.seed + rank)
    return Prepared(
        model=model, vocabs=vocabs, metrics=metrics_for(cfg, vocabs), train=batches,
        dev=_batches(cfg, vocabs, dev, train=False, world=world) if dev else None,
        test=_batches(cfg, vocabs, test, train=False, world=world) if test else None,
        counts={"train": n, "dev": len(dev) if dev else 0, "test": len(test) if test else 0},
        # an auto scheme is read sentence by sentence here: only a declared one is the file's
        tag_scheme=d.tag_scheme if getattr(d, "tag_scheme", "none") not in ("auto", "none") else None)
