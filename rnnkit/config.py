"""One validated schema for a training run: ``data``, ``model``, ``trainer``.

    cfg = load_config("examples/ud_pos.yaml", overrides=["trainer.epochs=3"])
    cfg.trainer.optimizer.lr, cfg.data.train, cfg.model.type

Every section is a frozen pydantic model with ``extra="forbid"``: an unknown field, a wrong type
or a value out of range is a ``ConfigError`` naming the file and line (for YAML input), the
field's dotted path, the value and what is allowed. ``data`` is chosen by its ``format``;
``model.options`` are the head's keyword arguments, checked against its signature (the sizes
that come from the data -- vocabulary, number of tags or classes -- are filled in by rnnkit).
"""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from .training.options import OptimizerConfig, SchedulerConfig, Strict, TrainerConfig

__all__ = ["Config", "ConfigError", "load_config", "parse_config", "apply_overrides", "DATA_FORMATS",
           "STREAMING_FORMATS", "MODEL_TYPES", "DERIVED_OPTIONS", "resolve_contextual", "TokenizerConfig",
           "TrainerConfig", "OptimizerConfig", "SchedulerConfig"]


class ConfigError(ValueError):
    """A configuration that does not validate; the message lists every problem, one per line."""


class TokenizerConfig(Strict):
    level: Literal["whitespace", "regex", "char", "cjk"] = "whitespace"  # how text becomes tokens
    pattern: str | None = None        # token regex, for level: regex
    lowercase: bool = False           # lower-case before splitting
    normalize_digits: bool = False    # every digit becomes 0


# Text formats refuse (or, with truncate, cut) a sequence longer than this by default: one
# 100k-token line would otherwise make a CRF or a seq2seq decoder run for minutes. Real
# sentences and documents stay far below it (an IMDB review: about 2,500 tokens).
TEXT_MAX_LENGTH = 10_000


class _Data(Strict):
    train: str                                            # training file (format folder: the split's folder)
    dev: str | None = None                                # dev file; null: see dev_fraction
    test: str | None = None                               # test file, evaluated with the best checkpoint
    dev_fraction: float | None = Field(None, gt=0, lt=1)  # dev drawn from train (seeded, stratified; lm_text: the tail)
    max_train_examples: int | None = Field(None, ge=1)    # train on N examples drawn as dev is (lm_text: first N tokens)
    max_eval_examples: int | None = Field(None, ge=1)     # evaluate on N dev / test examples drawn as dev is
    min_freq: int = Field(1, ge=1)                        # vocabulary: keep tokens seen this often
    max_vocab: int | None = Field(None, ge=4)             # vocabulary: largest size, specials included
    max_length: int | None = Field(None, ge=1)            # longest input sequence; null: any
    truncate: bool = False                                # cut longer sequences instead of raising
    encoding: str = "utf-8"                               # text encoding of the files
    unk_replace: float = Field(0.0, ge=0, lt=1)           # train: a word seen once is <unk> with this chance
    vocab: str | None = None                              # vocabulary file (a run's vocab.json) instead of fitting
    streaming: bool = False                               # read train lazily, for files larger than memory
    shuffle_buffer: int = Field(10_000, ge=1)             # streaming: examples shuffled and bucketed together
    num_workers: int = Field(0, ge=0)                     # streaming: DataLoader workers reading train; 0: none

    @model_validator(mode="after")
    def _dev_source(self):
        if self.dev is not None and self.dev_fraction is not None:
            raise ValueError(f"give either dev ({self.dev!r}) or dev_fraction ({self.dev_fraction}), not both")
        return self

    @model_validator(mode="after")
    def _streaming(self):
        if not self.streaming:
            # compared with the defaults, not model_fields_set: a checkpoint stores every field
            given = [f"{name} ({getattr(self, name)})" for name in ("shuffle_buffer", "num_workers")
                     if getattr(self, name) != type(self).model_fields[name].default]
            if given:
                raise ValueError(f"{', '.join(given)} only apply with streaming: true")
            return self
        if self.format not in STREAMING_FORMATS:
            raise ValueError(f"streaming reads {', '.join(STREAMING_FORMATS)} lazily; data.format "
                             f"{self.format!r} is read whole (set streaming: false)")
        if self.format == "lm_text" and self.num_workers:
            raise ValueError(f"an lm_text stream is read in order by the training process; num_workers "
                             f"({self.num_workers}) must be 0")
        if self.dev_fraction is not None:
            raise ValueError(f"streaming cannot carve dev_fraction ({self.dev_fraction}) out of a file it "
                             "does not hold; give a dev file")
        return self


