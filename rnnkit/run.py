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
import random
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .config import Config, ConfigError, TokenizerConfig, parse_config, resolve_contextual
from .data import (Batches, Encoder, LMStream, SeriesScaler, TaggedExample,
                    TextExample, Tokenizer, Vocab, collate, read_conll, read_conllu, read_delimited,
                    read_jsonl, read_label_text, read_lines, read_lm_text, read_parallel, read_ts)
from .training.metrics import (BiPerplexityMetrics, BleuMetrics, ClassificationMetrics, PerplexityMetrics,
                               RegressionMetrics, TaggingMetrics)
from .training.trainer import Trainer, evaluate_batches, seed_everything

__all__ = ["Prepared", "prepare", "train", "evaluate", "predict", "Predictor", "BACKENDS", "export_checkpoint"]


def _tokenizer(tc: TokenizerConfig) -> Tokenizer:
    return Tokenizer(tc.level, pattern=tc.pattern, lowercase=tc.lowercase,
                     normalize_digits=tc.normalize_digits)


def is_regression(cfg: Config) -> bool:
    """A SequenceClassifier with ``task: regression`` learns float targets (MAE/RMSE/MAPE)."""
    return cfg.model.type == "SequenceClassifier" and cfg.model.options.get("task") == "regression"


def read_file(data, path: str | Path, *, label_type: str = "class"):
    """Examples of one file, read as ``data`` (a data config section) describes."""
    f, enc = data.format, data.encoding
    if f == "conllu":
        return read_conllu(path, tag=data.tag, lowercase=data.lowercase, encoding=enc)
    if f == "conll":
        return read_conll(path, token_column=data.token_column, tag_column=data.tag_column,
                          separator=data.separator, encoding=enc)
    if f in ("csv", "tsv"):
        return read_delimited(path, text_column=data.text_column, label_column=data.label_column,
                              delimiter="," if f == "csv" else "\t", header=data.header,
                              label_type=label_type, tokenizer=_tokenizer(data.tokenizer), encoding=enc)
    if f == "jsonl":
        return read_jsonl(path, text_field=data.text_field, label_field=data.label_field,
                          label_type=label_type, tokenizer=_tokenizer(data.tokenizer), encoding=enc)
    if f == "label_text":
        return read_label_text(path, label_type=label_type, tokenizer=_tokenizer(data.tokenizer),
                               encoding=enc)
    if f == "parallel":
        return read_parallel(path, source_column=data.source_column, target_column=data.target_column,
                             num_columns=data.num_columns, source_tokenizer=_tokenizer(data.source_tokenizer),
                             target_tokenizer=_tokenizer(data.target_tokenizer), encoding=enc)
    if f == "text":
        return read_lines(path, tokenizer=_tokenizer(data.tokenizer), encoding=enc)
    if f == "lm_text":
        return read_lm_text(path, tokenizer=_tokenizer(data.tokenizer), encoding=enc)
    if f == "ts":
        return read_ts(path, missing=data.missing, encoding=enc).examples
    raise ValueError(f"data.format {f!r} has no reader")  # the schema makes this unreachable


def _limit(examples: list, n: int | None) -> list:
    return examples if n is None else examples[:n]


def _read(cfg: Config, path) -> list:
    examples = read_file(cfg.data, path, label_type="float" if is_regression(cfg) else "class")
    if cfg.model.type == "BiLanguageModel":  # a biLM learns from the text alone
        from dataclasses import replace

        examples = [replace(ex, tags=None) if isinstance(ex, TaggedExample) else replace(ex, label=None)
                    for ex in examples]
    return examples


def _splits(cfg: Config) -> tuple[list, list | None, list | None]:
    d = cfg.data
    if is_regression(cfg) and d.format == "ts":
        raise ValueError("task: regression reads float targets from csv, tsv, jsonl or label_text; "
                         "data.format 'ts' holds class labels")
    train = _read(cfg, d.train)
    if d.format == "lm_text" and d.dev_fraction is not None:
        raise ValueError("data.dev_fraction cannot split a language-model token stream; give data.dev")
    if d.dev_fraction is not None:
        order = list(range(len(train)))
        random.Random(cfg.trainer.seed).shuffle(order)
        n_dev = max(1, round(len(train) * d.dev_fraction))
        dev = [train[i] for i in sorted(order[:n_dev])]
        train = [train[i] for i in sorted(order[n_dev:])]
    else:
        dev = _read(cfg, d.dev) if d.dev is not None else None
    test = _read(cfg, d.test) if d.test is not None else None
    cap = d.max_eval_examples
    return _limit(train, d.max_train_examples), _limit(dev, cap) if dev else dev, \
        _limit(test, cap) if test else test


