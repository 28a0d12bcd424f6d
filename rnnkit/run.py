"""The application's wiring: from a validated ``Config`` to readers, vocabularies, batches, a
head, the trainer and a checkpoint -- and back, for evaluate, predict, export and serve. It
sits beside the CLI, above ``training/`` (which knows nothing of the config file).

    summary = train(load_config("examples/ud_pos.yaml"))      # what `rnnkit train` runs
    metrics = evaluate("runs/ud_pos/best", "dev.conllu")       # `rnnkit evaluate`
    for record in predict("runs/ud_pos/best", lines): ...      # `rnnkit predict`

A checkpoint written here stores, besides weights and the head's config, the vocabularies
(``Vocab.to_dict``), the series scaler if any, and the run's full config (``extra.config``), so
that ``evaluate`` and ``predict`` read new files exactly as training read its own.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .config import Config, ConfigError, TokenizerConfig, parse_config, resolve_contextual
from .data import (Batches, Encoder, LMStream, SeriesScaler, TaggedExample, TextExample, Tokenizer, Vocab,
                   chronological_split, collate, iter_conll, iter_conllu, iter_delimited, iter_jsonl,
                   iter_label_text, iter_lm_text, iter_parallel, read_folder, read_lines, read_series_table,
                   read_ts, series_windows)
from .data._io import line_offsets
from .data.streaming import StreamingBatches, StreamingDataset, StreamingLM
from .training.metrics import (BiPerplexityMetrics, BleuMetrics, ClassificationMetrics, ClassPerplexityMetrics,
                               ForecastMetrics, PerplexityMetrics, RegressionMetrics, TaggingMetrics, mase_scale)
from .training.trainer import Trainer, evaluate_batches, seed_everything

__all__ = ["Prepared", "prepare", "train", "evaluate", "predict", "Predictor", "BACKENDS", "export_checkpoint"]


_DIGIT = re.compile(r"\d")


def _tokenizer(tc: TokenizerConfig) -> Tokenizer:
    return Tokenizer(tc.level, pattern=tc.pattern, lowercase=tc.lowercase,
                     normalize_digits=tc.normalize_digits)


def is_regression(cfg: Config) -> bool:
    """A SequenceClassifier with ``task: regression`` learns float targets (MAE/RMSE/MAPE)."""
    return cfg.model.type == "SequenceClassifier" and cfg.model.options.get("task") == "regression"


def word_form(data):
    """The CoNLL(-U) word forms as the model sees them (``lowercase``, ``normalize_digits``):
    a function of a token list, applied to training files and to ``predict`` inputs alike;
    None when the forms are kept."""
    lower, digits = getattr(data, "lowercase", False), getattr(data, "normalize_digits", False)
    if data.format not in ("conll", "conllu") or not (lower or digits):
        return None

    def form(tokens: list[str]) -> list[str]:
        tokens = [t.lower() for t in tokens] if lower else tokens
        return [_DIGIT.sub("0", t) for t in tokens] if digits else tokens

    return form


def iter_file(data, path: str | Path, *, label_type: str = "class") -> Iterator:
    """Examples of one file as they are read, as ``data`` (a data config section) describes;
    ``lm_text``: the tokens of each line. Every text format but ``folder``; not ``ts``."""
    f, enc = data.format, data.encoding
    if f in ("conllu", "conll"):
        if f == "conllu":
            examples = iter_conllu(path, tag=data.tag, encoding=enc)
        else:
            examples = iter_conll(path, token_column=data.token_column, tag_column=data.tag_column,
                                  separator=data.separator, encoding=enc)
        form = word_form(data)
        return examples if form is None else (replace(ex, tokens=form(ex.tokens)) for ex in examples)
    if f in ("csv", "tsv"):
        return iter_delimited(path, text_column=data.text_column, label_column=data.label_column,
                              delimiter="," if f == "csv" else "\t", header=data.header,
                              label_type=label_type, tokenizer=_tokenizer(data.tokenizer), encoding=enc)
    if f == "jsonl":
        return iter_jsonl(path, text_field=data.text_field, label_field=data.label_field,
                          label_type=label_type, tokenizer=_tokenizer(data.tokenizer), encoding=enc)
    if f == "label_text":
        return iter_label_text(path, label_type=label_type, tokenizer=_tokenizer(data.tokenizer),
                               encoding=enc)
    if f == "parallel":
        return iter_parallel(path, source_column=data.source_column, target_column=data.target_column,
                             num_columns=data.num_columns, source_tokenizer=_tokenizer(data.source_tokenizer),
                             target_tokenizer=_tokenizer(data.target_tokenizer), encoding=enc)
    if f == "text":
        return read_lines(path, tokenizer=_tokenizer(data.tokenizer), encoding=enc)
    if f == "lm_text":
        return iter_lm_text(path, tokenizer=_tokenizer(data.tokenizer), encoding=enc)
    raise ValueError(f"data.format {f!r} is not read lazily")  # the schema keeps it from streaming


def read_file(data, path: str | Path, *, label_type: str = "class"):
    """Examples of one file, read whole as ``data`` (a data config section) describes:
    ``iter_file``'s, in a list (``lm_text``: one token stream)."""
    if data.format == "ts":
        return read_ts(path, missing=data.missing, encoding=data.encoding).examples
    if data.format == "series":  # the windows of the whole file
        return _windows(data, _table(data, path))
    if data.format == "folder":
        if label_type == "float":
            raise ValueError("data.format folder labels documents by their folder's name; a regression "
                             "target needs csv, tsv, jsonl or label_text")
        return read_folder(path, labels=data.labels, pattern=data.pattern, tokenizer=_tokenizer(data.tokenizer),
                           markup=data.markup, encoding=data.encoding)
    if data.format == "text":  # one sentence per line (a BiLanguageModel's plain text)
        return read_lines(path, tokenizer=_tokenizer(data.tokenizer), encoding=data.encoding)
    if data.format == "lm_text":
        return [token for line in iter_file(data, path) for token in line]
    return list(iter_file(data, path, label_type=label_type))


def _sample(examples: list, n: int, seed: int, *, by_label: bool) -> tuple[list, list]:
    """(chosen, rest): ``n`` examples drawn at random with ``seed``, each label keeping its share
    when ``by_label`` (largest remainders), both in file order. A file sorted by label would
    otherwise give a first-N slice of one class: dev accuracy 1.0, and a model chosen by it."""
    if n >= len(examples):
        return list(examples), []
    rng = random.Random(seed)
    if by_label:
        groups: dict = {}
        for i, ex in enumerate(examples):
            groups.setdefault(ex.label, []).append(i)
        quota = {k: n * len(idx) / len(examples) for k, idx in groups.items()}
        take = {k: int(q) for k, q in quota.items()}
        keys = list(groups)
        rng.shuffle(keys)  # ties in the remainders go to a random label, not the file's first
        for k in sorted(keys, key=lambda k: quota[k] - take[k], reverse=True)[:n - sum(take.values())]:
            take[k] += 1
        chosen = set()
        for k, idx in groups.items():
            chosen.update(rng.sample(idx, take[k]))
    else:
        chosen = set(rng.sample(range(len(examples)), n))
    return ([ex for i, ex in enumerate(examples) if i in chosen],
            [ex for i, ex in enumerate(examples) if i not in chosen])