class ConlluData(_Data):
    format: Literal["conllu"]
    max_length: int | None = Field(TEXT_MAX_LENGTH, ge=1)  # longest input; null: no limit
    tag: Literal["upos", "xpos", "deprel"] = "upos"  # which CoNLL-U column is the tag
    lowercase: bool = False                          # lower-case the word forms
    normalize_digits: bool = False                   # every digit of a word form becomes 0
    chars: bool = False                              # character features (batch key chars)
    predict_tokenizer: TokenizerConfig = TokenizerConfig()  # splits raw text for `rnnkit predict`


class ConllData(_Data):
    format: Literal["conll"]
    max_length: int | None = Field(TEXT_MAX_LENGTH, ge=1)  # longest input; null: no limit
    token_column: int = 0                   # column of the token (negative: from the end)
    tag_column: int = -1                    # column of the tag
    separator: str | None = None            # column separator; null: any whitespace
    lowercase: bool = False                 # lower-case the tokens
    normalize_digits: bool = False          # every digit of a token becomes 0
    scheme: Literal["conlleval", "IOB1", "IOB2", "IOBES"] = "conlleval"  # span F1: lenient, or seqeval strict
    tag_scheme: Literal["auto", "iob1", "iob2", "iobes", "none"] = "auto"  # the files' span tags (none: not spans)
    chars: bool = False                     # character features (batch key chars)
    predict_tokenizer: TokenizerConfig = TokenizerConfig()  # splits raw text for `rnnkit predict`


class DelimitedData(_Data):
    format: Literal["csv", "tsv"]
    max_length: int | None = Field(TEXT_MAX_LENGTH, ge=1)  # longest input; null: no limit
    text_column: str | int = "text"         # header name or 0-based index of the text
    label_column: str | int = "label"       # header name or 0-based index of the label
    header: bool = True                     # the first row names the columns
    tokenizer: TokenizerConfig = TokenizerConfig()


class JsonlData(_Data):
    format: Literal["jsonl"]
    max_length: int | None = Field(TEXT_MAX_LENGTH, ge=1)  # longest input; null: no limit
    text_field: str = "text"                # key of the text (string or token list)
    label_field: str = "label"              # key of the label
    tokenizer: TokenizerConfig = TokenizerConfig()


class LabelTextData(_Data):
    format: Literal["label_text"]           # `label text...` per line (SST-2 sentence level)
    max_length: int | None = Field(TEXT_MAX_LENGTH, ge=1)  # longest input; null: no limit
    tokenizer: TokenizerConfig = TokenizerConfig()


class FolderData(_Data):
    format: Literal["folder"]               # ROOT/<label>/*.txt, one document per file (aclImdb)
    max_length: int | None = Field(TEXT_MAX_LENGTH, ge=1)  # longest input; null: no limit
    labels: list[str] = Field(min_length=2)  # the label folders to read (e.g. [neg, pos]; not unsup)
    pattern: str = "*.txt"                  # file names to read in each label folder
    markup: bool = True                     # strip HTML tags and entities (<br />, &amp;)
    tokenizer: TokenizerConfig = TokenizerConfig()


class ParallelData(_Data):
    format: Literal["parallel"]             # source TAB target [TAB more columns]
    max_length: int | None = Field(TEXT_MAX_LENGTH, ge=1)  # longest input; null: no limit
    source_column: int = 0
    target_column: int = 1
    num_columns: int | None = Field(None, ge=2)  # columns every line must have; null: at least 2
    source_tokenizer: TokenizerConfig = TokenizerConfig()
    target_tokenizer: TokenizerConfig = TokenizerConfig()
    max_target_length: int | None = Field(None, ge=1)  # longest target, BOS/EOS not counted


