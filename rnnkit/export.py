"""A trained head out of Python: ONNX (ONNX Runtime, Triton) or a ``torch.export`` program (.pt2).

    report = export(model, "tagger.onnx", check=[batch, ...])   # writes tagger.onnx + tagger.json

The graph is the head's own forward, captured by ``torch.export`` (the ONNX file by the dynamo
exporter built on it, the one torch supports; TorchScript is deprecated). Batch size, length
and padding stay dynamic: ``lengths`` is an input, and the recurrence runs as one ``scan``
operator with masks (``recurrence``'s ``graph`` path), so a padded batch gives what the
unpadded sequences give. Checks of values (ids in the vocabulary, lengths in [1, T]) cannot be
in a graph; the eager model makes them, and the consumer must feed what the ``.json`` beside
the model describes.

Every export is checked before it is kept: the exported graph and the eager model run the same
held-out batches (and generated ones, padded, batch 1 included); logits may differ by at most
``TOLERANCE`` and decoded labels not at all, else ``ExportError`` and no file.

Per head (names of inputs and outputs in the graph; ``batch``, ``time`` and ``chars`` dynamic):

=================== ================================ ===========================================
head                inputs                           outputs
=================== ================================ ===========================================
SequenceClassifier  inputs (batch, time) int64 ids   logits (batch, K), label_ids (batch,)
                    or (batch, time, D) float32;     (regression: values (batch, K))
                    lengths (batch,) int64
SequenceTagger      inputs, lengths [, chars         emissions (batch, time, K), tag_ids
                    (batch, time, chars) int64]      (batch, time): softmax argmax or CRF
                                                     Viterbi, -1 past each length
LanguageModel       inputs, lengths                  logits (batch, time, V), continuation_ids
                                                     (batch, N) greedy: cut before eos_id
Seq2Seq             inputs, lengths                  translation_ids (batch, N) greedy: cut
                                                     before eos_id
Forecaster          inputs (batch, time, D) float32, forecasts (batch, horizon, D_out), in the
                    lengths                          series' own units
=================== ================================ ===========================================
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import Tensor, nn

from .checkpoint import file_sha256
from .models import Forecaster, LanguageModel, Seq2Seq, SequenceClassifier, SequenceTagger
from .models._common import last_step, length_mask
from .models.decoding import _trim, forbid, greedy_tokens

__all__ = ["FORMATS", "TOLERANCE", "ExportError", "export", "graph_module", "OnnxRunner", "load_meta"]

FORMATS = ("onnx", "pt2")
TOLERANCE = 1e-4
META_FORMAT = "rnnkit-export"
META_VERSION = 1


class ExportError(ValueError):
    """A model that cannot be exported, or an export that does not equal its model."""


# ------------------------------------------------------------------------ graph modules

class _ClassifierGraph(nn.Module):
    def __init__(self, model: SequenceClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor, lengths: Tensor):
        logits = self.model({"inputs": inputs, "lengths": lengths})
        if self.model.task == "classification":
            return logits, logits.argmax(-1)
        return (logits,)


class _TaggerGraph(nn.Module):
    def __init__(self, model: SequenceTagger) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor, lengths: Tensor):
        return self.tags({"inputs": inputs, "lengths": lengths})

    def tags(self, batch: dict):
        inputs, lengths = batch["inputs"], batch["lengths"]
        emissions = self.model(batch)  # (B, T, K)
        if self.model.crf is not None:
            tags = self.model.crf.best_paths(emissions, lengths)
        else:
            tags = emissions.argmax(-1)
        return emissions, tags.masked_fill(~length_mask(lengths, inputs.shape[1]), -1)


class _CharTaggerGraph(_TaggerGraph):
    def forward(self, inputs: Tensor, lengths: Tensor, chars: Tensor):
        return self.tags({"inputs": inputs, "lengths": lengths, "chars": chars})


class _LanguageModelGraph(nn.Module):
    def __init__(self, model: LanguageModel, max_new_tokens: int) -> None:
        super().__init__()
        self.model, self.max_new_tokens = model, max_new_tokens

    def forward(self, inputs: Tensor, lengths: Tensor):
        logits, state = self.model({"inputs": inputs, "lengths": lengths})
        log_probs = forbid(last_step(logits, lengths).log_softmax(-1), [0])  # as generate does
        return logits, greedy_tokens(self.model._step, state, log_probs, max_length=self.max_new_tokens)


class _Seq2SeqGraph(nn.Module):
    def __init__(self, model: Seq2Seq, max_length: int) -> None:
        super().__init__()
        self.model, self.max_length = model, max_length

    def forward(self, inputs: Tensor, lengths: Tensor):
        m = self.model
        states, extra = m.encode({"inputs": inputs, "lengths": lengths})
        bos = torch.full((inputs.shape[0],), m.bos_id, dtype=torch.long, device=inputs.device)
        log_probs, (states, _) = m._step(bos, (states, extra))

        def step(token: Tensor, states):  # the encoder's memory is a constant of the loop
            log_probs, (states, _) = m._step(token, (states, extra))
            return log_probs, states

        return (greedy_tokens(step, states, log_probs, max_length=self.max_length),)


class _ForecasterGraph(nn.Module):
    def __init__(self, model: Forecaster) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor, lengths: Tensor):
        return (self.model.predict({"inputs": inputs, "lengths": lengths}),)


def _default(fn: Callable, name: str) -> int:
    return inspect.signature(fn).parameters[name].default


def graph_module(model: nn.Module, *, max_new_tokens: int | None = None) -> tuple[nn.Module, dict]:
    """The module that is exported for ``model`` and its interface: input and output names,
    dtypes and dims. ``max_new_tokens``: tokens a language model or seq2seq graph decodes
    (default: what ``predict`` decodes)."""
    lengths = {"name": "lengths", "dtype": "int64", "shape": ["batch"],
               "meaning": "true length of each sequence, in [1, time]; steps past it are padding"}

    def ids(meaning: str) -> dict:
        return {"name": "inputs", "dtype": "int64", "shape": ["batch", "time"], "meaning": meaning}

    if isinstance(model, SequenceClassifier):
        if model.input.vocab_size is not None:
            first = ids("token ids from vocabs.words (0 = padding)")
        else:
            first = {"name": "inputs", "dtype": "float32", "shape": ["batch", "time", model.input.input_size],
                     "meaning": "values per step (scaled as vocabs.scaler says, if present)"}
        K = model.num_classes
        outputs = ([{"name": "logits", "dtype": "float32", "shape": ["batch", K]},
                    {"name": "label_ids", "dtype": "int64", "shape": ["batch"], "meaning": "index into labels"}]
                   if model.task == "classification" else
                   [{"name": "values", "dtype": "float32", "shape": ["batch", K]}])
        return _ClassifierGraph(model), {"inputs": [first, lengths], "outputs": outputs}
    if isinstance(model, (SequenceTagger, Seq2Seq)) and (
            getattr(model, "source_embedding", None) is None if isinstance(model, Seq2Seq)
            else model.input.vocab_size is None):
        raise ExportError(f"cannot export a {type(model).__name__} over numeric frames yet: its graph reads "
                          "token ids; predict with rnnkit predict (backend torch) instead")
    if isinstance(model, SequenceTagger):
        inputs = [ids("token ids from vocabs.words (0 = padding)"), lengths]
        if model.chars is not None:
            inputs.append({"name": "chars", "dtype": "int64", "shape": ["batch", "time", "chars"],
                           "meaning": "character ids of each token from vocabs.chars (0 = padding)"})
        outputs = [{"name": "emissions", "dtype": "float32", "shape": ["batch", "time", model.num_tags]},
                   {"name": "tag_ids", "dtype": "int64", "shape": ["batch", "time"],
                    "meaning": ("Viterbi path of the CRF" if model.crf is not None else "argmax per token")
                               + "; index into labels; -1 past each length"}]
        graph = _TaggerGraph(model) if model.chars is None else _CharTaggerGraph(model)
        return graph, {"inputs": inputs, "outputs": outputs}
    if isinstance(model, LanguageModel):
        n = max_new_tokens or _default(model.generate, "max_new_tokens")
        outputs = [{"name": "logits", "dtype": "float32", "shape": ["batch", "time", model.vocab_size]},
                   {"name": "continuation_ids", "dtype": "int64", "shape": ["batch", n],
                    "meaning": f"greedy continuation; cut each row before its first eos_id ({model.eos_id})"}]
        return _LanguageModelGraph(model, n), {
            "inputs": [ids("token ids from vocabs.words; a prompt starts after eos_id, as a line did in training"),
                       lengths], "outputs": outputs, "eos_id": model.eos_id, "max_new_tokens": n}
    if isinstance(model, Seq2Seq):
        n = max_new_tokens or model.config["max_target_length"]
        outputs = [{"name": "translation_ids", "dtype": "int64", "shape": ["batch", n],
                    "meaning": f"greedy decoding, ids from vocabs.target; cut each row before its first "
                               f"eos_id ({model.eos_id})"}]
        return _Seq2SeqGraph(model, n), {
            "inputs": [ids("source token ids from vocabs.words (0 = padding)"), lengths], "outputs": outputs,
            "eos_id": model.eos_id, "max_new_tokens": n}
    if isinstance(model, Forecaster):
        outputs = [{"name": "forecasts", "dtype": "float32", "shape": ["batch", model.horizon, len(model.targets)]}]
        first = {"name": "inputs", "dtype": "float32", "shape": ["batch", "time", model.input_size],
                 "meaning": "the window, in the series' own units (the graph scales it)"}
        return _ForecasterGraph(model), {"inputs": [first, lengths], "outputs": outputs}
    raise ExportError(f"cannot export a {type(model).__name__}: export takes SequenceClassifier, SequenceTagger, "
                      "LanguageModel, Seq2Seq and Forecaster heads")


# ------------------------------------------------------------------------------ inputs

def _input_names(interface: dict) -> list[str]:
    return [spec["name"] for spec in interface["inputs"]]


def _args(batch: dict, interface: dict) -> tuple[Tensor, ...]:
    out = []
    for spec in interface["inputs"]:
        if spec["name"] not in batch:
            raise ExportError(f"a check batch lacks {spec['name']!r}, which this model's graph takes")
        t = batch[spec["name"]]
        out.append(t.float() if spec["dtype"] == "float32" else t.long())
    return tuple(out)


def generated_batches(model: nn.Module, interface: dict, *, seed: int = 0) -> list[dict]:
    """Inputs no data set holds, padded and not: lengths from 1 to T, batch 1 and batch 5."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for B, T in ((5, 9), (1, 4), (3, 1)):
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[0] = T
        batch = {"lengths": lengths}
        for spec in interface["inputs"]:
            name = spec["name"]
            if name == "lengths":
                continue
            if spec["dtype"] == "float32":
                batch[name] = torch.randn(B, T, spec["shape"][2], generator=g)
                continue
            V = _vocab_size(model, name)
            shape = (B, T, 4) if name == "chars" else (B, T)
            x = torch.randint(1, V, shape, generator=g)
            valid = length_mask(lengths, T)
            batch[name] = x * (valid[..., None] if name == "chars" else valid)
        batches.append(batch)
    return batches


