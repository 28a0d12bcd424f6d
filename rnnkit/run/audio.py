"""Audio runs (issue #17): a manifest read as the data section says, the symbol vocabulary of a
Transcriber, its items and its SpecAugment-ed training batches."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from ..data import Vocab


def features_of(data):
    """The ``AudioFeatures`` a data section (format audio) describes."""
    from ..data.audio import AudioFeatures

    return AudioFeatures(sample_rate=data.sample_rate, kind=data.features, n_fft=data.n_fft,
                         win_length=data.win_length, hop_length=data.hop_length, n_mels=data.n_mels,
                         n_mfcc=data.n_mfcc)


def read_audio(data, path, *, required: bool = True) -> list:
    from ..data.audio import read_audio_manifest

    return read_audio_manifest(path, features_of(data), normalize=data.normalize, target=data.target,
                               required=required, encoding=data.encoding)


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")  # what `rnnkit predict CKPT FILE` reads as one recording


def predict_audio(run, cfg, vocabs: dict, source: str, batch_size: int) -> list:
    """Records of a manifest's utterances: ``label`` (classifier) or ``transcript`` (Transcriber),
    with the manifest's own label or transcript as ``gold`` where it has one."""
    from dataclasses import replace

    from ..data import collate
    from .batches import _items

    if source in ("-", "<stdin>"):
        raise ValueError("an audio model reads a manifest (JSONL of {\"path\": ...}) or one audio file: "
                         "give FILE, not standard input")
    if Path(source).suffix.lower() in AUDIO_SUFFIXES:  # one recording: a manifest of one line
        import json
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            manifest = Path(folder) / "manifest.jsonl"
            manifest.write_text(json.dumps({"path": str(Path(source).resolve())}) + "\n", encoding="utf-8")
            examples = read_audio(cfg.data, manifest, required=False)
        examples = [replace(ex, where=source) for ex in examples]
    else:
        examples = read_audio(cfg.data, source, required=False)
    transcribe = cfg.model.type == "Transcriber"
    gold = [ex.transcript if transcribe else ex.label for ex in examples]
    plain = [replace(ex, label=None, transcript=None) for ex in examples]
    items = transcriber_items(vocabs, plain, cfg.data) if transcribe else \
        _items(cfg, {k: v for k, v in vocabs.items() if k != "labels"}, plain)
    names = vocabs["symbols" if transcribe else "labels"].itos_
    out = []
    for start in range(0, len(items), batch_size):
        with torch.no_grad():
            rows = run(collate(items[start:start + batch_size]))
        rows = rows.tolist() if isinstance(rows, torch.Tensor) else rows
        for ex, g, row in zip(examples[start:], gold[start:], rows):
            key, value = ("transcript", "".join(names[i] for i in row if i != 0)) if transcribe \
                else ("label", names[int(row)])
            out.append({"where": ex.where, "path": ex.path, key: value, **({"gold": g} if g is not None else {})})
    return out


def symbol_vocab(train: list) -> Vocab:
    """The Transcriber's symbols: the blank (id 0) and every character of the training transcripts."""
    counts = Counter(ch for ex in train for ch in ex.transcript)
    return Vocab(specials=("<blank>",), unk=None, name="symbol").fit_counts(counts)


def transcriber_items(vocabs: dict, examples: list, data=None) -> list[dict]:
    """Items ``{"inputs": (T, D) frames, "targets": symbol ids}`` (no targets for an utterance
    without a transcript); ``data.max_length`` frames at most (``truncate`` cuts, else an error)."""
    symbols, scaler = vocabs["symbols"], vocabs.get("scaler")
    limit, cut = (getattr(data, "max_length", None), getattr(data, "truncate", False))
    mean = std = None
    if scaler is not None:
        import numpy as np

        mean, std = np.asarray(scaler.mean_, dtype="float32"), np.asarray(scaler.std_, dtype="float32")
    items = []
    for ex in examples:
        values = ex.values if mean is None else (ex.values - mean) / std
        if limit is not None and len(values) > limit:
            if not cut:
                raise ValueError(f"{ex.where}: {len(values)} frames, more than data.max_length ({limit}); "
                                 "raise it, or set data.truncate: true")
            values = values[:limit]
        item = {"inputs": values}
        if ex.transcript is not None:
            unknown = sorted({ch for ch in ex.transcript if ch not in symbols.stoi_})
            if unknown:
                raise ValueError(f"{ex.where}: transcript has symbol(s) {', '.join(map(repr, unknown))} that no "
                                 f"training transcript has; the model writes {', '.join(symbols.itos_[1:])}")
            item["targets"] = [symbols.stoi_[ch] for ch in ex.transcript]
        items.append(item)
    return items


class SpecAugmentBatches:
    """Training batches with SpecAugment masks (rnnkit.data.audio.spec_augment), drawn afresh
    each time a batch is drawn, seeded by (seed, epoch) as ``UnkReplace`` is."""

    def __init__(self, batches, data, *, seed: int) -> None:
        self.batches, self.data, self.seed = batches, data, seed
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.batches)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed * 100_003 + epoch)
        if hasattr(self.batches, "set_epoch"):
            self.batches.set_epoch(epoch)

    def __getattr__(self, name):
        if name == "batches":
            raise AttributeError(name)
        return getattr(self.batches, name)

    def __iter__(self):
        from ..data.audio import spec_augment

        d = self.data
        for batch in self.batches:
            yield {**batch, "inputs": spec_augment(batch["inputs"], batch["lengths"], time_masks=d.time_masks,
                                                   time_width=d.time_width, freq_masks=d.freq_masks,
                                                   freq_width=d.freq_width, generator=self.generator)}
