"""``rnnkit demo --gradients``: which recurrent networks carry a gradient across 200 steps.

The task: a sequence of T tokens whose first token is one of K markers and whose other tokens
are noise; the label is the marker's class. Everything the label depends on is at t = 1 and the
model (a ``SequenceClassifier`` reading its last state) answers at t = T, so the only way to
learn it from a sequence of T tokens is through T - 1 steps of backpropagation through time.
Each model trains with the same budget (steps, batch, Adam, learning rate, clipping) on
sequences of every length from 2 to T (one length per batch, uniform or log-uniform): the short
ones give a learning signal any cell can pick up, and the question is whether a cell keeps the
marker over the long ones. It is tested on held-out sequences of length T (and T/10).

For each model the demo measures the mean |dL/dh_t| at every position
(``rnnkit.inspect.gradients_through_time``, on a float64 copy) on the same length-T batch at
initialisation and after training. At initialisation every cell's gradient fades by orders of
magnitude between t = T and t = 1; what training makes of it, and which models learn, is what
the demo prints (docs/training.md has the measured tables).
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from pathlib import Path

import torch

from ._plot import save_figure

__all__ = ["MODELS", "DEFAULT_MODELS", "LENGTHS", "make_task", "label_of", "run_gradients_demo"]

# name -> rnnkit.Stack options (the classifier's encoder). Hidden sizes are filled in by the demo.
MODELS = {
    "tanh": ("tanh RNN", {"cell": "rnn", "nonlinearity": "tanh"}),
    "relu": ("ReLU RNN", {"cell": "rnn", "nonlinearity": "relu"}),
    "gru": ("GRU", {"cell": "gru"}),
    "lstm": ("LSTM", {"cell": "lstm", "forget_bias": 1.0}),
    "deep-tanh": ("4-layer tanh RNN", {"cell": "rnn", "nonlinearity": "tanh", "layers": 4}),
    "deep-tanh-res-ln": ("4-layer tanh RNN, residual + LN",
                         {"cell": "rnn", "nonlinearity": "tanh", "layers": 4, "residual": True,
                          "layer_norm": True}),
    "deep-gru": ("4-layer GRU", {"cell": "gru", "layers": 4}),
    "deep-gru-res-ln": ("4-layer GRU, residual + LN",
                        {"cell": "gru", "layers": 4, "residual": True, "layer_norm": True}),
}
DEFAULT_MODELS = ("tanh", "relu", "gru", "lstm", "deep-tanh", "deep-tanh-res-ln")

LEARNED = 0.9  # test accuracy at length T from which a model counts as having learned the task


# ------------------------------------------------------------------------------- task

def label_of(inputs: torch.Tensor, classes: int) -> torch.Tensor:
    """The label of each sequence (B, T) of token ids: its first token's class. Ids: 0 padding,
    1..K the markers (first position only), K+1.. noise."""
    first = inputs[:, 0]
    if bool(((first < 1) | (first > classes)).any()):
        raise ValueError(f"the first token of every sequence must be a marker 1..{classes}; got "
                         f"{sorted(set(first.tolist()))}")
    return first - 1


def make_task(n: int, length: int, *, classes: int = 4, noise: int = 8,
              generator: torch.Generator | None = None) -> dict:
    """``n`` sequences of ``length`` tokens: a marker 1..K first, then tokens drawn uniformly
    from the ``noise`` ids K+1..K+noise; labels = the marker's class (``label_of``). A batch
    for ``SequenceClassifier``: inputs (n, T), lengths (n,), labels (n,)."""
    for name, value, low in (("n", n, 1), ("length", length, 1), ("classes", classes, 2), ("noise", noise, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    inputs = torch.randint(classes + 1, classes + noise + 1, (n, length), generator=generator)
    inputs[:, 0] = torch.randint(1, classes + 1, (n,), generator=generator)
    return {"inputs": inputs, "lengths": torch.full((n,), length, dtype=torch.long),
            "labels": label_of(inputs, classes)}


# ------------------------------------------------------------------------------ model

def _encoder(key: str, hidden_size: int) -> dict:
    options = dict(MODELS[key][1])
    layers = options.pop("layers", 1)
    return {**options, "hidden_sizes": [hidden_size] * layers}


LENGTHS = ("uniform", "log-uniform")


def _train_length(length: int, kind: str, generator: torch.Generator) -> int:
    """The length of one training batch, from 2 to ``length``: ``uniform``, or ``log-uniform``
    (each scale of distance, 2-20 and 20-200, as often: half of the batches are short). One
    length per batch: no padding to run."""
    u = float(torch.rand((), generator=generator))
    if kind == "uniform":
        return min(length, 2 + int(u * (length - 1)))
    return min(length, int(2 * ((length + 1) / 2) ** u))  # n with probability ~ log((n + 1) / n)


def _measure(model, batch: dict) -> dict:
    """``gradients_through_time`` on a float64 copy of the model: in float32 the gradient that
    reaches the first of 200 steps of a tanh RNN is below the smallest float (1e-45) and reads 0."""
    from .inspect import gradients_through_time

    return gradients_through_time(copy.deepcopy(model).double(), batch)


def _ratio(report: dict) -> float | None:
    """|dL/dh_1| / |dL/dh_T| of the bottom layer, the one the first token enters (None if the
    loss was not finite, or nothing reached h_T)."""
    curve = report["layers"][0]["norm_by_position"]
    first, last = curve[0], curve[-1]
    if not (math.isfinite(first) and math.isfinite(last)) or last == 0:
        return None
    return first / last


def _finite(report: dict) -> dict:
    """The report with non-finite numbers as None, so that gradients.json is standard JSON."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, list):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v
    return clean(report)