def _table(data, path: str | Path):
    return read_series_table(path, columns=data.columns, time_column=data.time_column,
                             delimiter=data.delimiter, missing=data.missing, encoding=data.encoding)


def _target_indices(data, table) -> list[int]:
    return [table.columns.index(c) for c in (data.target_columns or table.columns)]


def _windows(data, table, rows: range | None = None, name: str = "series") -> list:
    return series_windows(table, window=data.window, horizon=data.horizon, stride=data.stride,
                          targets=_target_indices(data, table), rows=rows, name=name)


class _TrainWindows(list):
    """Training windows, and the table and training rows they were cut from: the scaler and
    MASE's scale are fitted on those rows, each counted once."""

    def __init__(self, windows: list, table, rows: range) -> None:
        super().__init__(windows)
        self.table, self.rows = table, rows


def _series_splits(cfg: Config) -> tuple[list, list | None, list | None]:
    """Chronological parts of a series: train, then dev and test as the last fractions of the
    train file (never shuffled), or their own files. Dev and test windows may read the steps
    before their part as context; their forecasts never leave it."""
    d = cfg.data
    table = _table(d, d.train)
    parts = chronological_split(len(table), dev_fraction=d.dev_fraction, test_fraction=d.test_fraction)
    train = _TrainWindows(_limit(_windows(d, table, parts["train"], "train"), d.max_train_examples),
                          table, parts["train"])
    cap = d.max_eval_examples
    dev, test = (_limit(_windows(d, table, parts[name], name) if name in parts
                        else _read(cfg, getattr(d, name)) if getattr(d, name) is not None else None, cap)
                 for name in ("dev", "test"))
    return train, dev, test


def _limit(examples: list | None, n: int | None) -> list | None:
    return examples if n is None or examples is None else examples[:n]


def _by_label(cfg: Config, examples: list) -> bool:
    """Slices keep each class's share for classifiers (class labels, not regression targets)."""
    return cfg.model.type in ("SequenceClassifier", "Generator") and not is_regression(cfg) and bool(examples) \
        and all(isinstance(getattr(ex, "label", None), str) for ex in examples)


def model_tag_scheme(cfg: Config) -> str:
    """The span scheme a tagger learns: IOBES under ``constraints: iobes``, else IOB2."""
    return "iobes" if cfg.model.options.get("constraints") == "iobes" else "iob2"


def _retag(cfg: Config, examples: list, path) -> tuple[list, str | None]:
    """CoNLL span tags rewritten in the model's scheme, and the scheme the file was written in
    (None: not span tags). Every sentence is checked against the file's scheme first, so a
    file that breaks it is refused at its line instead of teaching the model nonsense."""
    from .data import schemes

    declared = cfg.data.tag_scheme
    if cfg.model.type != "SequenceTagger" or declared == "none":
        return examples, None
    gold = [ex.tags for ex in examples if ex.tags is not None]
    if declared == "auto":
        if not schemes.span_tags(t for tags in gold for t in tags):
            return examples, None
        declared = schemes.detect(gold)
    target = model_tag_scheme(cfg)
    for ex in examples:
        if ex.tags is not None:
            schemes.check(ex.tags, declared, ex.where or str(path))
    if declared != target:
        examples = [ex if ex.tags is None else replace(ex, tags=schemes.convert(ex.tags, declared, target))
                    for ex in examples]
    return examples, declared


def _read(cfg: Config, path, *, schemes_found: dict | None = None) -> list:
    examples = read_file(cfg.data, path, label_type="float" if is_regression(cfg) else "class")
    if cfg.model.type == "BiLanguageModel":  # a biLM learns from the text alone
        return [replace(ex, tags=None) if isinstance(ex, TaggedExample) else replace(ex, label=None)
                for ex in examples]
    if cfg.data.format == "conll":
        examples, scheme = _retag(cfg, examples, path)
        if schemes_found is not None:
            schemes_found[str(path)] = scheme
    return examples


def _splits(cfg: Config, *, schemes_found: dict | None = None) -> tuple[list, list | None, list | None]:
    d = cfg.data
    if is_regression(cfg) and d.format == "ts":
        raise ValueError("task: regression reads float targets from csv, tsv, jsonl or label_text; "
                         "data.format 'ts' holds class labels")
    if d.format == "series":
        return _series_splits(cfg)
    train = _read(cfg, d.train, schemes_found=schemes_found)
    seed = cfg.trainer.seed
    if d.format == "lm_text":  # one token stream: slices are contiguous, never drawn
        dev = _read(cfg, d.dev) if d.dev is not None else None
        if d.dev_fraction is not None:  # the stream's last share
            n_dev = max(1, round(len(train) * d.dev_fraction))
            train, dev = train[:-n_dev], train[-n_dev:]
        test = _read(cfg, d.test) if d.test is not None else None
        cap = d.max_eval_examples
        return (train if d.max_train_examples is None else train[:d.max_train_examples],
                dev[:cap] if dev and cap else dev, test[:cap] if test and cap else test)
    if d.dev_fraction is not None:
        n_dev = max(1, round(len(train) * d.dev_fraction))
        dev, train = _sample(train, n_dev, seed, by_label=_by_label(cfg, train))
    else:
        dev = _read(cfg, d.dev) if d.dev is not None else None
    test = _read(cfg, d.test) if d.test is not None else None
    return (_cap(cfg, train, d.max_train_examples, 1), _cap(cfg, dev, d.max_eval_examples, 2),
            _cap(cfg, test, d.max_eval_examples, 3))


def _cap(cfg: Config, examples: list | None, n: int | None, salt: int) -> list | None:
    """``n`` of ``examples`` drawn as ``_sample`` draws (the seed salted per split)."""
    if not examples or n is None:
        return examples
    return _sample(examples, n, cfg.trainer.seed + salt, by_label=_by_label(cfg, examples))[0]


# ----------------------------------------------------------------------- vocabularies

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
    elif d.format == "ts":
        out["labels"] = Vocab.for_labels((ex.label for ex in train), name="class")
        if d.scale:
            out["scaler"] = SeriesScaler().fit(train)
    else:
        out, _ = count_vocabs(cfg, train)
    return out


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
        if name == "series":  # a forecaster's columns and MASE scale: plain JSON
            if not isinstance(v.get("columns"), list) or len(v.get("mase_scale", [])) != len(v.get("targets", ())):
                raise ValueError("series: columns, targets and mase_scale do not fit together")
            return v
        return SeriesScaler.from_dict(v) if name == "scaler" else Vocab.from_dict(v)

    return {name: restore(name, v) for name, v in saved.items()}


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
    if train and cfg.data.unk_replace:
        words = vocabs["words"]
        if words.unk_id is None:
            raise ValueError("data.unk_replace needs an <unk> token in the word vocabulary")
        out = UnkReplace(out, words, cfg.data.unk_replace, seed=cfg.trainer.seed + rank)
    return out