class TextData(_Data):
    format: Literal["text"]                 # plain text, one sentence per line (BiLanguageModel)
    max_length: int | None = Field(TEXT_MAX_LENGTH, ge=1)  # longest input; null: no limit
    tokenizer: TokenizerConfig = TokenizerConfig()


class LMTextData(_Data):
    format: Literal["lm_text"]              # plain text, one token stream (PTB)
    tokenizer: TokenizerConfig = TokenizerConfig()
    bptt: int = Field(35, ge=1)             # window length of the truncated-BPTT stream


class TSFileData(_Data):
    format: Literal["ts"]                   # UEA/UCR .ts series with class labels
    missing: Literal["error", "keep", "zero", "ffill"] = "error"  # missing values policy
    scale: bool = True                      # standardise each channel with train statistics

    @model_validator(mode="after")
    def _no_words(self):
        if self.unk_replace:
            raise ValueError(f"unk_replace ({self.unk_replace}) replaces rare words; a .ts series has none")
        return self


class SeriesData(_Data):
    format: Literal["series"]               # one series, a row per time step (CSV/TSV with a header)
    delimiter: str = Field(",", min_length=1, max_length=1)  # field separator ("\t" for TSV)
    time_column: str | None = None          # column of the time stamps (kept for records, not an input)
    columns: list[str] | None = Field(None, min_length=1)  # input columns; null: all but time_column
    target_columns: list[str] | None = Field(None, min_length=1)  # columns to forecast; null: every input
    window: int = Field(ge=1)               # input steps of each forecast
    horizon: int = Field(ge=1)              # steps forecast at once
    stride: int = Field(1, ge=1)            # origins between consecutive windows
    season: int = Field(1, ge=1)            # m of the seasonal-naive baseline and MASE (1: naive)
    test_fraction: float | None = Field(None, gt=0, lt=1)  # the last fraction of train is test
    missing: Literal["error", "zero", "ffill", "interpolate"] = "error"  # missing values policy

    @field_validator("season")
    @classmethod
    def _season_in_window(cls, m: int, info: ValidationInfo) -> int:
        window = info.data.get("window")
        if window is not None and m > window:
            raise ValueError(f"must be at most window ({window}): the seasonal-naive forecast repeats "
                             "the window's last season")
        return m

    @field_validator("target_columns")
    @classmethod
    def _targets_are_inputs(cls, targets: list[str] | None, info: ValidationInfo) -> list[str] | None:
        columns = info.data.get("columns")
        if targets is not None and len(set(targets)) != len(targets):
            raise ValueError("names a column twice")
        if targets is not None and columns is not None and not set(targets) <= set(columns):
            raise ValueError(f"every target must be an input column ({', '.join(columns)})")
        return targets

    @model_validator(mode="after")
    def _parts(self):
        if self.unk_replace:
            raise ValueError(f"unk_replace ({self.unk_replace}) replaces rare words; a numeric series has none")
        if self.test is not None and self.test_fraction is not None:
            raise ValueError(f"give either test ({self.test!r}) or test_fraction ({self.test_fraction}), not both")
        if (self.dev_fraction or 0) + (self.test_fraction or 0) >= 1:
            raise ValueError("dev_fraction + test_fraction must leave a training part (sum below 1)")
        if self.time_column is not None and self.time_column in (self.columns or []):
            raise ValueError(f"time_column {self.time_column!r} cannot also be an input column")
        return self


# ----------------------------------------------------------------- numeric frames (format frames)

class FramesData(_Data):
    format: Literal["frames"]               # JSONL manifest of .npy/.npz/.safetensors (T, D) frame files
    feature_dim: int | None = Field(None, ge=1)  # D every file must have; null: the first file's
    array_key: str | None = None            # the array to read in .npz/.safetensors files; null: the only one
    scale: bool = False                     # standardise each feature with the training frames' mean and std
    target_tokenizer: TokenizerConfig = TokenizerConfig(level="char")  # splits a transcript (Seq2Seq)
    max_target_length: int | None = Field(None, ge=1)  # longest transcript, BOS/EOS not counted

    @model_validator(mode="after")
    def _no_words(self):
        if self.unk_replace:
            raise ValueError(f"unk_replace ({self.unk_replace}) replaces rare words; frames have none")
        return self