# ----------------------------------------------------------------------- vocabularies

def fit_vocabs(cfg: Config, train: list) -> dict:
    """Vocabularies (and a series scaler) fitted on the training examples, as objects."""
    d, kind = cfg.data, cfg.model.type
    size = dict(min_freq=d.min_freq, max_size=d.max_vocab)
    out: dict = {}
    if d.format == "lm_text":
        out["words"] = Vocab(**size).fit([train])
    elif kind == "Seq2Seq":
        out["words"] = Vocab(**size).fit(ex.source for ex in train)
        out["target"] = Vocab(**size, name="target token").fit(ex.target for ex in train)
    elif d.format == "ts":
        out["labels"] = Vocab.for_labels((ex.label for ex in train), name="class")
        if d.scale:
            out["scaler"] = SeriesScaler().fit(train)
    else:
        out["words"] = Vocab(**size).fit(ex.tokens for ex in train)
        if kind == "BiLanguageModel":
            pass  # no labels: the text predicts itself
        elif kind == "SequenceTagger":
            out["labels"] = Vocab.for_labels((t for ex in train for t in ex.tags), name="tag")
            if d.chars:
                out["chars"] = Vocab(specials=("<pad>", "<unk>"), name="char").fit_chars(
                    ex.tokens for ex in train)
        elif not is_regression(cfg):
            out["labels"] = Vocab.for_labels((ex.label for ex in train), name="label")
    return out


def vocabs_to_json(vocabs: dict) -> dict:
    return {name: v.to_dict() for name, v in vocabs.items()}


def vocabs_from_json(saved: dict) -> dict:
    return {name: (SeriesScaler.from_dict(v) if name == "scaler" else Vocab.from_dict(v))
            for name, v in saved.items()}


def _encoder(cfg: Config, vocabs: dict) -> Encoder:
    d = cfg.data
    return Encoder(vocab=vocabs.get("words"), label_vocab=vocabs.get("labels"),
                   char_vocab=vocabs.get("chars"), target_vocab=vocabs.get("target"),
                   max_length=d.max_length, truncate=d.truncate,
                   max_target_length=getattr(d, "max_target_length", None))


def _items(cfg: Config, vocabs: dict, examples: list) -> list[dict]:
    if "scaler" in vocabs:
        examples = vocabs["scaler"].transform(examples)
    return _encoder(cfg, vocabs).encode_all(examples)


def _lm_stream(cfg: Config, vocabs: dict, tokens: list[str], *, rank: int = 0, world: int = 1) -> LMStream:
    ids = vocabs["words"].encode(tokens)
    if world > 1:  # each process learns from its own contiguous share of the stream
        share = len(ids) // world
        ids = ids[rank * share:(rank + 1) * share + 1]
    return LMStream(ids, batch_size=cfg.trainer.batch_size, bptt=cfg.data.bptt)


def _batches(cfg: Config, vocabs: dict, examples: list, *, train: bool, rank: int = 0, world: int = 1):
    if cfg.data.format == "lm_text":
        return _lm_stream(cfg, vocabs, examples, rank=rank if train else 0, world=world if train else 1)
    items = _items(cfg, vocabs, examples)
    if train:
        return Batches(items, batch_size=cfg.trainer.batch_size, shuffle=True, seed=cfg.trainer.seed,
                       rank=rank, world_size=world)
    return Batches(items, batch_size=cfg.trainer.batch_size, shuffle=False)


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
        return TaggingMetrics(vocabs["labels"].itos_, scheme=getattr(cfg.data, "scheme", "conlleval"))
    if kind == "SequenceClassifier":
        return RegressionMetrics() if is_regression(cfg) else ClassificationMetrics(vocabs["labels"].itos_)
    if kind == "LanguageModel":
        return PerplexityMetrics()
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