def model_kwargs(cfg: Config, vocabs: dict, train: list) -> dict:
    """The head's arguments: the config's options plus the sizes the data decides."""
    kind, opts = cfg.model.type, dict(cfg.model.options)
    if kind == "SequenceTagger":
        tags = vocabs["labels"].itos_
        opts.update(vocab_size=len(vocabs["words"]), num_tags=len(tags), tags=list(tags))
        if "chars" in vocabs:
            opts["char_vocab_size"] = len(vocabs["chars"])
    elif kind == "SequenceClassifier":
        opts["num_classes"] = 1 if is_regression(cfg) else len(vocabs["labels"])  # K outputs
        if cfg.data.format == "ts":
            opts["input_size"] = int(train[0].values.shape[1])
        else:
            opts["vocab_size"] = len(vocabs["words"])
    elif kind == "LanguageModel":
        opts.update(vocab_size=len(vocabs["words"]), carry_state=True, eos_id=vocabs["words"].eos_id)
    elif kind == "Generator":
        words = vocabs["words"]
        opts.update(vocab_size=len(words), num_classes=len(vocabs["labels"]), bos_id=words.bos_id,
                    eos_id=words.eos_id)
    elif kind == "Forecaster":
        series = vocabs["series"]
        D, targets = len(series["columns"]), series["targets"]
        opts.update(input_size=D, horizon=cfg.data.horizon,
                    target_indices=None if targets == list(range(D)) else targets)
    elif kind == "Seq2Seq":
        target = vocabs["target"]
        opts.update(source_vocab_size=len(vocabs["words"]), target_vocab_size=len(target),
                    bos_id=target.bos_id, eos_id=target.eos_id)
    elif kind == "BiLanguageModel":
        words = vocabs["words"]
        opts.update(vocab_size=len(words), bos_id=words.bos_id, eos_id=words.eos_id)
    if "contextual" in opts:
        opts["contextual"] = resolve_contextual(opts["contextual"])
    return opts


def _contextual_source(cfg: Config) -> str | None:
    """The biLM checkpoint folder a config's ``contextual`` option names, if any; a config that
    gives the stored form (``bilm:``, as a trained checkpoint keeps it) cannot start training."""
    contextual = cfg.model.options.get("contextual")
    if contextual is None:
        return None
    if "checkpoint" not in contextual:
        raise ValueError("model.options.contextual needs checkpoint: the folder of a pre-trained biLM "
                         "(rnnkit pretrain); the form with bilm: is what a trained model's checkpoint "
                         "stores, with the biLM's weights beside it")
    return contextual["checkpoint"]


def attach_contextual(model, cfg: Config, vocabs: dict) -> dict | None:
    """Load the pre-trained biLM that ``model.options.contextual`` names into ``model`` (a
    tagger or classifier built with its config) and map the head's words onto the biLM's."""
    path = _contextual_source(cfg)
    if path is None:
        return None
    bilm = ckpt.load(path, expected_type="BiLanguageModel")
    bilm_words = vocabs_from_json(bilm.vocabs)["words"]
    return model.contextual.load_bilm(bilm.model, list(vocabs["words"].itos_), bilm_words.stoi_,
                                      unk_id=bilm_words.unk_id)


def stored_config(cfg: Config) -> dict:
    """The run config a checkpoint keeps: the config itself, except that a ``contextual``
    option naming a biLM folder is replaced by the biLM's config (its weights are in the
    checkpoint), so that loading never needs that folder."""
    saved = cfg.model_dump(mode="json")
    contextual = saved["model"]["options"].get("contextual")
    if contextual is not None:
        saved["model"]["options"]["contextual"] = resolve_contextual(contextual)
    return saved


def metrics_for(cfg: Config, vocabs: dict):
    kind = cfg.model.type
    if kind == "SequenceTagger":
        scheme = getattr(cfg.data, "scheme", "conlleval")
        if cfg.data.format == "conll" and cfg.data.tag_scheme != "none" and scheme != "conlleval":
            # strict span F1 scores the tags as the model writes them: the files' chunks, rewritten
            scheme = model_tag_scheme(cfg).upper()
        return TaggingMetrics(vocabs["labels"].itos_, scheme=scheme)
    if kind == "SequenceClassifier":
        return RegressionMetrics() if is_regression(cfg) else ClassificationMetrics(vocabs["labels"].itos_)
    if kind == "LanguageModel":
        return PerplexityMetrics()
    if kind == "Generator":
        return ClassPerplexityMetrics(vocabs["labels"].itos_)
    if kind == "Forecaster":
        series = vocabs["series"]
        return ForecastMetrics(series["mase_scale"], season=series["season"], targets=series["targets"])
    if kind == "BiLanguageModel":
        return BiPerplexityMetrics()
    level = cfg.data.target_tokenizer.level
    # regex-tokenised targets are already split the way BLEU counts n-grams: score them as they
    # are; whitespace-split text is close to raw, so let sacrebleu tokenise it (13a)
    return BleuMetrics(vocabs["target"].itos_, join="" if level in ("char", "cjk") else " ",
                       tokenize="none" if level == "regex" else "13a")


# ------------------------------------------------------------------------------ train

@dataclass
class Prepared:
    """Everything a run needs, built from a config."""

    model: torch.nn.Module
    train: object
    dev: object | None
    test: object | None
    vocabs: dict = field(default_factory=dict)
    metrics: object = None
    counts: dict = field(default_factory=dict)
    tag_scheme: str | None = None  # span scheme of the training file's tags (None: not span tags)


def _build_head(cfg: Config, vocabs: dict, train) -> torch.nn.Module:
    """The head the config names, sized by the data, seeded: a forecaster's scaler fitted on the
    training rows, a pre-trained biLM attached when ``contextual`` names one."""
    from .models.registry import model_types

    seed_everything(cfg.trainer.seed)
    model = model_types()[cfg.model.type](**model_kwargs(cfg, vocabs, train))
    if cfg.model.type == "Forecaster" and model.scaling == "standard":  # on training rows only
        model.fit_scaler(torch.as_tensor(train.table.values[train.rows.start:train.rows.stop]))
    known = attach_contextual(model, cfg, vocabs)
    if known is not None:
        from ._log import get_logger

        get_logger(__name__).info("contextual features: the biLM knows %d of the head's %d words",
                                  known["known"], known["total"])
    return model


