"""``rnnkit predict`` and ``rnnkit serve``: a checkpoint loaded once (``Predictor``), inputs read
as training read its data, and one JSON-safe record per input."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import torch

from ..config import Config
from ..data import TaggedExample, TextExample, collate, read_ts
from .batches import _encoder, _items
from .heads import _restore
from .reading import _table, _tokenizer, word_form


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
        from .._checks import check_choice
        from ..data.schemes import SCHEMES

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
        self.frames = d.format == "frames"
        self.audio = d.format == "audio"  # audio (issue #17): a manifest of utterances
        self._encoder = _encoder(self.cfg, self.vocabs)
        self._tokenize = None if self.series or self.forecast or self.frames or self.audio else _tokenizer(
            getattr(d, "predict_tokenizer", None) or getattr(d, "tokenizer", None) or getattr(d, "source_tokenizer"))
        self._run = self.model.predict
        if backend == "onnxruntime":
            if self.sampling:
                raise ValueError(f"{', '.join(self.sampling)}: the exported graph decodes greedily to the "
                                 "length it was exported with; sample with --backend torch")
            from ..export import OnnxRunner

            self._run = OnnxRunner(self.loaded, model_file)

    def tokens(self, obj: dict, where: str) -> list[str]:
        """The tokens of one input: its ``tokens`` list, or its ``text`` tokenised as training was."""
        if isinstance(obj.get("tokens"), list):
            tokens = [str(t) for t in obj["tokens"]]
        elif isinstance(obj.get("text"), str):
            text = obj["text"]
            if getattr(self.cfg.data, "markup", False):  # as the training documents were read
                from ..data.text_readers import strip_markup

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
        if self.audio:
            raise ValueError(f"{self.path}: an audio model reads a manifest of utterances (rnnkit predict CKPT "
                             "FILE.jsonl, one {\"path\": ...} per line), not text")
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
            from ..data.schemes import convert

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
        if self.audio:  # audio (issue #17)
            from .audio import predict_audio

            yield from predict_audio(self._run, self.cfg, self.vocabs, source, batch_size)
            return
        if self.series:
            yield from _predict_series(self, source, batch_size, probabilities=probabilities)
            return
        if self.frames:
            if probabilities:
                raise ValueError("probabilities are not written for a model over numeric frames yet")
            yield from _predict_frames(self, lines, source, batch_size)
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
    from .._checks import check_choice

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
    from .._checks import check_choice

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
    from ..data import SeriesWindow

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


# ----------------------------------------------------------------- numeric frames (format frames)

def _predict_frames(predictor: Predictor, lines: Iterable[str], source: str, batch_size: int) -> Iterator[dict]:
    """One record per frames file that ``lines`` name: a manifest (JSON lines with "path"; the
    labels, label or transcript it has are reported as ``gold``) or one path per line, relative
    to the list's folder (the working directory for standard input)."""
    from ..data.frames import FramesExample, _check_array, load_frames
    from .batches import _frame_items
    from .reading import frames_target

    cfg, vocabs, kind = predictor.cfg, predictor.vocabs, predictor.kind
    base = Path(".") if source in ("-", "<stdin>") else Path(source).parent
    D, target = vocabs["frames"]["feature_dim"], frames_target(kind)
    pending: list[tuple[str, FramesExample, object]] = []

    def flush():
        items = _frame_items(cfg, vocabs, [ex for _, ex, _ in pending])
        with torch.no_grad():
            out = predictor._run(collate(items))
        for (path, ex, gold), row in zip(pending, _rows(out)):
            record = {"where": ex.where, "path": path, **_decode_frames(kind, row, vocabs, cfg.data)}
            if gold is not None:
                record["gold"] = gold
            yield record
        pending.clear()

    for where, item in _input_lines(lines, source, plain='a frames file path (or {"path": ...})'):
        path = item if isinstance(item, str) else item.get("path") if isinstance(item, dict) else None
        if not isinstance(path, str) or not path.strip():
            raise ValueError(f'{where}: give a frames file path, or a JSON object with "path"; got {item!r}')
        full = base / path.strip()
        x = _check_array(load_frames(full, array_key=cfg.data.array_key, where=where), full, where, D)
        gold = item.get(target) if isinstance(item, dict) else None
        pending.append((path.strip(), FramesExample(x, where=where), gold))
        if len(pending) >= batch_size:
            yield from flush()
    if pending:
        yield from flush()


def _rows(x) -> list:
    return x.tolist() if isinstance(x, torch.Tensor) else list(x)


def _decode_frames(kind: str, row, vocabs: dict, d) -> dict:
    if kind == "SequenceTagger":  # per frame: a label, or the sorted list of labels (sigmoid)
        names = vocabs["labels"].itos_
        return {"labels": [[names[k] for k in f] if isinstance(f, list) else names[f] for f in row]}
    if kind == "SequenceClassifier":
        return {"label": vocabs["labels"].itos_[int(row)]}
    return {"transcript": _decode("Seq2Seq", row, [], vocabs, d)["translation"]}

# ----------------------------------------------------------------- end of numeric frames


def _decode(kind: str, row, tokens: list[str], vocabs: dict, d, *, newlines: bool = False) -> dict:
    if kind == "SequenceTagger":
        return {"tokens": tokens, "tags": vocabs["labels"].decode(row)}
    if kind == "SequenceClassifier":
        if "labels" not in vocabs:  # regression: the K predicted values
            return {"value": row[0] if len(row) == 1 else row}
        return {"label": vocabs["labels"].itos_[int(row)]}
    target = vocabs["target"] if "target" in vocabs else vocabs["words"]
    specials = {target.pad_id, target.bos_id} | (set() if newlines else {target.eos_id})
    words = ["\n" if newlines and i == target.eos_id else target.itos_[i] for i in row if i not in specials]
    tokenizer = getattr(d, "target_tokenizer", None) or getattr(d, "tokenizer", None)
    join = "" if tokenizer is not None and tokenizer.level in ("char", "cjk") else " "
    key = {"Seq2Seq": "translation", "Generator": "text"}.get(kind, "continuation")
    text = join.join(words)
    return {key: text.replace(" \n ", "\n").replace(" \n", "\n").replace("\n ", "\n") if newlines else text}
