"""Vocabularies fitted on the training examples (one pass, also over a file read lazily), the
vocabulary file of a streaming run, and their JSON form in a checkpoint."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from ..config import Config
from ..data import SeriesScaler, Vocab
from ..training.metrics import mase_scale
from .reading import _TrainWindows, _target_indices, is_regression


def fit_vocabs(cfg: Config, train: list) -> dict:
    """Vocabularies (and a series scaler) fitted on the training examples, as objects."""
    d = cfg.data
    out: dict = {}
    if d.format == "lm_text":
        out["words"] = Vocab(min_freq=d.min_freq, max_size=d.max_vocab).fit([train])
    elif d.format == "series":
        if not isinstance(train, _TrainWindows):
            raise ValueError("a forecaster's MASE scale is fitted on the training rows of the series: "
                             "pass the training windows that _splits(cfg) returns")
        table, rows = train.table, train.rows
        targets = _target_indices(d, table)
        train_values = table.values[rows.start:rows.stop]
        out["series"] = {"columns": table.columns, "targets": targets, "time_column": d.time_column,
                         "season": d.season, "mase_scale": mase_scale(train_values[:, targets], d.season),
                         "train_rows": len(rows)}
    elif d.format == "frames":
        out = fit_frame_vocabs(cfg, train)
    elif d.format == "audio":  # audio (issue #17): classes or symbols, and a global scaler
        if cfg.model.type == "Transcriber":
            from .audio import symbol_vocab

            out["symbols"] = symbol_vocab(train)
        else:
            out["labels"] = Vocab.for_labels((ex.label for ex in train), name="class")
        if d.normalize == "global":
            out["scaler"] = SeriesScaler().fit(train)
    elif d.format == "ts":
        out["labels"] = Vocab.for_labels((ex.label for ex in train), name="class")
        if d.scale:
            out["scaler"] = SeriesScaler().fit(train)
    else:
        out, _ = count_vocabs(cfg, train)
    return out


# ----------------------------------------------------------------- numeric frames (format frames)

def _frame_label_set(item) -> list[str]:
    return [item] if isinstance(item, str) else list(item)


def fit_frame_vocabs(cfg: Config, train: list) -> dict:
    """A frames run's label (or target token) vocabulary, its D and, with ``data.scale``, the
    per-feature mean and std of every training frame."""
    from .reading import _tokenizer

    d, kind = cfg.data, cfg.model.type
    out: dict = {"frames": {"feature_dim": int(train[0].values.shape[1])}}
    if kind == "SequenceTagger":
        out["labels"] = Vocab.for_labels((label for ex in train for item in ex.labels
                                          for label in _frame_label_set(item)), name="tag")
    elif kind == "SequenceClassifier":
        out["labels"] = Vocab.for_labels((ex.label for ex in train), name="label")
    else:  # Seq2Seq: transcripts -> target tokens
        split = _tokenizer(d.target_tokenizer)
        out["target"] = Vocab(min_freq=d.min_freq, max_size=d.max_vocab, name="target token").fit(
            split(ex.transcript) for ex in train)
    if d.scale:
        out["scaler"] = SeriesScaler().fit(train)
    return out

# ----------------------------------------------------------------- end of numeric frames


def count_vocabs(cfg: Config, examples: Iterable) -> tuple[dict, int]:
    """(vocabularies, number of examples) of text examples, in one pass over ``examples`` (a list,
    or a file read lazily): the token counts are kept, never the examples."""
    d, kind = cfg.data, cfg.model.type
    words, target, labels, n = Counter(), Counter(), set(), 0
    for ex in examples:
        n += 1
        if kind == "Seq2Seq":
            words.update(ex.source)
            target.update(ex.target)
            continue
        words.update(ex.tokens)
        if kind == "SequenceTagger":
            labels.update(ex.tags)
        elif kind != "BiLanguageModel" and not is_regression(cfg):  # a biLM's text predicts itself
            labels.add(str(ex.label))
    size = dict(min_freq=d.min_freq, max_size=d.max_vocab)
    out = {"words": Vocab(**size).fit_counts(words)}
    if kind == "Seq2Seq":
        out["target"] = Vocab(**size, name="target token").fit_counts(target)
    elif kind == "SequenceTagger":
        out["labels"] = Vocab.for_labels(labels, name="tag")
        if d.chars:  # a token seen c times adds c of each of its characters
            chars = Counter()
            for token, c in words.items():
                for ch in token:
                    chars[ch] += c
            out["chars"] = Vocab(specials=("<pad>", "<unk>"), name="char").fit_counts(chars)
    elif kind != "BiLanguageModel" and not is_regression(cfg):
        out["labels"] = Vocab.for_labels(labels, name="label")
    return out, n


VOCAB_FILE = "vocab.json"  # what a streaming run writes to out_dir, and data.vocab reads


def needed_vocabs(cfg: Config) -> tuple[str, ...]:
    """The vocabularies (and scaler) a run of ``cfg`` encodes its data with."""
    kind, d = cfg.model.type, cfg.data
    if kind == "Seq2Seq":
        return ("words", "target")
    if kind == "LanguageModel":
        return ("words",)
    if kind == "SequenceTagger":
        return ("words", "labels") + (("chars",) if d.chars else ())
    if d.format == "audio":  # audio (issue #17)
        return ("symbols" if kind == "Transcriber" else "labels",) + (("scaler",) if d.normalize == "global" else ())
    if d.format == "ts":
        return ("labels",) + (("scaler",) if d.scale else ())
    return ("words",) if is_regression(cfg) else ("words", "labels")


def write_vocab_file(path: str | Path, cfg: Config, vocabs: dict, num_examples: int) -> None:
    """``{"vocabs": {name: Vocab.to_dict()}, "train": {...}}``: the vocabularies, and how many
    examples the train file held (with its size in bytes and data.max_train_examples, so that
    a run reading the same file with ``data.vocab`` needs no counting pass)."""
    train = {"path": str(cfg.data.train), "bytes": os.path.getsize(cfg.data.train),
             "max_train_examples": cfg.data.max_train_examples, "examples": num_examples}
    Path(path).write_text(json.dumps({"vocabs": vocabs_to_json(vocabs), "train": train}, ensure_ascii=False)
                          + "\n", encoding="utf-8")


def read_vocab_file(cfg: Config) -> tuple[dict, int | None]:
    """The vocabularies of ``data.vocab`` that ``cfg`` needs, and the number of training examples
    the file records for this train file (None when it records none or another file)."""
    path, d = Path(cfg.data.vocab), cfg.data
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such vocabulary file (data.vocab)") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}) (data.vocab)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg}) (data.vocab)") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("vocabs"), dict):
        raise ValueError(f'{path}: not a vocabulary file: expected a JSON object with "vocabs", as a run '
                         f"writes to out_dir/{VOCAB_FILE} (data.vocab)")
    need = needed_vocabs(cfg)
    missing = [name for name in need if name not in raw["vocabs"]]
    if missing:
        raise ValueError(f"{path}: has no {', '.join(missing)} vocabulary; a {cfg.model.type} on "
                         f"{d.format} needs {', '.join(need)} (data.vocab)")
    try:
        vocabs = vocabs_from_json({name: raw["vocabs"][name] for name in need})
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: vocabs: not a vocabulary rnnkit wrote ({e}) (data.vocab)") from None
    train = raw.get("train") if isinstance(raw.get("train"), dict) else {}
    try:
        size = os.path.getsize(d.train)
    except OSError:  # reading the train file will say what is wrong with it
        size = None
    same = (size is not None and train.get("bytes") == size and train.get("path") == str(d.train)
            and train.get("max_train_examples") == d.max_train_examples)
    n = train.get("examples") if same and isinstance(train.get("examples"), int) else None
    return vocabs, n


def vocabs_to_json(vocabs: dict) -> dict:
    return {name: v if isinstance(v, dict) else v.to_dict() for name, v in vocabs.items()}


def vocabs_from_json(saved: dict) -> dict:
    def restore(name: str, v: dict):
        if name == "frames":  # a frames run's D: plain JSON
            if not isinstance(v.get("feature_dim"), int):
                raise ValueError("frames: feature_dim must be an int")
            return v
        if name == "series":  # a forecaster's columns and MASE scale: plain JSON
            if not isinstance(v.get("columns"), list) or len(v.get("mase_scale", [])) != len(v.get("targets", ())):
                raise ValueError("series: columns, targets and mase_scale do not fit together")
            return v
        return SeriesScaler.from_dict(v) if name == "scaler" else Vocab.from_dict(v)

    return {name: restore(name, v) for name, v in saved.items()}