def prepare(cfg: Config, *, rank: int = 0, world: int = 1) -> Prepared:
    if cfg.data.streaming:
        return _prepare_streaming(cfg, rank=rank, world=world)
    found: dict = {}
    train, dev, test = _splits(cfg, schemes_found=found)
    vocabs = read_vocab_file(cfg)[0] if cfg.data.vocab is not None else fit_vocabs(cfg, train)
    model = _build_head(cfg, vocabs, train)
    return Prepared(
        model=model, vocabs=vocabs, metrics=metrics_for(cfg, vocabs),
        train=_batches(cfg, vocabs, train, train=True, rank=rank, world=world),
        dev=_batches(cfg, vocabs, dev, train=False, world=world) if dev else None,
        test=_batches(cfg, vocabs, test, train=False, world=world) if test else None,
        counts={"train": len(train), "dev": len(dev) if dev else 0, "test": len(test) if test else 0},
        tag_scheme=found.get(str(cfg.data.train)))


def _scheme_extra(cfg: Config, p: Prepared) -> dict:
    """What a checkpoint keeps of the tag schemes: the training file's and the model's, so that
    ``rnnkit predict --tag-scheme input`` can write tags as the user's files do."""
    if p.tag_scheme is None:
        return {}
    return {"tag_scheme": {"input": p.tag_scheme, "model": model_tag_scheme(cfg)}}


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
    sentence's scheme is read from its own tags (E-/S-: IOBES; a chunk opened by I-: IOB1; else
    IOB2). A file written in one scheme gets exactly the tags the whole-file reading gives; only
    a file mixing schemes, which the whole-file reading refuses, passes sentence by sentence."""
    from .data import schemes

    declared, target = cfg.data.tag_scheme, model_tag_scheme(cfg)
    for ex in examples:
        if ex.tags is not None and schemes.span_tags(ex.tags):
            scheme = schemes.detect([ex.tags]) if declared == "auto" else declared
            schemes.check(ex.tags, scheme, ex.where)
            if scheme != target:
                ex = replace(ex, tags=schemes.convert(ex.tags, scheme, target))
        elif ex.tags is not None and declared != "auto":
            schemes.check(ex.tags, declared, ex.where)  # O only passes; other tags are named
        yield ex


def _prepare_streaming(cfg: Config, *, rank: int, world: int) -> Prepared:
    """``prepare`` for ``data.streaming``: one pass over the train file counts its examples and
    fits the vocabularies (or ``data.vocab`` gives them), then batches are read from the file
    each epoch; dev and test are read whole."""
    from .models.registry import model_types

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


def _limit_note(cfg: Config) -> str:
    d = cfg.data
    if d.max_length is None or d.format in ("lm_text", "series"):
        return ""
    return (f"; an input over {d.max_length:,} steps is {'cut (reported)' if d.truncate else 'an error'} "
            "(data.max_length, data.truncate)")


def train(cfg: Config, *, resume: bool = False, stream=None) -> dict:
    """Train as ``cfg`` says; evaluate the best checkpoint on the test file if there is one.
    Returns (and writes to ``out_dir/results.json``) the summary; under torchrun, only rank 0
    does, the other ranks return {}."""
    from .training.trainer import setup_distributed

    stream = stream if stream is not None else sys.stderr
    rank, world = setup_distributed(cfg.trainer.backend, cfg.trainer.device)
    start = time.perf_counter()
    if cfg.trainer.num_threads is not None:
        torch.set_num_threads(cfg.trainer.num_threads)
    p = prepare(cfg, rank=rank, world=world)
    unit = {"lm_text": "tokens", "series": "windows"}.get(cfg.data.format, "examples")
    if rank == 0:
        streamed = " (streamed)" if cfg.data.streaming else ""
        print(f"rnnkit train {cfg.name}: {p.counts['train']:,} train{streamed} / {p.counts['dev']:,} dev / "
              f"{p.counts['test']:,} test {unit}; {cfg.model.type} with "
              f"{sum(x.numel() for x in p.model.parameters()):,} weights{_limit_note(cfg)}", file=stream, flush=True)
    trainer = Trainer(p.model, cfg.trainer, train=p.train, dev=p.dev, metrics=p.metrics,
                      vocabs=vocabs_to_json(p.vocabs), extra={"config": stored_config(cfg),
                                                              **_scheme_extra(cfg, p)},
                      name=cfg.name)
    history = trainer.fit(resume=resume)
    if rank != 0:  # rank 0 evaluates, writes and reports for every process
        return {}
    summary = {"name": cfg.name, "epochs": trainer.epoch, "best_epoch": trainer.best_epoch,
               "monitor": trainer.monitor, "best": trainer.best_value,
               "dev": next((r["dev"] for r in history if r["epoch"] == trainer.best_epoch and "dev" in r), None)}
    if p.test is not None:
        best = ckpt.load(Path(cfg.trainer.out_dir) / "best")
        summary["test"] = evaluate_batches(best.model, p.test, p.metrics)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    if cfg.data.streaming:  # the next run on this file can skip the vocabulary pass (data.vocab)
        write_vocab_file(Path(cfg.trainer.out_dir) / VOCAB_FILE, cfg, p.vocabs, p.counts["train"])
    out = Path(cfg.trainer.out_dir) / "results.json"
    out.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


# --------------------------------------------------------------------- evaluate, predict

def _restore(path: str | Path):
    loaded = ckpt.load(path)
    saved = loaded.extra.get("config")
    if saved is None:
        raise ckpt.CheckpointError(f"{path}: has no run config (extra.config); it was not written by "
                                   "`rnnkit train`, so rnnkit does not know how to read data for it")
    manifest = Path(path) / ckpt.MANIFEST
    try:
        cfg = parse_config(saved, source=f"{manifest} (extra.config)")
    except ConfigError as e:
        raise ckpt.CheckpointError(f"the run config stored in the checkpoint does not validate:\n{e}") from None
    try:
        vocabs = vocabs_from_json(loaded.vocabs)
    except (KeyError, TypeError, ValueError) as e:
        raise ckpt.CheckpointError(f"{manifest}: vocabs: not a vocabulary rnnkit wrote ({e})") from None
    _check_label_count(loaded.model, vocabs, manifest)
    return loaded, cfg, vocabs


def _check_label_count(model, vocabs: dict, manifest: Path) -> None:
    """The head scores exactly the labels its vocabulary names: a shorter list would fail only at
    the first prediction of a missing label, after earlier records were written."""
    outputs = model.config.get("num_tags", model.config.get("num_classes"))
    labels = vocabs.get("labels")
    if labels is None or outputs is None:
        return
    if len(labels) != outputs:
        raise ckpt.CheckpointError(f"{manifest}: vocabs.labels names {len(labels)} labels but the model scores "
                                   f"{outputs} (model_config); the checkpoint is inconsistent")


def evaluate(path: str | Path, data_path: str | Path, *, batch_size: int | None = None) -> dict:
    """Loss and metrics of the checkpoint at ``path`` on ``data_path`` (read like its training
    data). A label the checkpoint does not know is an error naming file:line."""
    loaded, cfg, vocabs = _restore(path)
    if cfg.trainer.num_threads is not None:  # as the run trained
        torch.set_num_threads(cfg.trainer.num_threads)
    examples = _read(cfg, data_path)
    if batch_size is not None:
        cfg = cfg.model_copy(update={"trainer": cfg.trainer.model_copy(update={"batch_size": batch_size})})
    batches = _batches(cfg, vocabs, examples, train=False)
    return evaluate_batches(loaded.model, batches, metrics_for(cfg, vocabs),
                            progress=f"evaluate {Path(data_path).name}" if cfg.trainer.progress else None)


def _input_lines(lines: Iterable[str], source: str, *, plain: str) -> Iterator[tuple[str, str | dict]]:
    """(where, text or JSON object) per non-blank line of ``predict``'s input; ``plain`` names
    what a plain line is, for the error a broken JSON line gets."""
    for n, line in enumerate(lines, 1):
        text = line.rstrip("\n")
        if n == 1 and text.startswith("\ufeff"):  # a byte-order mark is not part of the first token
            text = text[1:]
        if not text.strip():
            continue
        where = f"{source}:{n}"
        if not text.lstrip().startswith("{"):
            yield where, text
            continue
        try:
            yield where, json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg}); give {plain} or a JSON object") from None


def _records(lines: Iterable[str], source: str) -> Iterator[tuple[str, dict]]:
    """(where, {"text": ...} or {"tokens": [...]}) per non-blank line; JSON objects allowed."""
    for where, item in _input_lines(lines, source, plain='plain text (or {"text": ...}, {"tokens": [...]})'):
        if isinstance(item, str):
            yield where, {"text": item}
        elif isinstance(item, dict) and isinstance(item.get("tokens", item.get("text")), (str, list)):
            yield where, item
        else:
            raise ValueError(f'{where}: a JSON line needs "text" (a string) or "tokens" (a list); '
                             f"got {sorted(item) if isinstance(item, dict) else type(item).__name__}")


class Predictor:
    """A checkpoint loaded once, answering for inputs: what ``rnnkit predict`` and ``rnnkit serve``
    share. ``backend``: ``torch`` (the model itself) or ``onnxruntime`` (the ONNX file that
    ``rnnkit export`` wrote for this checkpoint, ``model_file`` or ``CKPT.onnx``); both give the
    same records. ``sampling``: a generator's decoding options (``SAMPLING``: strategy,
    temperature, top_k, seed, max_length); refused for other heads."""

    def __init__(self, path: str | Path, *, backend: str = "torch", model_file: str | Path | None = None,
                 tag_scheme: str = "model", sampling: dict | None = None) -> None:
        from ._checks import check_choice
        from .data.schemes import SCHEMES

        check_choice("backend", backend, BACKENDS)
        check_choice("tag_scheme", tag_scheme, TAG_SCHEMES)
        self.path = Path(path)
        self.loaded, self.cfg, self.vocabs = _restore(path)
        if self.cfg.model.type == "BiLanguageModel":
            raise ValueError(f"{path}: a BiLanguageModel has no predictions to print; its use is its "
                             "vectors: rnnkit embed CHECKPOINT FILE, or contextual features of a tagger "
                             "or classifier (model.options.contextual)")
        self.model, self.kind, self.backend = self.loaded.model, self.cfg.model.type, backend
        # tags are written as the model learnt them unless another span scheme is asked for
        schemes = self.loaded.extra.get("tag_scheme")
        self._schemes = None
        if tag_scheme != "model":
            if not isinstance(schemes, dict) or schemes.get("model") not in SCHEMES \
                    or schemes.get("input") not in SCHEMES:
                raise ValueError(f"tag_scheme={tag_scheme!r}: {path} holds no span tagger trained on CoNLL "
                                 "span tags (B-/I-/E-/S-TYPE), so its tags have no scheme to rewrite")
            self._schemes = (schemes["model"], schemes["input"] if tag_scheme == "input" else tag_scheme)
        self.sampling = _check_sampling(sampling, self.kind, self.path)
        self._calls = 0  # generator batches so far: a sampling seed is offset by it
        d = self.cfg.data
        self.series = d.format == "ts"
        self.forecast = d.format == "series"
        self._encoder = _encoder(self.cfg, self.vocabs)
        self._tokenize = None if self.series or self.forecast else _tokenizer(
            getattr(d, "predict_tokenizer", None) or getattr(d, "tokenizer", None) or getattr(d, "source_tokenizer"))
        self._run = self.model.predict
        if backend == "onnxruntime":
            if self.sampling:
                raise ValueError(f"{', '.join(self.sampling)}: the exported graph decodes greedily to the "
                                 "length it was exported with; sample with --backend torch")
            from .export import OnnxRunner

            self._run = OnnxRunner(self.loaded, model_file)

    def tokens(self, obj: dict, where: str) -> list[str]:
        """The tokens of one input: its ``tokens`` list, or its ``text`` tokenised as training was."""
        if isinstance(obj.get("tokens"), list):
            tokens = [str(t) for t in obj["tokens"]]
        elif isinstance(obj.get("text"), str):
            text = obj["text"]
            if getattr(self.cfg.data, "markup", False):  # as the training documents were read
                from .data.text_readers import strip_markup

                text = strip_markup(text)
            tokens = self._tokenize(text)
        else:
            raise ValueError(f'{where}: an input needs "text" (a string) or "tokens" (a list); got keys {sorted(obj)}')
        if not tokens:
            raise ValueError(f"{where}: no tokens in {obj.get('text', obj.get('tokens'))!r}")
        return tokens

    def batch(self, inputs: list[tuple[str, dict]], *, probabilities: bool = False) -> list[dict]:
        """One record per (where, input) -- the input's fields plus the prediction -- in one batch.
        ``probabilities``: a classifier's records also map every label to its probability."""
        if self.series or self.forecast:
            what = "a series classifier reads .ts files (rnnkit predict CKPT FILE.ts)" if self.series else \
                "a forecaster reads a series file (rnnkit predict CKPT FILE.csv)"
            raise ValueError(f"{self.path}: {what}, not text")
        if self.kind == "Generator":
            return self._generate(inputs)
        tokens = [self.tokens(obj, where) for where, obj in inputs]
        example = TaggedExample if self.kind == "SequenceTagger" else TextExample  # unlabelled inputs
        form = word_form(self.cfg.data) or (lambda toks: toks)  # records keep the tokens as given
        items = [self._encoder(example(form(toks), None, where)) for (where, _), toks in zip(inputs, tokens)]
        if self.kind == "LanguageModel":
            # the model learnt from one stream in which <eos> ends each line, so a prompt starts
            # as a line does: right after an <eos>
            items = [{"inputs": [self.vocabs["words"].eos_id] + item["inputs"]} for item in items]
        batch = collate(items)
        with torch.no_grad():
            out = self._run(batch) if not self.sampling else self._continue(batch)
        rows = out.tolist() if isinstance(out, torch.Tensor) else out
        records = [{**obj, **_decode(self.kind, row, toks, self.vocabs, self.cfg.data,
                                     newlines=bool(self.sampling.get("across_lines")))}
                   for (_, obj), toks, row in zip(inputs, tokens, rows)]
        if self._schemes is not None:
            from .data.schemes import convert

            for record in records:
                record["tags"] = convert(record["tags"], *self._schemes)
        if probabilities and self.kind == "SequenceClassifier" and "labels" in self.vocabs:
            names = self.vocabs["labels"].itos_
            with torch.no_grad():
                p = self._logits(batch).softmax(-1).tolist()
            for record, row in zip(records, p):
                record["probabilities"] = {name: round(q, 6) for name, q in zip(names, row)}
        return records

    def _continue(self, batch: dict) -> list[list[int]]:
        """A language model's continuations with the sampling options (``max_length`` is the
        number of new tokens)."""
        options = dict(self.sampling)
        if "max_length" in options:
            options["max_new_tokens"] = options.pop("max_length")
        if options.pop("across_lines", False):
            options["stop_at_eos"] = False
        if options.get("seed") is not None:  # one seed per call, so that batches differ but repeat
            options["seed"] += self._calls
        self._calls += 1
        return self.model.predict(batch, **options)

    def _generate(self, inputs: list[tuple[str, dict]]) -> list[dict]:
        """Text generated for each input's class (its ``label``, or its ``text`` as a class name)."""
        labels = self.vocabs["labels"]
        ids = []
        for where, obj in inputs:
            name = obj.get("label", obj.get("text"))
            if not isinstance(name, str) or name.strip() not in labels.stoi_:
                raise ValueError(f"{where}: {name!r} is not a class of this generator; it knows "
                                 f"{', '.join(labels.itos_)}")
            ids.append(labels.stoi_[name.strip()])
        options = dict(self.sampling)
        if options.get("seed") is not None:  # one seed per call, so that batches differ but repeat
            options["seed"] += self._calls
        self._calls += 1
        rows = self.model.predict({"condition": torch.tensor(ids)}, **options)
        return [{**{k: v for k, v in obj.items() if k != "text"}, "label": labels.itos_[i],
                 **_decode(self.kind, row, [], self.vocabs, self.cfg.data)}
                for (_, obj), i, row in zip(inputs, ids, rows)]

    def _logits(self, batch: dict) -> torch.Tensor:
        logits = getattr(self._run, "logits", None)
        return logits(batch) if logits is not None else self.model(batch)

    def left_context(self, tokens: list[str]) -> list[str]:
        """A tagger's tag for each token when it sees only the tokens up to it (its prefix): what
        a left-to-right model could know. For a bidirectional tagger, the tokens whose tag
        differs from ``batch``'s are the ones decided by later words."""
        if self.kind != "SequenceTagger":
            raise ValueError(f"left-context tags need a SequenceTagger; this checkpoint holds a {self.kind}")
        prefixes = [("<left>", {"tokens": tokens[:n]}) for n in range(1, len(tokens) + 1)]
        return [record["tags"][-1] for record in self.batch(prefixes)]

    def records(self, lines: Iterable[str], *, source: str = "<stdin>", batch_size: int = 64,
                probabilities: bool = False, windows: str = "last") -> Iterator[dict]:
        """JSON-safe predictions, one dict per input line (see ``rnnkit predict --help``); a
        forecaster reads the series file ``source`` and forecasts after its ``last`` row or from
        ``all`` its windows."""
        if windows != "last" and not self.forecast:
            raise ValueError(f"windows={windows!r} chooses a forecaster's origins; {self.path} holds a {self.kind}")
        if probabilities and (self.kind != "SequenceClassifier" or "labels" not in self.vocabs):
            raise ValueError(f"probabilities are a classifier's; {self.path} holds a "
                             f"{'regression model' if self.kind == 'SequenceClassifier' else self.kind}")
        if self.series:
            yield from _predict_series(self, source, batch_size, probabilities=probabilities)
            return
        if self.forecast:
            yield from _predict_forecasts(self._run, self.cfg, self.vocabs, source, batch_size, windows)
            return
        parse = _label_records if self.kind == "Generator" else _records
        pending: list[tuple[str, dict]] = []
        for where, obj in parse(lines, source):
            pending.append((where, obj))
            if len(pending) >= batch_size:
                yield from self.batch(pending, probabilities=probabilities)
                pending.clear()
        if pending:
            yield from self.batch(pending, probabilities=probabilities)


