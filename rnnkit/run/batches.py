"""Examples to batches: the encoder a run's vocabularies make, length-bucketed batches (global ones
under several processes), the language model's stream, and rare words replaced by <unk>."""

from __future__ import annotations

import torch

from ..config import Config
from ..data import Batches, Encoder, LMStream


def _encoder(cfg: Config, vocabs: dict) -> Encoder:
    d, generate = cfg.data, cfg.model.type == "Generator"
    # a generator's text is its target: data.max_length limits it (BOS and EOS not counted)
    return Encoder(vocab=vocabs.get("words"), label_vocab=vocabs.get("labels"),
                   char_vocab=vocabs.get("chars"), target_vocab=vocabs.get("target"),
                   max_length=d.max_length, truncate=d.truncate, generate=generate,
                   max_target_length=d.max_length if generate else getattr(d, "max_target_length", None))


def _items(cfg: Config, vocabs: dict, examples: list) -> list[dict]:
    if cfg.data.format == "series":  # windows are numbers already; the Forecaster scales them
        return [{"inputs": w.inputs} if w.targets is None else {"inputs": w.inputs, "labels": w.targets}
                for w in examples]
    if cfg.model.type == "Transcriber":  # audio (issue #17): frames and symbol ids
        from .audio import transcriber_items

        return transcriber_items(vocabs, examples, cfg.data)
    if "scaler" in vocabs:
        examples = vocabs["scaler"].transform(examples)
    return _encoder(cfg, vocabs).encode_all(examples)


def _lm_stream(cfg: Config, vocabs: dict, tokens: list[str], *, rank: int = 0, world: int = 1) -> LMStream:
    ids = vocabs["words"].encode(tokens)
    if world > 1:  # each process learns from its own contiguous share of the stream
        share = len(ids) // world
        ids = ids[rank * share:(rank + 1) * share + 1]
    return LMStream(ids, batch_size=cfg.trainer.batch_size, bptt=cfg.data.bptt)


class UnkReplace:
    """Training batches in which each occurrence of a word seen once in the training data is
    ``<unk>`` with probability ``p``, drawn afresh every time a batch is drawn (seeded). With
    ``min_freq: 1`` nothing else ever trains the ``<unk>`` vector that every unseen test word
    gets; this teaches it on the words most like unseen ones (Lample et al., 2016, replace
    singletons with p = 0.5). ``len`` and ``set_epoch`` pass through to ``batches``."""

    def __init__(self, batches, vocab, p: float, *, seed: int) -> None:
        counts = getattr(vocab, "counts_", {})
        if not counts:
            raise ValueError("data.unk_replace needs the training words' counts; a vocabulary loaded "
                             "from data.vocab has none (fit it from the train file instead)")
        singles = [vocab.stoi_[w] for w, c in counts.items() if c == 1 and w in vocab.stoi_]
        self.singleton = torch.zeros(len(vocab), dtype=torch.bool)
        self.singleton[singles] = True
        self.batches, self.p, self.unk, self.seed = batches, p, vocab.unk_id, seed
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.batches)

    def set_epoch(self, epoch: int) -> None:
        """Draws depend on (seed, epoch) only, so a run resumed at an epoch draws as the
        uninterrupted one did."""
        self.generator.manual_seed(self.seed * 100_003 + epoch)
        if hasattr(self.batches, "set_epoch"):
            self.batches.set_epoch(epoch)

    def __getattr__(self, name):  # num_tokens, ... of the batches underneath
        if name == "batches":
            raise AttributeError(name)
        return getattr(self.batches, name)

    def __iter__(self):
        for batch in self.batches:
            ids = batch["inputs"]
            drop = self.singleton[ids] & (torch.rand(ids.shape, generator=self.generator) < self.p)
            yield {**batch, "inputs": ids.masked_fill(drop, self.unk)}


def _batches(cfg: Config, vocabs: dict, examples: list, *, train: bool, rank: int = 0, world: int = 1):
    if cfg.data.format == "lm_text":
        out = _lm_stream(cfg, vocabs, examples, rank=rank if train else 0, world=world if train else 1)
    else:
        items = _items(cfg, vocabs, examples)
        if not train:
            # evaluation batches are global ones too (the trainer gives each process every W-th), so
            # a run of W processes evaluates exactly the batches one process of batch W x b would
            return Batches(items, batch_size=cfg.trainer.batch_size * world, shuffle=False)
        out = Batches(items, batch_size=cfg.trainer.batch_size, shuffle=True, seed=cfg.trainer.seed,
                      rank=rank, world_size=world)
    if train and cfg.data.format == "audio" and (cfg.data.time_masks or cfg.data.freq_masks):
        from .audio import SpecAugmentBatches  # audio (issue #17): masks at training only

        out = SpecAugmentBatches(out, cfg.data, seed=cfg.trainer.seed + rank)
    if train and cfg.data.unk_replace:
        words = vocabs["words"]
        if words.unk_id is None:
            raise ValueError("data.unk_replace needs an <unk> token in the word vocabulary")
        out = UnkReplace(out, words, cfg.data.unk_replace, seed=cfg.trainer.seed + rank)
    return out