# ----------------------------------------------------------------- end of numeric frames


# --- audio (issue #17): utterances listed in a JSONL manifest, read as log-mel or MFCC frames ---
class AudioData(_Data):
    format: Literal["audio"]                # JSONL manifest: {"path": ..., "label"|"transcript": ...} per line
    target: Literal["label", "transcript"] = "label"  # what each line names: a class, or the words spoken
    sample_rate: int = Field(8000, ge=1000)  # every file must have this rate (no resampling)
    features: Literal["logmel", "mfcc"] = "logmel"  # frame features (rnnkit.data.audio)
    n_fft: int = Field(256, ge=16)          # FFT size (samples)
    win_length: int | None = Field(None, ge=16)  # analysis window (samples); null: n_fft
    hop_length: int = Field(80, ge=1)       # samples between frames (80 at 8 kHz: 10 ms)
    n_mels: int = Field(40, ge=2)           # mel bands
    n_mfcc: int = Field(13, ge=1)           # cepstral coefficients kept (features: mfcc)
    normalize: Literal["utterance", "global", "none"] = "utterance"  # per-utterance CMVN, train statistics, or none
    time_masks: int = Field(0, ge=0)        # SpecAugment, training batches only: time spans masked
    time_width: int = Field(10, ge=1)       # longest time mask (frames)
    freq_masks: int = Field(0, ge=0)        # frequency bands masked
    freq_width: int = Field(5, ge=1)        # widest frequency mask (features)

    @model_validator(mode="after")
    def _audio(self):
        if self.unk_replace:
            raise ValueError(f"unk_replace ({self.unk_replace}) replaces rare words; audio frames have none")
        if self.features == "mfcc" and self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc ({self.n_mfcc}) must be at most n_mels ({self.n_mels})")
        if self.win_length is not None and self.win_length > self.n_fft:
            raise ValueError(f"win_length ({self.win_length}) must be at most n_fft ({self.n_fft})")
        return self
# --- end audio ---


DataConfig = Annotated[Union[ConlluData, ConllData, DelimitedData, JsonlData, LabelTextData, FolderData,
                             ParallelData, TextData, LMTextData, TSFileData, SeriesData,
                             FramesData, AudioData], Field(discriminator="format")]

DATA_FORMATS = ("conllu", "conll", "csv", "tsv", "jsonl", "label_text", "folder", "parallel", "text", "lm_text",
                "ts", "series", "frames", "audio")
# The formats data.streaming reads lazily (a .ts file is a few MB of series, read whole; a folder
# is one file per document already; a series is one table of numbers).
STREAMING_FORMATS = ("conllu", "conll", "csv", "tsv", "jsonl", "label_text", "parallel", "lm_text")

# Which data formats each head can learn from.
MODEL_TYPES = {
    "SequenceTagger": ("conllu", "conll", "frames"),
    "SequenceClassifier": ("csv", "tsv", "jsonl", "label_text", "folder", "ts", "frames", "audio"),
    "LanguageModel": ("lm_text",),
    "Seq2Seq": ("parallel", "frames"),
    "Generator": ("csv", "tsv", "jsonl", "label_text"),
    "Forecaster": ("series",),
    # sentences of plain text, or the token text of a labelled set (its labels are not read)
    "BiLanguageModel": ("text", "conllu", "conll", "csv", "tsv", "jsonl", "label_text"),
    "Transcriber": ("audio",),  # audio (issue #17): CTC over frames
}