BACKENDS = ("torch", "onnxruntime")
TAG_SCHEMES = ("model", "input", "iob1", "iob2", "iobes")  # how a span tagger's predictions are written
WINDOWS = ("last", "all")
SAMPLING = {"strategy": "greedy", "temperature": 1.0, "top_k": None, "seed": None, "max_length": None,
            "across_lines": False}


def _check_sampling(sampling: dict | None, kind: str, path: Path) -> dict:
    """A generator's or language model's decoding options (``SAMPLING``'s keys); refused for
    other heads, which would ignore them. ``across_lines`` (language models): a line end
    (``<eos>``) is written as a newline and generation goes on, to ``max_length`` tokens."""
    from ._checks import check_choice

    sampling = {k: v for k, v in (sampling or {}).items() if v is not None and v != SAMPLING.get(k)}
    unknown = sorted(set(sampling) - set(SAMPLING))
    if unknown:
        raise ValueError(f"unknown sampling option(s) {', '.join(unknown)}; allowed: {', '.join(SAMPLING)}")
    if sampling and kind not in ("Generator", "LanguageModel"):
        raise ValueError(f"{', '.join(sampling)} set how a Generator or LanguageModel samples; {path} holds a {kind}")
    if "across_lines" in sampling and kind != "LanguageModel":
        raise ValueError(f"across_lines continues a language model past a line end; {path} holds a {kind}")
    if "strategy" in sampling:
        check_choice("strategy", sampling["strategy"], ("greedy", "sample"))
    if sampling.get("strategy", "greedy") == "greedy" and ({"temperature", "top_k", "seed"} & set(sampling)):
        raise ValueError(f"{', '.join(sorted({'temperature', 'top_k', 'seed'} & set(sampling)))}: used by "
                         "strategy 'sample' only; greedy decoding takes the most likely token")
    return sampling


