"""Seeing inside a recurrent network: how the loss's gradient reaches back through time, and
where a seq2seq decoder looks in the source.

    report = gradients_through_time(model, batch)   # per layer and direction: |dL/dh_t| for each t
    maps = attention_maps(seq2seq, batch)           # per sentence: generated ids, weights (T', S)

Backpropagation through time multiplies one Jacobian per step; where they shrink (tanh, many
steps) the gradient that reaches early steps vanishes, and where they grow it explodes. This
measures it on real inputs: the model runs on the Python loop under
``recurrence.record_states()``, every step's hidden state h_t keeps its gradient, and after
``loss.backward()`` the norm of dL/dh_t is averaged over the rows that are real at t. The
curve of a backward direction is given by position in the sentence, as the forward one: it
runs the other way in time, so its gradient fades towards the *end* of the sentence.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from . import recurrence
from ._plot import save_figure

__all__ = ["gradients_through_time", "plot_gradients", "attention_maps", "plot_attention", "write_attention"]


def _names(model: nn.Module) -> dict[int, str]:
    """id(cell) -> the dotted name of the layer that holds it (``encoder.layers.0.forward_layer``)."""
    return {id(module): name.removesuffix(".cell") for name, module in model.named_modules()
            if name.endswith(".cell") or name == "cell"}


def gradients_through_time(model: nn.Module, batch: dict) -> dict:
    """Per recurrent layer and direction, the mean norm of dL/dh_t at each position t of the
    batch (rows past their length left out), with the loss. ``model`` needs ``loss(batch)``;
    dropout is off (eval mode) so that the curve is the model's, not the mask's."""
    was_training = model.training
    model.eval()
    names = _names(model)
    try:
        with torch.enable_grad(), recurrence.record_states() as runs:
            loss = model.loss(batch)
            loss.backward()
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    layers = []
    for cell, reverse, lengths, states in runs:
        B, steps = states[0].shape[0], len(states)
        grads = torch.stack([h.grad if h.grad is not None else torch.zeros_like(h) for h in states], dim=1)
        norms = grads.detach().norm(dim=-1)  # (B, steps): step s of a reverse run ...
        if lengths is None:
            lengths = torch.full((B,), steps, dtype=torch.long)
        lengths = lengths.to(norms.device)
        if reverse:  # ... is position length - 1 - s of its row
            norms = recurrence.reverse_padded(norms, lengths)
        real = recurrence.length_mask(lengths, steps).float()  # (B, steps)
        rows = real.sum(0)
        mean = (norms * real).sum(0) / rows.clamp(min=1)
        layers.append({"layer": names.get(id(cell), type(cell).__name__),
                       "direction": "backward" if reverse else "forward",
                       "norm_by_position": [float(v) for v in mean],
                       "rows_by_position": [int(r) for r in rows]})
    return {"loss": float(loss.detach()), "sequences": int(B), "layers": layers}


def plot_gradients(reports: dict[str, dict], path: str | Path, *, title: str = "") -> Path:
    """One panel per recurrent layer: |dL/dh_t| by position, forward and backward directions,
    one line style per report (e.g. ``{"trained": ..., "untrained": ...}``), log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(reports.values()))
    layer_names = list(dict.fromkeys(entry["layer"] for entry in first["layers"]))
    fig, axes = plt.subplots(len(layer_names), 1, figsize=(7, 2.6 * len(layer_names)), squeeze=False)
    styles = ["-", "--", ":", "-."]
    colours = {"forward": "tab:blue", "backward": "tab:orange"}
    for ax, name in zip(axes[:, 0], layer_names):
        for style, (label, report) in zip(styles, reports.items()):
            for entry in report["layers"]:
                if entry["layer"] != name:
                    continue
                values = [v if v > 0 else math.nan for v in entry["norm_by_position"]]
                ax.plot(range(1, len(values) + 1), values, style, color=colours[entry["direction"]],
                        label=f"{label}, {entry['direction']}")
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("|dL/dh_t|")
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("position t in the sentence")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=110)


def write_report(reports: dict[str, dict], out: str | Path, *, title: str = "") -> tuple[Path, Path]:
    """``gradients.json`` and ``gradients.png`` in the folder ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gradients.json").write_text(json.dumps(reports, indent=1) + "\n", encoding="utf-8")
    return out / "gradients.json", plot_gradients(reports, out / "gradients.png", title=title)


# ------------------------------------------------------------------------------ attention

@torch.no_grad()
def attention_maps(model: nn.Module, batch: dict, *, max_length: int | None = None) -> list[dict]:
    """Greedy decoding of each source of ``batch`` by a ``Seq2Seq`` with attention, keeping the
    weights of every step: per sentence, ``ids`` (the generated target ids, EOS included when it
    was emitted) and ``weights`` (one row per generated token, over the sentence's own source
    steps; each row sums to 1). The decoding is ``predict``'s greedy one, in eval mode."""
    from .models.decoding import forbid

    if getattr(model, "attention", None) is None:
        raise ValueError(f"attention maps need a Seq2Seq with context='attention'; got "
                         f"{type(model).__name__}" + (f" with context={model.context!r}" if hasattr(model, "context") else ""))
    was_training = model.training
    model.eval()
    try:
        max_length = model.config["max_target_length"] if max_length is None else max_length
        states, extra = model.encode(batch)
        B = len(batch["lengths"])
        token = torch.full((B,), model.bos_id, dtype=torch.long, device=model.device)
        done = torch.zeros(B, dtype=torch.bool, device=model.device)
        tokens, weights = [], []
        for _ in range(max_length):
            logits, states, w = model._decode_step(token, states, extra)  # w: (B, S)
            token = forbid(logits.log_softmax(-1), [0, model.bos_id]).argmax(-1)
            tokens.append(token)
            weights.append(w)
            done |= token == model.eos_id
            if bool(done.all()):
                break
    finally:
        model.train(was_training)
    tokens, weights = torch.stack(tokens, 1).tolist(), torch.stack(weights, 1)  # (B, steps), (B, steps, S)
    maps = []
    for b, (row, n) in enumerate(zip(tokens, batch["lengths"].tolist())):
        steps = row.index(model.eos_id) + 1 if model.eos_id in row else len(row)
        maps.append({"ids": row[:steps], "weights": weights[b, :steps, :n].tolist()})
    return maps


def plot_attention(source: list[str], target: list[str], weights: list[list[float]], path: str | Path, *,
                   title: str = "") -> Path:
    """A heat map of one sentence's attention: a row per generated target token, a column per
    source token, darker where the decoder looked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    S, T = len(source), len(target)
    fig, ax = plt.subplots(figsize=(min(1.5 + 0.32 * S, 12), min(1.2 + 0.3 * T, 12)))
    image = ax.imshow(weights, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(S), source, rotation=90, fontsize=8)
    ax.set_yticks(range(T), target, fontsize=8)
    ax.set_xlabel("source")
    ax.set_ylabel("generated")
    fig.colorbar(image, ax=ax, fraction=0.04)
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def write_attention(sentences: list[dict], out: str | Path) -> tuple[Path, list[Path]]:
    """``attention.json`` (per sentence: where, source, target, weights) and one
    ``attention_NNN.png`` per sentence in the folder ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "attention.json"
    json_path.write_text(json.dumps(sentences, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    pictures = [plot_attention(s["source"], s["target"], s["weights"], out / f"attention_{i:03d}.png",
                               title=s["where"]) for i, s in enumerate(sentences, 1)]
    return json_path, pictures
