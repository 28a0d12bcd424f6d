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
import sys
import time
from pathlib import Path

import torch

from .. import checkpoint as ckpt
from ..config import Config
from ..data import TextExample, collate
from ..training.trainer import Trainer, evaluate_batches, seed_everything
from .batches import UnkReplace, _batches
from .heads import Prepared, _build_head, _restore, metrics_for, model_kwargs, stored_config
from .predictor import BACKENDS, Predictor, _records, predict
from .reading import _TrainWindows, _read, _series_splits, _splits, _table, is_regression, iter_file, \
    model_tag_scheme, read_file, word_form
from .streaming import TrainFile, _prepare_streaming
from .vocabs import VOCAB_FILE, count_vocabs, fit_vocabs, read_vocab_file, vocabs_to_json, write_vocab_file

__all__ = ["Prepared", "prepare", "train", "evaluate", "predict", "Predictor", "BACKENDS", "export_checkpoint",
           "inspect_gradients", "inspect_attention", "read_file", "iter_file", "word_form", "is_regression",
           "fit_vocabs", "count_vocabs", "VOCAB_FILE", "write_vocab_file", "UnkReplace", "TrainFile"]


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
    from ..training.trainer import setup_distributed

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
                      name=cfg.name, watch={"test": p.test} if cfg.trainer.watch_test and p.test is not None else None)
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


# ------------------------------------------------------------------------------- export

def export_checkpoint(path: str | Path, out: str | Path | None = None, *, format: str = "onnx",
                      max_new_tokens: int | None = None, check_examples: int = 64) -> dict:
    """``rnnkit export``: the checkpoint's model to ``out`` (default: beside the checkpoint
    folder, ``runs/x/best`` -> ``runs/x/best.onnx``), with a ``.json`` beside it holding what a
    consumer needs (input names and dims, vocabularies, labels, tokenizer, special ids), checked
    against the model on up to ``check_examples`` held-out examples (the run's test file, else
    its dev file) and on generated padded batches."""
    from ..export import export

    loaded, cfg, vocabs = _restore(path)
    if cfg.model.type == "Generator":  # before reading held-out data that it could not use
        from ..export import ExportError

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
    from ..inspect import gradients_through_time, write_report
    from ..config import load_config
    from ..models.registry import model_types

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
    from ..data._io import iter_lines
    from ..inspect import attention_maps, write_attention

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
