"""Contextual vectors per token (``rnnkit embed CKPT FILE``): what a trained model's recurrent
layers say about each word in its sentence.

    vectors = token_vectors(model, batch, layer="top")   # {"forward", "backward", "merged"}: (B, T, D)
    report = embed_file("runs/bilm/best", lines, "runs/bilm/best.vectors")

From a ``BiLanguageModel``: layer k's forward state (it has read w_1 .. w_t) and backward state
(w_n .. w_t), merged as [forward; backward] -- ELMo's vectors; layer 0 is the token layer (one
vector per word type, the same in every sentence: the static embedding to compare with). From a
tagger, classifier or language model: the encoder's layer k, its two halves when that layer is
bidirectional (a unidirectional layer has only a forward half), merged as the layer merges them
-- so ``merged`` is exactly what the head's next layer reads.

The output folder holds ``forward``, ``backward`` (when there is one) and ``merged`` as (N, D)
float32 arrays (``.npy`` each, or one ``vectors.safetensors``), ``index.jsonl`` -- one line per
row: sentence, position, token, where -- and ``info.json`` (checkpoint, layer, sizes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .layers import Bidirectional

__all__ = ["token_vectors", "embed_file", "FORMATS"]

FORMATS = ("npy", "safetensors")
TOKEN_HEADS = ("BiLanguageModel", "SequenceTagger", "SequenceClassifier", "LanguageModel")


def _layer_index(layer, num_layers: int, lowest: int) -> int:
    if layer == "top":
        return num_layers
    try:
        k = int(layer)
    except (TypeError, ValueError):
        k = None
    if k is None or not lowest <= k <= num_layers:
        raise ValueError(f"layer must be top or an integer from {lowest} to {num_layers} "
                         f"({'0 = the token layer, ' if lowest == 0 else ''}{num_layers} = the top); got {layer!r}")
    return k


@torch.no_grad()
def token_vectors(model, batch: dict, *, layer: int | str = "top") -> dict[str, Tensor]:
    """``forward``, ``backward`` (if the layer has one) and ``merged`` vectors (B, T, D) of
    every token in ``batch`` at ``layer`` (``top`` or 1..L; 0 is a biLM's token layer)."""
    kind = type(model).__name__
    if kind == "BiLanguageModel":
        k = _layer_index(layer, model.num_layers, 0)
        v = model.contextual(batch)
        f, b = (v["tokens"], v["tokens"]) if k == 0 else (v["forward"][:, :, k - 1], v["backward"][:, :, k - 1])
        return {"forward": f, "backward": b, "merged": torch.cat([f, b], dim=-1)}
    if kind not in TOKEN_HEADS or getattr(getattr(model, "input", None), "vocab_size", None) is None:
        raise ValueError(f"contextual vectors need a model that reads tokens ({', '.join(TOKEN_HEADS)}); "
                         f"got a {kind}{' on numeric series' if kind in TOKEN_HEADS else ''}")
    from .models._common import layer_outputs

    x, lengths = model.encoder_input(batch)
    stack = model.encoder
    k = _layer_index(layer, stack.num_layers, 1)
    outputs = layer_outputs(stack, x, lengths)
    merged, top = outputs[k - 1], stack.layers[k - 1]
    if not isinstance(top, Bidirectional):
        return {"forward": merged, "merged": merged}
    if top.merge == "concat" and not (stack.residual and k > 1):
        f, b = merged.split([top.forward_layer.output_size, top.backward_layer.output_size], dim=-1)
    else:  # the merge (or a residual) mixed the halves: run each direction on the layer's input
        below = x if k == 1 else outputs[k - 2]
        f, _ = top.forward_layer(below, lengths=lengths)
        b, _ = top.backward_layer(below, lengths=lengths, reverse=True)
    return {"forward": f, "backward": b, "merged": merged}


def embed_file(path: str | Path, lines, out: str | Path | None = None, *, source: str = "<stdin>",
               format: str = "npy", layer: int | str = "top", batch_size: int = 64) -> dict:
    """Vectors of every token of every input line (plain text or JSON with "text"/"tokens",
    tokenised as the checkpoint's training data was) written to the folder ``out`` (default:
    beside the checkpoint, ``runs/x/best`` -> ``runs/x/best.vectors``). Returns a summary."""
    from ._checks import check_choice
    from .data import TaggedExample, TextExample, collate
    from .run.batches import _encoder
    from .run.heads import _restore
    from .run.predictor import _records
    from .run.reading import _tokenizer

    check_choice("format", format, FORMATS)
    loaded, cfg, vocabs = _restore(path)
    model, kind = loaded.model, cfg.model.type
    if kind not in TOKEN_HEADS or cfg.data.format == "ts":
        raise ValueError(f"{path}: rnnkit embed needs a checkpoint of a model that reads tokens "
                         f"({', '.join(TOKEN_HEADS)}); this one holds a {kind} on data.format {cfg.data.format!r}")
    d = cfg.data
    tokenize = _tokenizer(getattr(d, "predict_tokenizer", None) or getattr(d, "tokenizer", None))
    encoder = _encoder(cfg, vocabs)
    example = TaggedExample if kind == "SequenceTagger" else TextExample
    eos = [vocabs["words"].eos_id] if kind == "LanguageModel" else []  # an LM's lines follow an <eos>
    rows: dict[str, list] = {}
    index: list[dict] = []
    pending: list[tuple[str, list[str]]] = []
    counted = [0]  # sentences written so far

    def flush():
        items = [encoder(example(tokens, None, where)) for where, tokens in pending]
        if eos:
            items = [{"inputs": eos + item["inputs"]} for item in items]
        vectors = token_vectors(model, collate(items), layer=layer)
        start = len(eos)
        for i, (where, tokens) in enumerate(pending):
            n = len(items[i]["inputs"]) - start
            sentence = counted[0]
            counted[0] += 1
            for name, v in vectors.items():
                rows.setdefault(name, []).append(v[i, start:start + n].float().numpy())
            index.extend({"sentence": sentence, "position": j, "token": t, "where": where}
                         for j, t in enumerate(tokens[:n]))
        pending.clear()

    for where, obj in _records(lines, source):
        if isinstance(obj.get("tokens"), list):
            tokens = [str(t) for t in obj["tokens"]]
        else:
            tokens = tokenize(obj["text"])
        if not tokens:
            raise ValueError(f"{where}: no tokens in {obj.get('text', obj.get('tokens'))!r}")
        pending.append((where, tokens))
        if len(pending) >= batch_size:
            flush()
    if pending:
        flush()
    if not index:
        raise ValueError(f"{source}: no input lines to embed")
    arrays = {name: np.ascontiguousarray(np.concatenate(parts)) for name, parts in rows.items()}
    out = Path(out) if out is not None else Path(path).with_suffix(".vectors")
    out.mkdir(parents=True, exist_ok=True)
    if format == "npy":
        files = []
        for name, a in arrays.items():
            np.save(out / f"{name}.npy", a)
            files.append(f"{name}.npy")
    else:
        from safetensors.numpy import save_file

        save_file(arrays, str(out / "vectors.safetensors"))
        files = ["vectors.safetensors"]
    with open(out / "index.jsonl", "w", encoding="utf-8") as f:
        for record in index:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    info = {"checkpoint": str(path), "model_type": kind, "layer": layer, "tokens": len(index),
            "sentences": counted[0], "files": files + ["index.jsonl"],
            "dims": {name: int(a.shape[1]) for name, a in arrays.items()}}
    (out / "info.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return {"out": str(out), **info}
