"""Seeing inside a recurrent network: how the loss's gradient reaches back through time.

    report = gradients_through_time(model, batch)   # per layer and direction: |dL/dh_t| for each t

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

__all__ = ["gradients_through_time", "plot_gradients"]


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
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(reports: dict[str, dict], out: str | Path, *, title: str = "") -> tuple[Path, Path]:
    """``gradients.json`` and ``gradients.png`` in the folder ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gradients.json").write_text(json.dumps(reports, indent=1) + "\n", encoding="utf-8")
    return out / "gradients.json", plot_gradients(reports, out / "gradients.png", title=title)