def prepare(cfg: Config, *, rank: int = 0, world: int = 1) -> Prepared:
    from .models.registry import model_types

    train, dev, test = _splits(cfg)
    vocabs = fit_vocabs(cfg, train)
    seed_everything(cfg.trainer.seed)
    model = model_types()[cfg.model.type](**model_kwargs(cfg, vocabs, train))
    known = attach_contextual(model, cfg, vocabs)
    if known is not None:
        from ._log import get_logger

        get_logger(__name__).info("contextual features: the biLM knows %d of the head's %d words",
                                  known["known"], known["total"])
    return Prepared(
        model=model, vocabs=vocabs, metrics=metrics_for(cfg, vocabs),
        train=_batches(cfg, vocabs, train, train=True, rank=rank, world=world),
        dev=_batches(cfg, vocabs, dev, train=False) if dev else None,
        test=_batches(cfg, vocabs, test, train=False) if test else None,
        counts={"train": len(train), "dev": len(dev) if dev else 0, "test": len(test) if test else 0})


def _limit_note(cfg: Config) -> str:
    d = cfg.data
    if d.max_length is None or d.format == "lm_text":
        return ""
    return (f"; an input over {d.max_length:,} steps is {'cut (reported)' if d.truncate else 'an error'} "
            "(data.max_length, data.truncate)")


def train(cfg: Config, *, resume: bool = False, stream=None) -> dict:
    """Train as ``cfg`` says; evaluate the best checkpoint on the test file if there is one.
    Returns (and writes to ``out_dir/results.json``) the summary; under torchrun, only rank 0
    does, the other ranks return {}."""
    from .training.trainer import setup_distributed

    stream = stream if stream is not None else sys.stderr
    rank, world = setup_distributed()
    start = time.perf_counter()
    if cfg.trainer.num_threads is not None:
        torch.set_num_threads(cfg.trainer.num_threads)
    p = prepare(cfg, rank=rank, world=world)
    unit = "tokens" if cfg.data.format == "lm_text" else "examples"
    if rank == 0:
        print(f"rnnkit train {cfg.name}: {p.counts['train']:,} train / {p.counts['dev']:,} dev / "
              f"{p.counts['test']:,} test {unit}; {cfg.model.type} with "
              f"{sum(x.numel() for x in p.model.parameters()):,} weights{_limit_note(cfg)}", file=stream, flush=True)
    trainer = Trainer(p.model, cfg.trainer, train=p.train, dev=p.dev, metrics=p.metrics,
                      vocabs=vocabs_to_json(p.vocabs), extra={"config": stored_config(cfg)},
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
    examples = _read(cfg, data_path)
    if batch_size is not None:
        cfg = cfg.model_copy(update={"trainer": cfg.trainer.model_copy(update={"batch_size": batch_size})})
    batches = _batches(cfg, vocabs, examples, train=False)
    return evaluate_batches(loaded.model, batches, metrics_for(cfg, vocabs))


def _records(lines: Iterable[str], source: str) -> Iterator[tuple[str, dict]]:
    """(where, {"text": ...} or {"tokens": [...]}) per non-blank line; JSON objects allowed."""
    for n, line in enumerate(lines, 1):
        text = line.rstrip("\n")
        if n == 1 and text.startswith("\ufeff"):  # a byte-order mark is not part of the first token
            text = text[1:]
        if not text.strip():
            continue
        where = f"{source}:{n}"
        if text.lstrip().startswith("{"):
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg}); give plain text or a JSON object "
                                 'with "text" or "tokens"') from None
            if not isinstance(obj.get("tokens", obj.get("text")), (str, list)):
                raise ValueError(f'{where}: a JSON line needs "text" (a string) or "tokens" (a list); '
                                 f"got keys {sorted(obj)}")
            yield where, obj
        else:
            yield where, {"text": text}