def predict(path: str | Path, lines: Iterable[str], *, source: str = "<stdin>",
            batch_size: int = 64, backend: str = "torch", model_file: str | Path | None = None,
            windows: str = "last", sampling: dict | None = None, tag_scheme: str = "model",
            probabilities: bool = False) -> Iterator[dict]:
    """JSON-safe predictions, one dict per input line (see ``rnnkit predict --help``).
    ``windows``: a forecaster's origins (``last`` or ``all``); ``sampling``: a generator's
    ``strategy``, ``temperature``, ``top_k``, ``seed``, ``max_length``; ``tag_scheme``: a span
    tagger's tags as the model writes them, as its training files did (``input``), or in a named
    scheme; ``probabilities``: a classifier's records map every label to its probability."""
    from ._checks import check_choice

    check_choice("windows", windows, WINDOWS)
    yield from Predictor(path, backend=backend, model_file=model_file, sampling=sampling,
                         tag_scheme=tag_scheme).records(lines, source=source, batch_size=batch_size,
                                                        windows=windows, probabilities=probabilities)


def _label_records(lines: Iterable[str], source: str) -> Iterator[tuple[str, dict]]:
    """(where, {"label": ...}) per non-blank line: a class name, or a JSON object with "label"."""
    for where, item in _input_lines(lines, source, plain='a class name (or {"label": ...})'):
        if isinstance(item, str):
            yield where, {"label": item.strip()}
        elif isinstance(item, dict) and isinstance(item.get("label"), str):
            yield where, item
        else:
            raise ValueError(f'{where}: a JSON line needs "label" (a class name); '
                             f"got {sorted(item) if isinstance(item, dict) else type(item).__name__}")