# Head arguments rnnkit sets from the data; a config must not give them.
DERIVED_OPTIONS = {
    "SequenceTagger": ("vocab_size", "num_tags", "tags", "char_vocab_size", "input_size"),
    "SequenceClassifier": ("num_classes", "vocab_size", "input_size"),
    "LanguageModel": ("vocab_size", "carry_state", "eos_id"),
    "Seq2Seq": ("source_vocab_size", "target_vocab_size", "bos_id", "eos_id", "source_input_size"),
    "Generator": ("vocab_size", "num_classes", "condition_size", "bos_id", "eos_id"),
    "Forecaster": ("input_size", "horizon", "target_indices"),
    "BiLanguageModel": ("vocab_size", "bos_id", "eos_id"),
    "Transcriber": ("input_size", "num_symbols"),  # audio (issue #17)
}


class ModelConfig(Strict):
    type: Literal["SequenceTagger", "SequenceClassifier", "LanguageModel", "Seq2Seq", "Generator",
                  "Forecaster", "BiLanguageModel", "Transcriber"]  # task head
    options: dict[str, Any] = {}  # the head's keyword arguments (embedding_dim, encoder, ...)

    @model_validator(mode="after")
    def _check_options(self):
        from . import models

        params = inspect.signature(getattr(models, self.type).__init__).parameters
        allowed = [p for p in params if p != "self" and p not in DERIVED_OPTIONS[self.type]]
        for key in self.options:
            if key in DERIVED_OPTIONS[self.type]:
                raise ValueError(f"options.{key} is set by rnnkit from the data; remove it")
            if key not in allowed:
                raise ValueError(f"options.{key} is not an option of {self.type}; allowed: {', '.join(allowed)}")
        return self


class Config(Strict):
    name: str = "run"               # a title for logs and plots
    data: DataConfig
    model: ModelConfig
    trainer: TrainerConfig = TrainerConfig()

    @model_validator(mode="after")
    def _task_fits_data(self):
        formats = MODEL_TYPES[self.model.type]
        if self.data.format not in formats:
            raise ValueError(f"model.type {self.model.type} cannot learn from data.format "
                             f"{self.data.format!r}; it takes {', '.join(formats)}")
        if self.data.format == "audio":  # audio (issue #17): the manifest's key fits the head
            want = "transcript" if self.model.type == "Transcriber" else "label"
            if self.data.target != want:
                raise ValueError(f"data.target {self.data.target!r}: a {self.model.type} learns from each "
                                 f"line's {want} (set data.target: {want})")
        if self.trainer.watch_test and getattr(self.data, "test", None) is None and \
                getattr(self.data, "test_fraction", None) is None:
            raise ValueError("trainer.watch_test: true evaluates the test set after every epoch, and this "
                             "config has none: give data.test (or data.test_fraction for a series)")
        _build_on_meta(self.model, self.data)
        return self


def _stand_ins(model: ModelConfig, data) -> dict:
    """Small values for the head arguments the data decides, so that the head can be built
    before any data is read."""
    kind, options = model.type, model.options
    resolved = {"contextual": resolve_contextual(options["contextual"])} if "contextual" in options else {}
    if kind == "SequenceTagger":
        tags = {"bio": ["O", "B-X", "I-X"], "iobes": ["O", "B-X", "I-X", "E-X", "S-X"]}.get(
            options.get("constraints"), ["O", "B-X", "I-X"])
        if data.format == "frames":
            return dict(input_size=2, num_tags=len(tags), tags=tags, **resolved)
        return dict(vocab_size=8, num_tags=len(tags), tags=tags,
                    char_vocab_size=8 if getattr(data, "chars", False) else None, **resolved)
    if kind == "SequenceClassifier":
        sizes = dict(input_size=2) if data.format in ("ts", "frames", "audio") else dict(vocab_size=8)
        return dict(num_classes=1 if options.get("task") == "regression" else 2, **sizes, **resolved)
    if kind == "LanguageModel":  # adaptive_cutoffs are checked against the real vocabulary once it is fitted
        cutoffs = options.get("adaptive_cutoffs")
        known = isinstance(cutoffs, list) and cutoffs and all(type(c) is int for c in cutoffs)
        return dict(vocab_size=max(8, max(cutoffs) + 1) if known else 8, carry_state=True, eos_id=3)
    if kind == "Generator":
        return dict(vocab_size=8, num_classes=2, condition_size=None, bos_id=2, eos_id=3)
    if kind == "Forecaster":
        columns = data.columns or data.target_columns or ["x"]
        targets = None if data.target_columns is None or data.columns is None else \
            [columns.index(c) for c in data.target_columns]
        return dict(input_size=len(columns), horizon=data.horizon, target_indices=targets)
    if kind == "BiLanguageModel":
        return dict(vocab_size=8, bos_id=2, eos_id=3)
    if kind == "Transcriber":  # audio (issue #17)
        return dict(input_size=data.n_mfcc if data.features == "mfcc" else data.n_mels, num_symbols=3)
    if data.format == "frames":  # share_weights needs D = embedding_dim
        return dict(source_input_size=options.get("embedding_dim", 64), target_vocab_size=8, bos_id=2, eos_id=3)
    return dict(source_vocab_size=8, target_vocab_size=8, bos_id=2, eos_id=3)