class Predictor:
    """A checkpoint loaded once, answering for inputs: what ``rnnkit predict`` and ``rnnkit serve``
    share. ``backend``: ``torch`` (the model itself) or ``onnxruntime`` (the ONNX file that
    ``rnnkit export`` wrote for this checkpoint, ``model_file`` or ``CKPT.onnx``); both give the
    same records."""

    def __init__(self, path: str | Path, *, backend: str = "torch", model_file: str | Path | None = None) -> None:
        from ._checks import check_choice

        check_choice("backend", backend, BACKENDS)
        self.path = Path(path)
        self.loaded, self.cfg, self.vocabs = _restore(path)
        if self.cfg.model.type == "BiLanguageModel":
            raise ValueError(f"{path}: a BiLanguageModel has no predictions to print; its use is its "
                             "vectors: rnnkit embed CHECKPOINT FILE, or contextual features of a tagger "
                             "or classifier (model.options.contextual)")
        self.model, self.kind, self.backend = self.loaded.model, self.cfg.model.type, backend
        d = self.cfg.data
        self.series = d.format == "ts"
        self._encoder = _encoder(self.cfg, self.vocabs)
        self._tokenize = None if self.series else _tokenizer(
            getattr(d, "predict_tokenizer", None) or getattr(d, "tokenizer", None) or getattr(d, "source_tokenizer"))
        self._run = self.model.predict
        if backend == "onnxruntime":
            from .export import OnnxRunner

            self._run = OnnxRunner(self.loaded, model_file)

    def tokens(self, obj: dict, where: str) -> list[str]:
        """The tokens of one input: its ``tokens`` list, or its ``text`` tokenised as training was."""
        if isinstance(obj.get("tokens"), list):
            tokens = [str(t) for t in obj["tokens"]]
        elif isinstance(obj.get("text"), str):
            tokens = self._tokenize(obj["text"])
        else:
            raise ValueError(f'{where}: an input needs "text" (a string) or "tokens" (a list); got keys {sorted(obj)}')
        if not tokens:
            raise ValueError(f"{where}: no tokens in {obj.get('text', obj.get('tokens'))!r}")
        return tokens

    def batch(self, inputs: list[tuple[str, dict]], *, probabilities: bool = False) -> list[dict]:
        """One record per (where, input) -- the input's fields plus the prediction -- in one batch.
        ``probabilities``: a classifier's records also map every label to its probability."""
        if self.series:
            raise ValueError(f"{self.path}: a series classifier reads .ts files (rnnkit predict CKPT FILE.ts), "
                             "not text")
        tokens = [self.tokens(obj, where) for where, obj in inputs]
        example = TaggedExample if self.kind == "SequenceTagger" else TextExample  # unlabelled inputs
        items = [self._encoder(example(toks, None, where)) for (where, _), toks in zip(inputs, tokens)]
        if self.kind == "LanguageModel":
            # the model learnt from one stream in which <eos> ends each line, so a prompt starts
            # as a line does: right after an <eos>
            items = [{"inputs": [self.vocabs["words"].eos_id] + item["inputs"]} for item in items]
        batch = collate(items)
        with torch.no_grad():
            out = self._run(batch)
        rows = out.tolist() if isinstance(out, torch.Tensor) else out
        records = [{**obj, **_decode(self.kind, row, toks, self.vocabs, self.cfg.data)}
                   for (_, obj), toks, row in zip(inputs, tokens, rows)]
        if probabilities and self.kind == "SequenceClassifier" and "labels" in self.vocabs:
            names = self.vocabs["labels"].itos_
            with torch.no_grad():
                p = self._logits(batch).softmax(-1).tolist()
            for record, row in zip(records, p):
                record["probabilities"] = {name: round(q, 6) for name, q in zip(names, row)}
        return records

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

    def records(self, lines: Iterable[str], *, source: str = "<stdin>", batch_size: int = 64) -> Iterator[dict]:
        """JSON-safe predictions, one dict per input line (see ``rnnkit predict --help``)."""
        if self.series:
            yield from _predict_series(self._run, self.cfg, self.vocabs, source, batch_size)
            return
        pending: list[tuple[str, dict]] = []
        for where, obj in _records(lines, source):
            pending.append((where, obj))
            if len(pending) >= batch_size:
                yield from self.batch(pending)
                pending.clear()
        if pending:
            yield from self.batch(pending)


BACKENDS = ("torch", "onnxruntime")


def predict(path: str | Path, lines: Iterable[str], *, source: str = "<stdin>",
            batch_size: int = 64, backend: str = "torch", model_file: str | Path | None = None) -> Iterator[dict]:
    """JSON-safe predictions, one dict per input line (see ``rnnkit predict --help``)."""
    yield from Predictor(path, backend=backend, model_file=model_file).records(
        lines, source=source, batch_size=batch_size)