def _predict_forecasts(run, cfg: Config, vocabs: dict, source: str, batch_size: int,
                       windows: str) -> Iterator[dict]:
    """Forecasts in the series' own units from a series file read as training read its own:
    after the file's last row (``last``), or from every ``data.stride``-th origin and the last
    (``all``), with the file's values as ``gold`` where it has all ``horizon`` of them."""
    from .data import SeriesWindow

    if source in ("-", "<stdin>"):
        raise ValueError("a forecaster reads a series file: give FILE (standard input is for text)")
    d, series = cfg.data, vocabs["series"]
    table = _table(d, source)
    if table.columns != series["columns"]:
        raise ValueError(f"{source}: columns {', '.join(table.columns)}; the model reads {', '.join(series['columns'])}")
    N, W, h, targets = len(table), d.window, d.horizon, series["targets"]
    if N < W:
        raise ValueError(f"{source}: {N} rows; a forecast needs window = {W} rows before it")
    origins = list(range(W, N + 1, d.stride)) if windows == "all" else []
    if N not in origins:
        origins.append(N)
    chosen = [SeriesWindow(table.values[t - W:t], table.values[t:t + h][:, targets] if t + h <= N else None,
                           t, table.where(t - 1)) for t in origins]
    names = [series["columns"][i] for i in targets]
    for start in range(0, len(chosen), batch_size):
        part = chosen[start:start + batch_size]
        with torch.no_grad():
            out = run(collate([{"inputs": w.inputs} for w in part]))
        for w, values in zip(part, out.reshape(len(part), h, len(names)).tolist()):
            record = {"where": w.where, "origin": table.times[w.origin - 1] if table.times else w.origin,
                      "forecast": {name: [row[j] for row in values] for j, name in enumerate(names)}}
            if w.targets is not None:
                record["gold"] = {name: w.targets[:, j].tolist() for j, name in enumerate(names)}
            yield record


def _predict_series(predictor: Predictor, source: str, batch_size: int, *,
                    probabilities: bool = False) -> Iterator[dict]:
    """Class of each series of a .ts file (its labels, if any, are reported as ``gold``)."""
    run, cfg, vocabs = predictor._run, predictor.cfg, predictor.vocabs
    if source in ("-", "<stdin>"):
        raise ValueError("a series classifier reads a .ts file: give FILE (standard input is for text)")
    examples = read_ts(source, missing=cfg.data.missing, encoding=cfg.data.encoding).examples
    gold = [ex.label for ex in examples]
    examples = [replace(ex, label=None) for ex in examples]
    items = _items(cfg, {k: v for k, v in vocabs.items() if k != "labels"}, examples)
    names = vocabs["labels"].itos_
    for start in range(0, len(items), batch_size):
        batch = collate(items[start:start + batch_size])
        with torch.no_grad():
            ids = run(batch).tolist()
            p = predictor._logits(batch).softmax(-1).tolist() if probabilities else [None] * len(ids)
        for ex, label, i, row in zip(examples[start:], gold[start:], ids, p):
            yield {"where": ex.where, "label": names[i], **({"gold": label} if label is not None else {}),
                   **({"probabilities": {n: round(q, 6) for n, q in zip(names, row)}} if row else {})}


def _decode(kind: str, row, tokens: list[str], vocabs: dict, d, *, newlines: bool = False) -> dict:
    if kind == "SequenceTagger":
        return {"tokens": tokens, "tags": vocabs["labels"].decode(row)}
    if kind == "SequenceClassifier":
        if "labels" not in vocabs:  # regression: the K predicted values
            return {"value": row[0] if len(row) == 1 else row}
        return {"label": vocabs["labels"].itos_[int(row)]}
    target = vocabs.get("target", vocabs["words"])
    specials = {target.pad_id, target.bos_id} | (set() if newlines else {target.eos_id})
    words = ["\n" if newlines and i == target.eos_id else target.itos_[i] for i in row if i not in specials]
    tokenizer = getattr(d, "target_tokenizer", None) or getattr(d, "tokenizer", None)
    join = "" if tokenizer is not None and tokenizer.level in ("char", "cjk") else " "
    key = {"Seq2Seq": "translation", "Generator": "text"}.get(kind, "continuation")
    text = join.join(words)
    return {key: text.replace(" \n ", "\n").replace(" \n", "\n").replace("\n ", "\n") if newlines else text}


# ------------------------------------------------------------------------------- export

def export_checkpoint(path: str | Path, out: str | Path | None = None, *, format: str = "onnx",
                      max_new_tokens: int | None = None, check_examples: int = 64) -> dict:
    """``rnnkit export``: the checkpoint's model to ``out`` (default: beside the checkpoint
    folder, ``runs/x/best`` -> ``runs/x/best.onnx``), with a ``.json`` beside it holding what a
    consumer needs (input names and dims, vocabularies, labels, tokenizer, special ids), checked
    against the model on up to ``check_examples`` held-out examples (the run's test file, else
    its dev file) and on generated padded batches."""
    from .export import export

    loaded, cfg, vocabs = _restore(path)
    if cfg.model.type == "Generator":  # before reading held-out data that it could not use
        from .export import ExportError

        raise ExportError(f"{path}: cannot export a Generator: export takes SequenceClassifier, SequenceTagger, "
                          "LanguageModel, Seq2Seq and Forecaster heads")
    out = Path(out) if out is not None else Path(path).with_suffix(f".{format}")
    check, held_out = _held_out(cfg, vocabs, check_examples)
    d = cfg.data
    tokenizer = getattr(d, "predict_tokenizer", None) or getattr(d, "tokenizer", None) or getattr(d, "source_tokenizer", None)
    labels = vocabs["labels"].itos_ if "labels" in vocabs else None
    meta = {"checkpoint": {"path": str(path), "weights_sha256": loaded.manifest["files"]["model.safetensors"]["sha256"]},
            "labels": list(labels) if labels is not None else None, "vocabs": loaded.vocabs,
            "tokenizer": tokenizer.model_dump(mode="json") if tokenizer is not None else None,
            "lowercase": bool(getattr(d, "lowercase", False)),  # CoNLL(-U) word forms lowercased on reading
            "normalize_digits": bool(getattr(d, "normalize_digits", False)),  # ... and their digits made 0
            "max_length": d.max_length, "truncate": d.truncate, "held_out": held_out}
    report = export(loaded.model, out, format=format, check=check, meta=meta, max_new_tokens=max_new_tokens)
    return {**report, "held_out": held_out}


