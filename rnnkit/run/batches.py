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


# ----------------------------------------------------------------- numeric frames (format frames)

def _frame_items(cfg: Config, vocabs: dict, examples: list) -> list[dict]:
    """Frames examples as items: ``inputs`` (T, D) float32 (standardised with the training
    statistics under ``data.scale``) and, when labelled, per-frame tag ids, multi-hot (T, K)
    targets (``output: sigmoid``), a class id, or BOS + transcript tokens + EOS."""
    import numpy as np

    from .reading import _tokenizer

    d, kind = cfg.data, cfg.model.type
    D = vocabs["frames"]["feature_dim"]
    scaler = vocabs.get("scaler")
    mean, std = (np.asarray(scaler.mean_, np.float32), np.asarray(scaler.std_, np.float32)) if scaler else (0, 1)
    multi = kind == "SequenceTagger" and cfg.model.options.get("output") == "sigmoid"
    split = _tokenizer(d.target_tokenizer) if kind == "Seq2Seq" else None
    items = []
    for ex in examples:
        x = ex.values
        if x.shape[1] != D:
            raise ValueError(f"{ex.where}: frames have D = {x.shape[1]} features; the model reads D = {D} "
                             "(the training manifest's first file)")
        if d.max_length is not None and len(x) > d.max_length:
            if not d.truncate:
                raise ValueError(f"{ex.where}: {len(x)} frames, more than max_length={d.max_length}; raise "
                                 "data.max_length or set data.truncate: true")
            x = x[: d.max_length]
        item = {"inputs": (x - mean) / std if scaler else x}
        if ex.labels is not None:
            labels = ex.labels[: len(x)]
            tags = vocabs["labels"]
            if multi:
                y = np.zeros((len(x), len(tags)), np.float32)
                for t, frame in enumerate(labels):
                    y[t, tags.encode([frame] if isinstance(frame, str) else list(frame), where=ex.where)] = 1.0
                item["labels"] = y
            else:
                bad = next((t for t, f in enumerate(labels) if not isinstance(f, str)), None)
                if bad is not None:
                    raise ValueError(f"{ex.where}: labels[{bad}] is a list of labels {labels[bad]!r}; output "
                                     f"{cfg.model.options.get('output', 'softmax')!r} takes one label per frame "
                                     "(use output: sigmoid for a set of labels per frame)")
                item["labels"] = tags.encode(labels, where=ex.where)
        elif ex.label is not None:
            item["labels"] = vocabs["labels"].encode([ex.label], where=ex.where)[0]
        elif ex.transcript is not None:
            target = vocabs["target"]
            tokens = split(ex.transcript)
            if d.max_target_length is not None and len(tokens) > d.max_target_length:
                raise ValueError(f"{ex.where}: transcript has {len(tokens)} tokens, more than "
                                 f"max_target_length={d.max_target_length}")
            item["targets"] = [target.bos_id] + target.encode(tokens, where=ex.where) + [target.eos_id]
        items.append(item)
    return items

# ----------------------------------------------------------------- end of numeric frames


def _items(cfg: Config, vocabs: dict, examples: list) -> list[dict]:
    if cfg.data.format == "frames":
        return _frame_items(cfg, vocabs, examples)
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
