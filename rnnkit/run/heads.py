"""The head a config describes -- its sizes from the data, a pre-trained biLM attached, its metrics --
and the head a checkpoint holds, with the config and vocabularies it was trained with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import checkpoint as ckpt
from ..config import Config, ConfigError, parse_config, resolve_contextual
from ..training.metrics import (BiPerplexityMetrics, BleuMetrics, ClassPerplexityMetrics,
                                ClassificationMetrics, ErrorRateMetrics, ForecastMetrics, FrameMetrics, PerplexityMetrics,
                                RegressionMetrics,
                                TaggingMetrics)
from ..training.trainer import seed_everything
from .reading import is_regression, model_tag_scheme
from .vocabs import vocabs_from_json


def model_kwargs(cfg: Config, vocabs: dict, train: list) -> dict:
    """The head's arguments: the config's options plus the sizes the data decides."""
    kind, opts = cfg.model.type, dict(cfg.model.options)
    frames = vocabs.get("frames")  # numeric frames: D instead of a word vocabulary
    if kind == "SequenceTagger" and frames is not None:
        tags = vocabs["labels"].itos_
        opts.update(input_size=frames["feature_dim"], num_tags=len(tags), tags=list(tags))
    elif kind == "SequenceTagger":
        tags = vocabs["labels"].itos_
        opts.update(vocab_size=len(vocabs["words"]), num_tags=len(tags), tags=list(tags))
        if "chars" in vocabs:
            opts["char_vocab_size"] = len(vocabs["chars"])
    elif kind == "SequenceClassifier":
        opts["num_classes"] = 1 if is_regression(cfg) else len(vocabs["labels"])  # K outputs
        if cfg.data.format in ("ts", "audio"):
            opts["input_size"] = int(train[0].values.shape[1])
        elif frames is not None:
            opts["input_size"] = frames["feature_dim"]
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
        source = {"source_input_size": frames["feature_dim"]} if frames is not None else \
            {"source_vocab_size": len(vocabs["words"])}
        opts.update(**source, target_vocab_size=len(target),
                    bos_id=target.bos_id, eos_id=target.eos_id)
    elif kind == "BiLanguageModel":
        words = vocabs["words"]
        opts.update(vocab_size=len(words), bos_id=words.bos_id, eos_id=words.eos_id)
    elif kind == "Transcriber":  # audio (issue #17)
        opts.update(input_size=int(train[0].values.shape[1]), num_symbols=len(vocabs["symbols"]))
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
    if kind == "SequenceTagger" and cfg.data.format == "frames":
        return FrameMetrics(vocabs["labels"].itos_, multi_label=cfg.model.options.get("output") == "sigmoid")
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
    if kind == "Transcriber":  # audio (issue #17)
        return ErrorRateMetrics(vocabs["symbols"].itos_)
    level = cfg.data.target_tokenizer.level
    # regex-tokenised targets are already split the way BLEU counts n-grams: score them as they
    # are; whitespace-split text is close to raw, so let sacrebleu tokenise it (13a)
    return BleuMetrics(vocabs["target"].itos_, join="" if level in ("char", "cjk") else " ",
                       tokenize="none" if level == "regex" else "13a")


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
    from ..models.registry import model_types

    seed_everything(cfg.trainer.seed)
    model = model_types()[cfg.model.type](**model_kwargs(cfg, vocabs, train))
    if cfg.model.type == "Forecaster" and model.scaling == "standard":  # on training rows only
        model.fit_scaler(torch.as_tensor(train.table.values[train.rows.start:train.rows.stop]))
    known = attach_contextual(model, cfg, vocabs)
    if known is not None:
        from .._log import get_logger

        get_logger(__name__).info("contextual features: the biLM knows %d of the head's %d words",
                                  known["known"], known["total"])
    return model


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