def _accuracy(model, batch: dict) -> float:
    with torch.no_grad():
        return float((model.predict(batch) == batch["labels"]).float().mean())


def _train_one(key: str, *, length: int, lengths: str, steps: int, batch_size: int, hidden_size: int,
               embedding_dim: int, classes: int, noise: int, lr: float, clip: float | None,
               seed: int, probe: dict, tests: dict, stream) -> dict:
    from .models import SequenceClassifier
    from .training import seed_everything

    # A plain loop, not training.Trainer: a fresh batch every step, and a divergence is a result
    # to report beside the others, not an error that ends the demo.
    seed_everything(seed)
    encoder = _encoder(key, hidden_size)
    model = SequenceClassifier(vocab_size=classes + noise + 1, num_classes=classes,
                               embedding_dim=embedding_dim, encoder=encoder, pooling="last")
    init = _measure(model, probe)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    data = torch.Generator().manual_seed(seed + 1)  # the same batches for every model
    max_norm, diverged_at, why, seconds = 0.0, None, None, 0.0
    model.train()
    for step in range(1, steps + 1):
        T = _train_length(length, lengths, data)
        batch = make_task(batch_size, T, classes=classes, noise=noise, generator=data)
        start = time.perf_counter()
        loss = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip else math.inf)
        if not (torch.isfinite(loss) and torch.isfinite(norm)):
            diverged_at = step  # the weights stay as they were before this step
            why = "the loss" if not torch.isfinite(loss) else "the gradient norm"
            seconds += time.perf_counter() - start
            break
        optimizer.step()
        seconds += time.perf_counter() - start
        max_norm = max(max_norm, float(norm))
    model.eval()
    trained = _measure(model, probe)
    result = {"name": MODELS[key][0], "encoder": encoder,
              "params": sum(p.numel() for p in model.encoder.parameters()),
              "accuracy": _accuracy(model, tests["long"]), "accuracy_short": _accuracy(model, tests["short"]),
              "train_seconds": seconds, "steps_run": step if diverged_at is None else step - 1,
              "diverged_at": diverged_at, "not_finite": why, "max_grad_norm": max_norm,
              "ratio_init": _ratio(init), "ratio_trained": _ratio(trained),
              "init": _finite(init), "trained": _finite(trained)}
    result["learned"] = result["accuracy"] >= LEARNED
    print(f"  {result['name']:32s} accuracy at T={length}: {result['accuracy']:.1%}  "
          f"(at T={tests['short']['inputs'].shape[1]}: {result['accuracy_short']:.1%})  "
          f"{seconds:5.1f} s" + (f"  diverged at step {diverged_at} ({why} not finite)" if diverged_at else ""),
          file=stream, flush=True)
    return result