def resolve_contextual(contextual):
    """A tagger's or classifier's ``contextual`` option as the head takes it. A config names a
    pre-trained biLM by folder -- ``{checkpoint: runs/bilm/best, freeze: true}`` -- and this reads
    the biLM's config from that checkpoint's manifest: ``{bilm: {...}, freeze: true}``. That form
    (what a trained head's checkpoint stores, its biLM weights inside) passes unchanged."""
    from .checkpoint import CheckpointError, read_manifest

    if not isinstance(contextual, dict) or "checkpoint" not in contextual:
        return contextual  # the head checks it
    unknown = sorted(set(contextual) - {"checkpoint", "freeze"})
    if unknown:
        raise ValueError(f"contextual has unknown option(s) {', '.join(map(repr, unknown))}; allowed: "
                         "checkpoint (a BiLanguageModel checkpoint folder), freeze")
    path = contextual["checkpoint"]
    try:
        manifest = read_manifest(path)
    except (CheckpointError, TypeError) as e:
        raise ValueError(f"checkpoint {path!r} cannot be read as a pre-trained biLM: {e}") from None
    if manifest.get("model_type") != "BiLanguageModel":
        raise ValueError(f"checkpoint {path!r} holds a {manifest.get('model_type')}; contextual features "
                         "need a BiLanguageModel checkpoint (made by rnnkit pretrain)")
    return {"bilm": manifest["model_config"], "freeze": contextual.get("freeze", True)}


def _build_on_meta(model: ModelConfig, data) -> None:
    """Build the head on torch's meta device (shapes, no memory), so that every error its
    constructor finds in ``model.options`` -- ``cell: gruu``, an empty ``hidden_sizes``, a
    bidirectional language model -- is reported with the config's file and line, before the
    data is read. The message names the option it is about, found among the option keys."""
    import torch

    from . import models

    try:
        with torch.device("meta"):
            getattr(models, model.type)(**{**model.options, **_stand_ins(model, data)})
    except (ValueError, TypeError) as e:
        raise ValueError(f"options.{_option_named(str(e), model.options)}: {e}") from None


def _option_named(message: str, options: dict) -> str:
    """The dotted path of the option a head's error message is about: the one it names first
    (``encoder has unknown option(s) 'hiden_sizes'; allowed: cell, ...`` is about
    ``hiden_sizes``), nested keys of a dict option (``encoder.cell``) before top-level ones."""
    def where(key: str) -> int | None:
        named = re.search(rf"(?<![\w-]){re.escape(key)}(?![\w-])", message)
        return named.start() if named else None

    found = [(w, f"{key}.{inner}") for key, value in options.items() if isinstance(value, dict)
             for inner in value if (w := where(inner)) is not None]
    if not found:
        found = [(w, key) for key in options if (w := where(key)) is not None]
    return min(found)[1] if found else next(iter(options), "(head)")


# --------------------------------------------------------------------------- loading

