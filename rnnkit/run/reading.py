"""Files to examples, as a run's config says: the reader per format (lazily, or whole), the CoNLL
word forms and span schemes, seeded slices (dev, caps), and a series' chronological windows."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from ..config import Config, TokenizerConfig
from ..data import (TaggedExample, Tokenizer, chronological_split, iter_conll, iter_conllu, iter_delimited,
                    iter_jsonl, iter_label_text, iter_lm_text, iter_parallel, read_folder, read_lines,
                    read_series_table, read_ts, series_windows)
from ..data.frames import read_frames_manifest


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
    if data.format == "frames":
        return read_frames(data, path, target=None)  # unlabelled; _read asks for the head's target
    if data.format == "audio":  # audio (issue #17): a manifest's utterances as feature frames
        from .audio import read_audio

        return read_audio(data, path)
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


# ----------------------------------------------------------------- numeric frames (format frames)

FRAMES_TARGET = {"SequenceTagger": "labels", "SequenceClassifier": "label", "Seq2Seq": "transcript"}


def frames_target(model_type: str | None) -> str | None:
    """The manifest field a head learns from: per-frame ``labels`` (tagger), one ``label``
    (classifier) or a ``transcript`` (seq2seq)."""
    return FRAMES_TARGET.get(model_type)


def read_frames(data, path: str | Path, *, target: str | None) -> list:
    """A frames manifest's examples, as ``data`` (a frames config section) says."""
    return read_frames_manifest(path, target=target, feature_dim=data.feature_dim, array_key=data.array_key,
                                encoding=data.encoding)

# ----------------------------------------------------------------- end of numeric frames


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


class Retagger:
    """One sentence's span tags checked against ``scheme`` and rewritten in the model's.

    A sentence that breaks the scheme is an error naming its line when the scheme was declared
    (``data.tag_scheme``). Otherwise (``auto``) it is read as conlleval reads it -- an I-X that
    opens a chunk opens one -- and rewritten so (B-X in IOB2), which is also a path a CRF's
    constraints allow (left as it was, each broken transition would cost the CRF 1e4); it is
    counted, so that ``report`` can say how many and where the first was, instead of passing
    them over silently."""

    def __init__(self, cfg: Config, scheme: str) -> None:
        self.scheme, self.target = scheme, model_tag_scheme(cfg)
        self.strict = cfg.data.tag_scheme != "auto"
        self.lenient, self.first = 0, None

    def __call__(self, ex):
        from ..data import schemes

        if ex.tags is None:
            return ex
        why = schemes.violation(ex.tags, self.scheme)
        if why is not None:
            if self.strict:
                schemes.check(ex.tags, self.scheme, ex.where)
            self.lenient += 1
            self.first = self.first or f"{ex.where}: {why}"
        if self.scheme == self.target and why is None:
            return ex
        # through the spans (not convert's shortcut for one scheme): a broken path is rewritten too
        return replace(ex, tags=schemes.write(schemes.spans(ex.tags, self.scheme), len(ex.tags), self.target))

    def report(self, source) -> None:
        if self.lenient:
            from .._log import get_logger

            get_logger(__name__).warning(
                "rnnkit: %s: %d sentence(s) break %s (first: %s); read as conlleval reads them (an I-X "
                "that opens a chunk opens one, rewritten so); declare data.tag_scheme to refuse them",
                source, self.lenient, self.scheme.upper(), self.first)


def _retag(cfg: Config, examples: list, path) -> tuple[list, str | None]:
    """CoNLL span tags rewritten in the model's scheme, and the scheme the file was written in
    (None: not span tags): ``Retagger`` over every sentence of the file."""
    from ..data import schemes

    declared = cfg.data.tag_scheme
    if cfg.model.type != "SequenceTagger" or declared == "none":
        return examples, None
    gold = [ex.tags for ex in examples if ex.tags is not None]
    if declared == "auto":
        if not schemes.span_tags(t for tags in gold for t in tags):
            return examples, None
        declared = schemes.detect(gold)
    retag = Retagger(cfg, declared)
    examples = [retag(ex) for ex in examples]
    retag.report(path)
    return examples, declared


def _read(cfg: Config, path, *, schemes_found: dict | None = None) -> list:
    if cfg.data.format == "frames":
        return read_frames(cfg.data, path, target=frames_target(cfg.model.type))
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