# ----------------------------------------------------------------------------- output

def plot_panels(results: dict, path: str | Path, *, length: int) -> Path:
    """One panel per model: |dL/dh_t| by position, each layer at initialisation (dashed) and
    after training (solid), log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False, sharex=True)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, r in zip(axes.flat, results.values()):
        layers = r["init"]["layers"]
        colours = plt.cm.viridis([i / max(len(layers) - 1, 1) * 0.8 for i in range(len(layers))])
        for when, style in (("init", "--"), ("trained", "-")):
            for i, (entry, colour) in enumerate(zip(r[when]["layers"], colours)):
                values = [v if v is not None and v > 0 else math.nan for v in entry["norm_by_position"]]
                label = f"layer {i + 1}" if when == "trained" and len(layers) > 1 else None
                ax.plot(range(1, len(values) + 1), values, style, color=colour, linewidth=1.2, label=label)
        silent = [when for when in ("init", "trained")
                  if not any(v for e in r[when]["layers"] for v in e["norm_by_position"])]
        if silent:  # a log axis shows nothing of a curve that is 0 (or not finite) everywhere
            ax.text(0.03, 0.04, f"{' and '.join(silent)}: dL/dh_t is 0 (or not finite) at every t",
                    transform=ax.transAxes, fontsize=6.5)
        ax.set_yscale("log")
        verdict = "learned" if r["learned"] else "did not learn"
        if r["diverged_at"]:
            verdict = f"diverged at step {r['diverged_at']}"
        ax.set_title(f"{r['name']}\naccuracy {r['accuracy']:.0%}: {verdict}", fontsize=8.5)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, which="major")
        if len(layers) > 1:
            ax.legend(fontsize=6, loc="lower right")
    for ax in axes[:, 0]:
        ax.set_ylabel("mean |dL/dh_t|", fontsize=8)
    for ax in axes[-1, :]:
        ax.set_xlabel(f"position t (label read at t = {length})", fontsize=8)
    fig.suptitle("How much of the loss's gradient reaches the first token: mean |dL/dh_t| at "
                 "initialisation (dashed) and after training (solid)", fontsize=9.5)
    return save_figure(fig, path, dpi=80)


def _ratio_text(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.1e}"


def _print_table(results: dict, *, length: int, short: int, classes: int, stream) -> None:
    print(f"\nheld-out accuracy (chance {1 / classes:.0%}; learned: >= {LEARNED:.0%} at T={length}) and "
          f"|dL/dh_1| / |dL/dh_T| of the bottom layer:", file=stream)
    print(f"  {'model':32s} {'weights':>8s} {f'acc T={length}':>10s} {f'acc T={short}':>9s} "
          f"{'ratio init':>10s} {'trained':>9s} {'train time':>10s}  learned", file=stream)
    for r in results.values():
        learned = "yes" if r["learned"] else "no"
        if r["diverged_at"]:
            learned += f" (diverged at step {r['diverged_at']})"
        print(f"  {r['name']:32s} {r['params']:>8,d} {r['accuracy']:>10.1%} {r['accuracy_short']:>9.1%} "
              f"{_ratio_text(r['ratio_init']):>10s} {_ratio_text(r['ratio_trained']):>9s} "
              f"{r['train_seconds']:>9.1f}s  {learned}", file=stream)


# -------------------------------------------------------------------------------- run

def run_gradients_demo(out: str | Path = "runs/demo-gradients", *, length: int = 200, steps: int = 1000,
                       lengths: str = "uniform",
                       models: tuple[str, ...] | list[str] = DEFAULT_MODELS, batch_size: int = 32,
                       hidden_size: int = 32, embedding_dim: int = 16, classes: int = 4, noise: int = 8,
                       lr: float = 3e-3, clip: float | None = 1.0, test_size: int = 500, seed: int = 0,
                       num_threads: int | None = 1, stream=None) -> dict:
    """Train each model of ``models`` (keys of ``MODELS``) on the first-token task with the same
    budget, measure its gradient through time before and after, and write ``gradients.json``
    and ``gradients.png`` to ``out``. ``lengths``: how training lengths are drawn from 2 to
    ``length`` (``uniform`` or ``log-uniform``, see ``_train_length``). ``clip``: the gradient-norm clip (None or 0: none).
    Returns the JSON's content."""
    stream = stream if stream is not None else sys.stdout
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise ValueError(f"models must be one or more of {', '.join(MODELS)}; got {', '.join(models) or 'none'}")
    if lengths not in LENGTHS:
        raise ValueError(f"lengths must be one of {', '.join(LENGTHS)}; got {lengths!r}")
    if length < 2:
        raise ValueError(f"length must be at least 2 (a marker and one step to carry it); got {length}")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("hidden_size", hidden_size),
                        ("test_size", test_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if not lr > 0 or (clip is not None and clip < 0):
        raise ValueError(f"lr must be > 0 and clip >= 0 (0: no clipping); got lr={lr}, clip={clip}")
    from . import recurrence

    if num_threads is not None:
        torch.set_num_threads(num_threads)
    recurrence.prepare()  # build and probe the compiled loop now, not inside the first model's time
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    short = max(2, length // 10)
    held_out = torch.Generator().manual_seed(seed + 1000)
    tests = {"long": make_task(test_size, length, classes=classes, noise=noise, generator=held_out),
             "short": make_task(test_size, short, classes=classes, noise=noise, generator=held_out)}
    probe = make_task(batch_size, length, classes=classes, noise=noise,
                      generator=torch.Generator().manual_seed(seed + 2000))
    print(f"rnnkit demo --gradients: the label is the class of the first of T={length} tokens ({classes} "
          f"markers, then noise).\nSame budget for every model: {steps} steps of {batch_size} sequences "
          f"of one length, {lengths} from 2 to {length}, Adam lr {lr}, gradient norm clipped at "
          f"{clip if clip else 'none'}; hidden size {hidden_size}.", file=stream, flush=True)
    results = {}
    for key in models:
        results[key] = _train_one(key, length=length, lengths=lengths, steps=steps, batch_size=batch_size,
                                  hidden_size=hidden_size, embedding_dim=embedding_dim, classes=classes,
                                  noise=noise, lr=lr, clip=clip or None, seed=seed, probe=probe,
                                  tests=tests, stream=stream)
    report = {"task": {"length": length, "train_lengths": lengths, "short_length": short,
                       "classes": classes, "noise": noise,
                       "steps": steps, "batch_size": batch_size, "hidden_size": hidden_size,
                       "embedding_dim": embedding_dim, "lr": lr, "clip": clip or None, "seed": seed,
                       "test_size": test_size, "learned_threshold": LEARNED},
              "models": results}
    (out / "gradients.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    plot_panels(results, out / "gradients.png", length=length)
    _print_table(results, length=length, short=short, classes=classes, stream=stream)
    print(f"\nsaved under {out}/: gradients.png (|dL/dh_t| by position, per model, before and after "
          f"training) and gradients.json (the curves and the table)", file=stream)
    return report