def _predict_series(run, cfg: Config, vocabs: dict, source: str, batch_size: int) -> Iterator[dict]:
    """Class of each series of a .ts file (its labels, if any, are reported as ``gold``)."""
    from dataclasses import replace

    if source in ("-", "<stdin>"):
        raise ValueError("a series classifier reads a .ts file: give FILE (standard input is for text)")
    examples = read_ts(source, missing=cfg.data.missing, encoding=cfg.data.encoding).examples
    gold = [ex.label for ex in examples]
    examples = [replace(ex, label=None) for ex in examples]
    items = _items(cfg, {k: v for k, v in vocabs.items() if k != "labels"}, examples)
    names = vocabs["labels"].itos_
    for start in range(0, len(items), batch_size):
        with torch.no_grad():
            ids = run(collate(items[start:start + batch_size])).tolist()
        for ex, label, i in zip(examples[start:], gold[start:], ids):
            yield {"where": ex.where, "label": names[i], **({"gold": label} if label is not None else {})}


def _decode(kind: str, row, tokens: list[str], vocabs: dict, d) -> dict:
    if kind == "SequenceTagger":
        return {"tokens": tokens, "tags": vocabs["labels"].decode(row)}
    if kind == "SequenceClassifier":
        if "labels" not in vocabs:  # regression: the K predicted values
            return {"value": row[0] if len(row) == 1 else row}
        return {"label": vocabs["labels"].itos_[int(row)]}
    target = vocabs.get("target", vocabs["words"])
    specials = {target.pad_id, target.bos_id, target.eos_id}
    words = [target.itos_[i] for i in row if i not in specials]
    tokenizer = getattr(d, "target_tokenizer", None) or getattr(d, "tokenizer", None)
    join = "" if tokenizer is not None and tokenizer.level in ("char", "cjk") else " "
    key = "translation" if kind == "Seq2Seq" else "continuation"
    return {key: join.join(words)}


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
    out = Path(out) if out is not None else Path(path).with_suffix(f".{format}")
    check, held_out = _held_out(cfg, vocabs, check_examples)
    d = cfg.data
    tokenizer = getattr(d, "predict_tokenizer", None) or getattr(d, "tokenizer", None) or getattr(d, "source_tokenizer", None)
    labels = vocabs["labels"].itos_ if "labels" in vocabs else None
    meta = {"checkpoint": {"path": str(path), "weights_sha256": loaded.manifest["files"]["model.safetensors"]["sha256"]},
            "labels": list(labels) if labels is not None else None, "vocabs": loaded.vocabs,
            "tokenizer": tokenizer.model_dump(mode="json") if tokenizer is not None else None,
            "lowercase": bool(getattr(d, "lowercase", False)),  # CoNLL-U word forms lowercased on reading
            "max_length": d.max_length, "truncate": d.truncate, "held_out": held_out}
    report = export(loaded.model, out, format=format, check=check, meta=meta, max_new_tokens=max_new_tokens)
    return {**report, "held_out": held_out}


def _held_out(cfg: Config, vocabs: dict, limit: int) -> tuple[list[dict], str]:
    """Up to ``limit`` examples of the run's test (else dev) file, batched as evaluation batches
    them; ([], why not) when the file is not there (the check then uses generated inputs)."""
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
        vocabs = fit_vocabs(cfg, examples)
        models = {}
    seed_everything(cfg.trainer.seed)
    kind = model_types()[cfg.model.type]
    models["untrained"] = (kind(**models["trained"].config) if "trained" in models
                           else kind(**model_kwargs(cfg, vocabs, examples)))
    small = cfg.model_copy(update={"trainer": cfg.trainer.model_copy(update={"batch_size": batch_size})})
    chosen = examples if cfg.data.format == "lm_text" else examples[:batch_size]
    batch = next(iter(_batches(small, vocabs, chosen, train=False)), None)
    if batch is None:
        raise ValueError(f"{data_path}: no examples to inspect")
    reports = {label: gradients_through_time(model, batch) for label, model in models.items()}
    json_path, png_path = write_report(reports, out, title=f"{cfg.model.type}: |dL/dh_t| on {Path(data_path).name}")
    return {"json": str(json_path), "png": str(png_path), **{k: {"loss": r["loss"]} for k, r in reports.items()}}