def _vocab_size(model: nn.Module, name: str) -> int:
    if name == "chars":
        return model.chars.embedding.num_embeddings
    if isinstance(model, Seq2Seq):
        return model.source_embedding.num_embeddings
    return model.input.vocab_size


# ----------------------------------------------------------------------------- export

def _dynamic_shapes(interface: dict) -> dict:
    from torch.export import Dim

    dims = {"batch": Dim("batch", min=1, max=1 << 16), "time": Dim("time", min=1, max=1 << 20),
            "chars": Dim("chars", min=1, max=1 << 12)}
    return {spec["name"]: {i: dims[d] for i, d in enumerate(spec["shape"]) if isinstance(d, str)}
            for spec in interface["inputs"]}


def _example(model: nn.Module, interface: dict) -> tuple[Tensor, ...]:
    # 2 and 3 steps, not 1: a size of 1 would be taken for a constant
    g = torch.Generator().manual_seed(1)
    batch = {"lengths": torch.tensor([3, 2])}
    for spec in interface["inputs"]:
        name = spec["name"]
        if name == "lengths":
            continue
        if spec["dtype"] == "float32":
            batch[name] = torch.randn(2, 3, spec["shape"][2], generator=g)
        else:
            batch[name] = torch.randint(1, _vocab_size(model, name), (2, 3, 2) if name == "chars" else (2, 3),
                                        generator=g)
    return _args(batch, interface)