def _held_out(cfg: Config, vocabs: dict, limit: int) -> tuple[list[dict], str]:
    """Up to ``limit`` examples of the run's test (else dev) file, batched as evaluation batches
    them; ([], why not) when the file is not there (the check then uses generated inputs)."""
    if cfg.data.format == "series" and Path(cfg.data.train).is_file():  # test or dev cut from the train file
        _, dev, test = _series_splits(cfg)
        name, windows = ("test", test) if test else ("dev", dev)
        if windows and getattr(cfg.data, name) is None:
            small = cfg.model_copy(update={"trainer": cfg.trainer.model_copy(update={"batch_size": 16})})
            return list(_batches(small, vocabs, windows[:limit], train=False)), \
                f"{len(windows[:limit])} {name} windows of {cfg.data.train}"
    for name in ("test", "dev"):
        path = getattr(cfg.data, name)
        if path is None:
            continue
        if not Path(path).is_file():
            return [], f"none (the run's {name} file {path} is not here)"
        examples = _read(cfg, path)
        small = cfg.model_copy(update={"trainer": cfg.trainer.model_copy(update={"batch_size": 16})})
        if cfg.data.format == "lm_text":
            examples = examples[:limit * 8]
        batches, n = [], 0
        for batch in _batches(small, vocabs, examples if cfg.data.format == "lm_text" else examples[:limit], train=False):
            batches.append(batch)
            n += len(batch["lengths"])
            if n >= limit:
                break
        return batches, f"{n} sequences of {path}"
    return [], "none (the run has no test or dev file)"


# ------------------------------------------------------------------------------ inspect

def inspect_gradients(source: str | Path, data_path: str | Path, out: str | Path, *,
                      batch_size: int = 16) -> dict:
    """``rnnkit inspect gradients``: |dL/dh_t| per position, layer and direction on the first
    ``batch_size`` examples of ``data_path`` (read as the run's data), for the checkpoint at
    ``source`` and for an untrained model of its config; or, given a config file, for the
    untrained model alone. Writes ``out/gradients.json`` and ``out/gradients.png``."""
    from .inspect import gradients_through_time, write_report
    from .config import load_config
    from .models.registry import model_types

    if Path(source).is_dir():
        loaded, cfg, vocabs = _restore(source)
        models = {"trained": loaded.model}
        examples = _read(cfg, data_path)
    else:
        cfg = load_config(source)
        examples = _read(cfg, data_path)
        if cfg.data.format == "series":  # the scaler and MASE scale from the inspected file itself
            table = _table(cfg.data, data_path)
            examples = _TrainWindows(examples, table, range(len(table)))
        vocabs = fit_vocabs(cfg, examples)
        models = {}
    seed_everything(cfg.trainer.seed)
    kind = model_types()[cfg.model.type]
    models["untrained"] = (kind(**models["trained"].config) if "trained" in models
                           else kind(**model_kwargs(cfg, vocabs, examples)))
    if cfg.model.type == "Forecaster" and models["untrained"].scaling == "standard":
        # the untrained twin scales its inputs as the trained model does (or as training would)
        twin = models["untrained"]
        if "trained" in models:
            twin.load_state_dict({k: v for k, v in models["trained"].state_dict().items()
                                  if k in ("mean_", "scale_", "fitted_")}, strict=False)
        else:
            twin.fit_scaler(torch.as_tensor(examples.table.values))
    small = cfg.model_copy(update={"trainer": cfg.trainer.model_copy(update={"batch_size": batch_size})})
    chosen = examples if cfg.data.format == "lm_text" else examples[:batch_size]
    batch = next(iter(_batches(small, vocabs, chosen, train=False)), None)
    if batch is None:
        raise ValueError(f"{data_path}: no examples to inspect")
    reports = {label: gradients_through_time(model, batch) for label, model in models.items()}
    json_path, png_path = write_report(reports, out, title=f"{cfg.model.type}: |dL/dh_t| on {Path(data_path).name}")
    return {"json": str(json_path), "png": str(png_path), **{k: {"loss": r["loss"]} for k, r in reports.items()}}


def inspect_attention(path: str | Path, data_path: str | Path, out: str | Path, *, max_sentences: int = 8) -> dict:
    """``rnnkit inspect attention``: for the first ``max_sentences`` sources of ``data_path`` (one
    sentence per line, plain text or JSON with "text" or "tokens"; a line with a TAB is read as
    the run's parallel file, its source column), the greedy translation of a ``Seq2Seq`` with
    attention and the weights of every step. Writes ``out/attention.json`` and a heat map per
    sentence (``out/attention_NNN.png``)."""
    from .data._io import iter_lines
    from .inspect import attention_maps, write_attention

    if not Path(path).is_dir():
        raise ValueError(f"{path}: attention maps need a trained checkpoint folder (e.g. runs/x/best)")
    loaded, cfg, vocabs = _restore(path)
    model = loaded.model
    if cfg.model.type != "Seq2Seq" or model.attention is None:
        held = f"a Seq2Seq with context {model.context!r}" if cfg.model.type == "Seq2Seq" else f"a {cfg.model.type}"
        raise ValueError(f"{path}: holds {held}; attention maps need a Seq2Seq trained with "
                         "model.options.context: attention")
    predictor = Predictor(path)
    column = cfg.data.source_column
    inputs = []
    for where, obj in _records((line for _, line in iter_lines(data_path, cfg.data.encoding)), str(data_path)):
        if isinstance(obj.get("text"), str) and "\t" in obj["text"]:
            fields = obj["text"].split("\t")
            if not -len(fields) <= column < len(fields):
                raise ValueError(f"{where}: no source column {column} in {len(fields)} TAB-separated fields")
            obj = {"text": fields[column]}
        inputs.append((where, predictor.tokens(obj, where)))
        if len(inputs) == max_sentences:
            break
    if not inputs:
        raise ValueError(f"{data_path}: no sentences to inspect")
    items = [predictor._encoder(TextExample(tokens, None, where)) for where, tokens in inputs]
    maps = attention_maps(model, collate(items))
    target = vocabs["target"]
    sentences = [{"where": where, "source": tokens,
                  "target": [target.itos_[i] for i in m["ids"]], "weights": m["weights"]}
                 for (where, tokens), m in zip(inputs, maps)]
    json_path, pictures = write_attention(sentences, out)
    return {"json": str(json_path), "png": [str(p) for p in pictures], "sentences": len(sentences)}