def _set_path(raw: dict, dotted: str, value: Any, origin: str) -> None:
    keys = dotted.split(".")
    node = raw
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: {'.'.join(keys[:i + 1])} is {child!r}, not a section; "
                              f"cannot set {dotted}")
        node = child
    node[keys[-1]] = value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """``["trainer.epochs=3", "model.options.encoder.hidden_sizes=[128]"]`` -> updated copy of
    ``raw``; values are parsed as YAML (numbers, booleans, lists, null)."""
    import copy

    raw = copy.deepcopy(raw)
    for item in overrides:
        origin = f"override {item!r}"
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{origin}: expected FIELD=VALUE, e.g. trainer.epochs=3")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"{origin}: the value is not valid YAML ({e.problem})") from None
        _set_path(raw, key.strip(), value, origin)
    return raw


def _line_of(node, loc: tuple) -> int | None:
    """1-based line of the YAML key at ``loc`` (or of its deepest existing parent)."""
    line = None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == key:
                    line, node = k.start_mark.line + 1, v
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _format_errors(e: ValidationError, *, source: str, root=None, raw=None) -> str:
    lines = []
    for err in e.errors():
        loc = tuple(err["loc"])
        # discriminated unions put the chosen tag in the path: data.conllu.tag -> data.tag
        loc = tuple(p for i, p in enumerate(loc) if not (i == 1 and loc[0] == "data" and p in DATA_FORMATS))
        path = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_of(root, loc) if root is not None else None
        where = f"{source}:{line}" if line else source
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            parent = _section_fields(loc[:-1], raw)
            allowed = f"; allowed: {', '.join(parent)}" if parent else ""
            lines.append(f"{where}: {path}: unknown field (got {err['input']!r}){allowed}")
        elif err["type"] == "missing":
            lines.append(f"{where}: {path}: required field is missing")
        elif err["type"] == "union_tag_invalid" or (loc == ("data",) and "discriminator" in err["type"]):
            lines.append(f"{where}: data.format: must be one of {', '.join(DATA_FORMATS)}; "
                         f"got {err['input'].get('format') if isinstance(err['input'], dict) else err['input']!r}")
        elif err["type"] == "value_error" and loc in ((), ("model",)):
            option = re.match(r"options\.([\w.]+)", msg)
            if option and root is not None:
                line = _line_of(root, ("model", "options", *option.group(1).split("."))) or line
                where = f"{source}:{line}" if line else source
            lines.append(f"{where}: {'model.' if loc or option else ''}{msg}")
        else:
            lines.append(f"{where}: {path}: {msg} (got {err.get('input')!r})")
    return "\n".join(lines)


def _section_fields(loc: tuple, raw) -> list[str]:
    """Field names of the schema section at ``loc`` (for 'allowed: ...' in messages)."""
    model = Config
    if loc and loc[0] == "data":
        fmt = raw.get("data", {}).get("format") if isinstance(raw, dict) and isinstance(raw.get("data"), dict) else None
        by_format = {cls.model_fields["format"].annotation.__args__[0]: cls
                     for cls in (ConlluData, ConllData, DelimitedData, JsonlData, LabelTextData,
                                 FolderData, ParallelData, TextData, LMTextData, TSFileData, SeriesData,
                                 FramesData, AudioData)}
        by_format["tsv"] = DelimitedData
        if fmt not in by_format:
            return []
        model, loc = by_format[fmt], loc[1:]
    for key in loc:
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            return []
        annotation = field.annotation
        model = next((a for a in getattr(annotation, "__args__", (annotation,))
                      if isinstance(a, type) and issubclass(a, Strict)), None)
        if model is None:
            return []
    return list(model.model_fields)


def parse_config(raw: Any, *, source: str = "<config>", overrides: list[str] = (), root=None) -> Config:
    """Validate a dict (e.g. parsed YAML) with ``overrides`` applied; raise ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a config must be a mapping with data, model and trainer; "
                          f"got {type(raw).__name__}")
    raw = apply_overrides(raw, list(overrides))
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source=source, root=root, raw=raw)) from None


def load_config(path: str | os.PathLike, *, overrides: list[str] = ()) -> Config:
    """Read and validate a YAML config file; relative data paths stay relative to the working
    directory (run from the repository root, as the examples assume)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        root = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    return parse_config(raw if raw is not None else {}, source=str(path), overrides=overrides, root=root)