def _capture(graph: nn.Module, interface: dict, example: tuple[Tensor, ...], path: Path, fmt: str) -> None:
    shapes = _dynamic_shapes(interface)
    dynamic = tuple(shapes[name] for name in _input_names(interface))
    chatter = logging.getLogger("torch.onnx")  # e.g. "torchvision is not installed", once per op
    level = chatter.level
    chatter.setLevel(logging.ERROR)
    # An inference graph: weights that record gradients would make torch.export trace the
    # backward of the scan operators too, which it cannot always do.
    frozen = [p for p in graph.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's own deprecation chatter, not the user's concern
            _write(graph, interface, example, dynamic, path, fmt)
    finally:
        chatter.setLevel(level)
        for p in frozen:
            p.requires_grad_(True)


def _write(graph: nn.Module, interface: dict, example: tuple[Tensor, ...], dynamic: tuple, path: Path,
           fmt: str) -> None:
    if fmt == "pt2":
        torch.export.save(torch.export.export(graph, example, dynamic_shapes=dynamic), str(path))
        return
    program = torch.onnx.export(graph, example, dynamo=True, dynamic_shapes=dynamic,
                                input_names=_input_names(interface),
                                output_names=[o["name"] for o in interface["outputs"]], verbose=False)
    program.save(str(path))


def _loader(path: Path, fmt: str, interface: dict) -> Callable[[dict], list[Tensor]]:
    """Run the written file: batch -> its outputs as tensors."""
    if fmt == "pt2":
        module = torch.export.load(str(path)).module()

        def run_pt2(batch: dict) -> list[Tensor]:
            with torch.no_grad():
                out = module(*_args(batch, interface))
            return list(out)
        return run_pt2
    session = _session(path)
    names = _input_names(interface)

    def run_onnx(batch: dict) -> list[Tensor]:
        feed = {n: t.numpy() for n, t in zip(names, _args(batch, interface))}
        return [torch.from_numpy(o) for o in session.run(None, feed)]
    return run_onnx


def _session(path: Path):
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("running an ONNX model needs onnxruntime: pip install 'rnnkit[export]'") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # shape-inference notes on dynamic dims are not errors
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _eager(model: nn.Module, batch: dict, interface: dict) -> tuple[list[Tensor], list]:
    """The eager model's float outputs (to compare) and decoded labels, for one batch."""
    with torch.no_grad():
        if isinstance(model, SequenceClassifier):
            out = model(batch)
            return [out], out.argmax(-1).tolist() if model.task == "classification" else []
        if isinstance(model, SequenceTagger):
            return [model(batch)], model.predict(batch)
        if isinstance(model, LanguageModel):
            return [model(batch)[0]], model.generate(batch, max_new_tokens=interface["max_new_tokens"])
        if isinstance(model, Seq2Seq):
            return [], model.predict(batch, beam_size=1, max_length=interface["max_new_tokens"])
        return [model.predict(batch)], []


def _exported(model: nn.Module, outputs: list[Tensor], batch: dict, interface: dict) -> tuple[list[Tensor], list]:
    """The same two things from the exported graph's outputs."""
    lengths = batch["lengths"].tolist()
    if isinstance(model, SequenceClassifier):
        return [outputs[0]], outputs[1].tolist() if model.task == "classification" else []
    if isinstance(model, SequenceTagger):
        return [outputs[0]], [row[:n] for row, n in zip(outputs[1].tolist(), lengths)]
    if isinstance(model, LanguageModel):
        return [outputs[0]], _trim(outputs[1].tolist(), interface["eos_id"])
    if isinstance(model, Seq2Seq):
        return [], _trim(outputs[0].tolist(), interface["eos_id"])
    return [outputs[0]], []


def compare(model: nn.Module, run: Callable[[dict], list[Tensor]], batches: Iterable[dict],
            interface: dict) -> dict:
    """Max abs difference of the float outputs at real steps, and whether every decoded label
    is the same, over ``batches``."""
    worst, labels_equal, n, first_diff = 0.0, True, 0, None
    for batch in batches:
        want_f, want_l = _eager(model, batch, interface)
        got_f, got_l = _exported(model, run(batch), batch, interface)
        T = batch["inputs"].shape[1]
        valid = length_mask(batch["lengths"].long(), T)
        for w, g in zip(want_f, got_f):
            if w.shape != g.shape:
                raise ExportError(f"the exported graph gave shape {tuple(g.shape)} where the model gives {tuple(w.shape)}")
            diff = (w.float() - g.float()).abs()
            if diff.dim() >= 2 and diff.shape[1] == T and diff.shape[:2] == valid.shape:
                diff = diff[valid]  # only real steps are defined
            worst = max(worst, float(diff.max()) if diff.numel() else 0.0)
        if want_l != got_l:
            labels_equal = False
            first_diff = first_diff or next(((i, w, g) for i, (w, g) in enumerate(zip(want_l, got_l)) if w != g), None)
        n += len(batch["lengths"])
    report = {"sequences": n, "max_abs_diff": worst, "tolerance": TOLERANCE, "labels_equal": labels_equal,
              "ok": worst <= TOLERANCE and labels_equal}
    if first_diff is not None:
        report["first_difference"] = {"row": first_diff[0], "model": first_diff[1], "exported": first_diff[2]}
    return report


def export(model: nn.Module, path: str | os.PathLike, *, format: str = "onnx", check: Iterable[dict] = (),
           meta: dict | None = None, max_new_tokens: int | None = None) -> dict:
    """Export ``model`` (eval mode, CPU) to ``path``, check it, and write ``path`` with the
    suffix ``.json``: the interface (input and output names, dtypes, dims), ``meta`` (e.g. the
    vocabularies and labels a consumer needs) and the check's result, which is also returned.

    ``check``: held-out batches (dicts with ``inputs``, ``lengths`` [, ``chars``]) run through
    both; generated padded batches are always added. Raises ``ExportError`` (and keeps no
    file) when the model cannot be exported or the export differs from it.
    """
    if format not in FORMATS:
        hint = " (TorchScript is deprecated in torch 2.13; pt2 is its successor)" if format == "torchscript" else ""
        raise ExportError(f"format must be one of {', '.join(FORMATS)}; got {format!r}{hint}")
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{path}: is a folder; give the file to write (e.g. {path / ('model.' + format)})")
    graph, interface = graph_module(model, max_new_tokens=max_new_tokens)
    was_training = model.training
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    sidecar = path.with_suffix(".json")
    try:
        try:
            _capture(graph, interface, _example(model, interface), path, format)
        except ExportError:
            raise
        except Exception as e:  # the exporters raise many types; name the model and the cause
            raise ExportError(f"torch could not export this {type(model).__name__} to {format}: "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
        batches = [*check, *generated_batches(model, interface)]
        report = compare(model, _loader(path, format, interface), batches, interface)
        if not report["ok"]:
            raise ExportError(f"{path}: the exported graph differs from the model: max abs difference "
                              f"{report['max_abs_diff']:.3g} (allowed {TOLERANCE:g}), decoded labels "
                              f"{'equal' if report['labels_equal'] else 'differ: ' + json.dumps(report.get('first_difference'))}")
    except BaseException:
        path.unlink(missing_ok=True)
        Path(str(path) + ".data").unlink(missing_ok=True)
        raise
    finally:
        model.train(was_training)
    record = {"format": META_FORMAT, "format_version": META_VERSION, "file": path.name, "file_format": format,
              "sha256": file_sha256(path), "model_type": type(model).__name__, "model_config": model.config,
              "torch": torch.__version__, **interface, **(meta or {}), "check": report}
    sidecar.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return {**report, "file": str(path), "meta": str(sidecar)}


def load_meta(path: str | os.PathLike) -> dict:
    """The ``.json`` written beside an exported model, checked for format and for the model
    file it describes (its size and hash)."""
    path = Path(path)
    sidecar = path.with_suffix(".json")
    if not path.is_file():
        raise ExportError(f"{path}: no such exported model")
    if not sidecar.is_file():
        raise ExportError(f"{sidecar}: missing; it describes {path.name}'s inputs (written by rnnkit export)")
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{sidecar}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT or meta.get("format_version") != META_VERSION:
        raise ExportError(f"{sidecar}: not an rnnkit export description (format {META_FORMAT!r} version {META_VERSION})")
    if file_sha256(path) != meta.get("sha256"):
        raise ExportError(f"{path}: does not match {sidecar.name} (its sha256 differs): export it again")
    return meta


class OnnxRunner:
    """``model.predict`` through ONNX Runtime: a checkpoint's exported ONNX file, run on a
    collated batch, gives what the model's ``predict`` gives (``Predictor`` uses it for
    ``--backend onnxruntime``)."""

    def __init__(self, loaded, model_file: str | os.PathLike | None = None) -> None:
        directory = Path(loaded.path)
        path = Path(model_file) if model_file is not None else directory.with_suffix(".onnx")
        if not path.is_file():
            raise ExportError(f"{path}: no ONNX model for {directory}; write it with: rnnkit export {directory}"
                              + ("" if model_file is None else f" -o {path}"))
        meta = load_meta(path)
        weights = loaded.manifest.get("files", {}).get("model.safetensors", {}).get("sha256")
        if meta.get("checkpoint", {}).get("weights_sha256") != weights:
            raise ExportError(f"{path}: was exported from other weights than {directory}'s: export it again "
                              f"(rnnkit export {directory} -o {path})")
        if meta.get("file_format") != "onnx":
            raise ExportError(f"{path}: is a {meta.get('file_format')} export; onnxruntime runs ONNX files")
        self.model, self.meta = loaded.model, meta
        beam = getattr(self.model, "config", {}).get("beam_size")
        if isinstance(self.model, Seq2Seq) and beam not in (None, 1):
            raise ExportError(f"{directory}: decodes with beam_size={beam}; the exported graph decodes greedily, so "
                              "its output would differ: use --backend torch (or train with beam_size: 1)")
        self.session, self.interface = _session(path), {k: meta[k] for k in ("inputs", "outputs")}
        self.interface.update({k: meta[k] for k in ("eos_id", "max_new_tokens") if k in meta})
        self.names = _input_names(self.interface)

    def _outputs(self, batch: dict) -> list[Tensor]:
        feed = {n: t.numpy() for n, t in zip(self.names, _args(batch, self.interface))}
        return [torch.from_numpy(o) for o in self.session.run(None, feed)]

    def logits(self, batch: dict) -> Tensor:
        return self._outputs(batch)[0]

    def __call__(self, batch: dict):
        outputs = self._outputs(batch)
        if isinstance(self.model, SequenceClassifier):
            return outputs[1] if self.model.task == "classification" else outputs[0]
        if isinstance(self.model, Forecaster):
            return outputs[0]
        return _exported(self.model, outputs, batch, self.interface)[1]
