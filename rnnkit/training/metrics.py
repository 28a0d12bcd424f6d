"""Evaluation metrics, computed by the field's own libraries.

* classification: accuracy and macro-F1 (scikit-learn);
* tagging: token accuracy and span F1 (seqeval: conlleval-compatible by default, or strict
  IOB1 / IOB2 / IOBES);
* language models: perplexity, exp of the mean token negative log-likelihood (``inf`` when that
  overflows);
* translation: corpus BLEU (sacrebleu);
* regression: MAE, RMSE, MAPE (scikit-learn);
* forecasting: MAE, RMSE and MASE (Hyndman & Koehler 2006) of the model and of the
  seasonal-naive forecast;
* conditioned generation: perplexity, overall and per class.

The functions take plain Python lists. The ``*Metrics`` accumulators have ``reset()``,
``update(head, batch, loss)``, ``merge(other)`` (add another accumulator's examples: what
distributed evaluation gathers from each process) and ``compute()``:
they call ``head.predict(batch)`` (docs/contracts.md) and gather what the functions need, so the
trainer never knows which task it runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "accuracy", "macro_f1", "span_f1", "perplexity", "bleu", "mae", "rmse", "mape",
    "SCHEMES", "ClassificationMetrics", "TaggingMetrics", "PerplexityMetrics", "BiPerplexityMetrics", "BleuMetrics",
    "RegressionMetrics", "HIGHER_IS_BETTER", "seasonal_naive", "mase_scale", "ForecastMetrics",
    "ClassPerplexityMetrics", "FrameMetrics", "ErrorRateMetrics",
]

SCHEMES = ("conlleval", "IOB1", "IOB2", "IOBES")

# Which direction is "better" for each metric name the accumulators report.
HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "span_f1": True, "span_precision": True,
                    "span_recall": True, "bleu": True, "perplexity": False, "loss": False,
                    "forward_perplexity": False, "backward_perplexity": False,
                    "mae": False, "rmse": False, "mape": False, "mase": False,
                    "micro_f1": True, "cer": False, "wer": False, "sequence_accuracy": True}


def _check_pair(name: str, y_true: Sequence, y_pred: Sequence) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"{name}: y_true and y_pred must have the same length; "
                         f"got {len(y_true)} and {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError(f"{name}: needs at least one example; got none")


def accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    """Fraction of equal labels (scikit-learn's accuracy_score)."""
    from sklearn.metrics import accuracy_score

    _check_pair("accuracy", y_true, y_pred)
    return float(accuracy_score(y_true, y_pred))


def macro_f1(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> float:
    """Unweighted mean of per-class F1 (scikit-learn's f1_score, average='macro'). ``labels``
    fixes the class set (classes never seen in y_true or y_pred then count with F1 = 0)."""
    from sklearn.metrics import f1_score

    _check_pair("macro_f1", y_true, y_pred)
    return float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


def span_f1(y_true: list[list[str]], y_pred: list[list[str]], scheme: str = "conlleval") -> dict:
    """Entity-level precision, recall and F1 by seqeval.

    ``scheme="conlleval"`` reproduces the conlleval script (lenient chunk boundaries, works for
    IOB1 and IOB2); ``IOB1``, ``IOB2``, ``IOBES`` use seqeval's strict mode with that scheme.
    """
    from seqeval import metrics as sm
    from seqeval import scheme as ss

    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}; got {scheme!r}")
    _check_pair("span_f1", y_true, y_pred)
    for i, (t, p) in enumerate(zip(y_true, y_pred)):
        if len(t) != len(p):
            raise ValueError(f"span_f1: sentence {i} has {len(t)} gold tags but {len(p)} predicted")
    options = {} if scheme == "conlleval" else {"mode": "strict", "scheme": getattr(ss, scheme)}
    return {"span_precision": float(sm.precision_score(y_true, y_pred, zero_division=0, **options)),
            "span_recall": float(sm.recall_score(y_true, y_pred, zero_division=0, **options)),
            "span_f1": float(sm.f1_score(y_true, y_pred, zero_division=0, **options))}


def perplexity(total_nll: float, num_tokens: int) -> float:
    """exp(total negative log-likelihood in nats / number of predicted tokens).

    A mean NLL past ~709.78 nats (float64's largest exponent) gives ``inf``, as does an infinite
    NLL; a NaN NLL gives NaN. Such a model has diverged: the trainer never makes it ``best``, and
    JSON output writes the value as ``null``.
    """
    if num_tokens <= 0:
        raise ValueError(f"perplexity needs at least one token; got num_tokens={num_tokens}")
    try:
        return math.exp(total_nll / num_tokens)
    except OverflowError:
        return math.inf


def bleu(hypotheses: list[str], references: list[str], tokenize: str = "13a") -> float:
    """Corpus BLEU (0-100) by sacrebleu, one reference per hypothesis, detokenised strings."""
    import sacrebleu

    _check_pair("bleu", references, hypotheses)
    return float(sacrebleu.corpus_bleu(hypotheses, [references], tokenize=tokenize).score)


def mae(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    from sklearn.metrics import mean_absolute_error

    _check_pair("mae", y_true, y_pred)
    return float(mean_absolute_error(y_true, y_pred))


def rmse(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    from sklearn.metrics import root_mean_squared_error

    _check_pair("rmse", y_true, y_pred)
    return float(root_mean_squared_error(y_true, y_pred))


def mape(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    """Mean absolute percentage error, in percent. Undefined where a target is 0: raises there
    instead of dividing by a tiny epsilon as scikit-learn does."""
    from sklearn.metrics import mean_absolute_percentage_error

    _check_pair("mape", y_true, y_pred)
    zeros = [i for i, y in enumerate(y_true) if y == 0]
    if zeros:
        raise ValueError(f"mape is undefined for targets equal to 0; {len(zeros)} found "
                         f"(first at index {zeros[0]}); use mae or rmse for this data")
    return 100.0 * float(mean_absolute_percentage_error(y_true, y_pred))


def seasonal_naive(history: torch.Tensor, horizon: int, season: int = 1) -> torch.Tensor:
    """The seasonal-naive forecast of the ``horizon`` steps after ``history`` (..., T, D): step j
    (0-based) repeats the value one season before it in the last observed season,
    ``history[T - m + (j mod m)]`` -- Hyndman's y_{T+h-m(k+1)}, k = floor((h-1)/m). m = 1 is the
    naive forecast (the last value, repeated). Returns (..., horizon, D)."""
    T = history.shape[-2]
    if not 1 <= season <= T:
        raise ValueError(f"season must be in [1, T] = [1, {T}] (the history's length); got {season}")
    index = torch.tensor([T - season + j % season for j in range(horizon)], device=history.device)
    return history.index_select(-2, index)


def mase_scale(series: Sequence[Sequence[float]], season: int = 1) -> list[float]:
    """Per column of a training series (N, D): the in-sample MAE of the one-step seasonal-naive
    forecast, mean |y_t - y_{t-m}| over t = m .. N-1 -- the denominator of MASE. A column where
    it is 0 (constant with period m) has no scale: an error, as MASE would divide by zero."""
    y = torch.as_tensor(series, dtype=torch.float64)
    if y.dim() != 2 or y.shape[0] <= season:
        raise ValueError(f"mase_scale needs a series (N, D) with N > season = {season}; got {tuple(y.shape)}")
    scale = (y[season:] - y[:-season]).abs().mean(0)
    if bool((scale == 0).any()):
        raise ValueError(f"MASE is undefined: column(s) {(scale == 0).nonzero()[:, 0].tolist()} of the training "
                         f"series repeat exactly every {season} step(s), so the seasonal-naive error is 0")
    return scale.tolist()


# ------------------------------------------------------------------------- accumulators

def _rows(x) -> list:
    """A batch of predictions (tensor or list) as a Python list of rows."""
    return x.tolist() if isinstance(x, torch.Tensor) else list(x)


class _GoldPredicted:
    """An accumulator of gold and predicted rows: ``reset`` empties both, ``merge`` appends another
    process's (distributed evaluation merges every process's accumulator into rank 0's)."""

    def reset(self) -> None:
        self.gold, self.pred = [], []

    def merge(self, other) -> None:
        self.gold += other.gold
        self.pred += other.pred


class ClassificationMetrics(_GoldPredicted):
    """Accuracy and macro-F1 over a dev set; ``labels`` names the class ids (for reports)."""

    def __init__(self, labels: Sequence[str] | None = None) -> None:
        self.labels = list(labels) if labels is not None else None
        self.reset()

    @torch.no_grad()
    def update(self, model, batch: dict, loss: float | None = None) -> None:
        self.pred += _rows(model.predict(batch))
        self.gold += _rows(batch["labels"])

    def compute(self) -> dict:
        ids = list(range(len(self.labels))) if self.labels is not None else None
        return {"accuracy": accuracy(self.gold, self.pred),
                "macro_f1": macro_f1(self.gold, self.pred, labels=ids)}


class TaggingMetrics(_GoldPredicted):
    """Token accuracy; plus seqeval span F1 when the tags are B-/I-/E-/S- chunks.

    ``tags[i]`` is the name of tag id i. ``span`` is None (decide from the tag names), True or
    False.
    """

    def __init__(self, tags: Sequence[str], *, scheme: str = "conlleval", span: bool | None = None) -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}; got {scheme!r}")
        self.tags, self.scheme = list(tags), scheme
        if span is None:
            span = any(t[:2] in ("B-", "I-", "E-", "S-") for t in self.tags)
        self.span = span
        self.reset()

    @torch.no_grad()
    def update(self, model, batch: dict, loss: float | None = None) -> None:
        predicted = _rows(model.predict(batch))
        labels, lengths = batch["labels"], batch["lengths"].tolist()
        for row, n, gold in zip(predicted, lengths, labels.tolist()):
            if len(row) < n:
                raise ValueError(f"predict returned {len(row)} tags for a sentence of length {n}")
            self.gold.append(gold[:n])
            self.pred.append(list(row[:n]))

    def names(self, rows: list[list[int]]) -> list[list[str]]:
        return [[self.tags[i] for i in row] for row in rows]

    def compute(self) -> dict:
        flat_gold = [t for row in self.gold for t in row]
        flat_pred = [t for row in self.pred for t in row]
        out = {"accuracy": accuracy(flat_gold, flat_pred)}
        if self.span:
            out.update(span_f1(self.names(self.gold), self.names(self.pred), scheme=self.scheme))
        return out


class FrameMetrics(_GoldPredicted):
    """Per-frame scores of a tagger over numeric frames (scikit-learn).

    One label per frame (softmax / CRF): ``accuracy`` and ``macro_f1`` over every real frame.
    A set of labels per frame (``multi_label``, sigmoid output): ``micro_f1`` over every (frame,
    label) decision, ``accuracy`` = the share of frames whose predicted set is exactly the gold
    one, and ``f1/NAME`` per label. ``gold``/``pred`` hold one entry per real frame: an id, or a
    0/1 row of K.
    """

    def __init__(self, labels: Sequence[str], *, multi_label: bool = False) -> None:
        self.labels, self.multi_label = list(labels), bool(multi_label)
        self.reset()

    @torch.no_grad()
    def update(self, model, batch: dict, loss: float | None = None) -> None:
        predicted = _rows(model.predict(batch))
        K = len(self.labels)
        for row, n, gold in zip(predicted, batch["lengths"].tolist(), batch["labels"].tolist()):
            if len(row) < n:
                raise ValueError(f"predict returned {len(row)} frames for a sequence of length {n}")
            if self.multi_label:
                for t in range(n):
                    self.gold.append([int(v) for v in gold[t]])
                    on = [0] * K
                    for k in row[t]:
                        on[k] = 1
                    self.pred.append(on)
            else:
                self.gold += gold[:n]
                self.pred += list(row[:n])

    def compute(self) -> dict:
        from sklearn.metrics import f1_score

        if not self.multi_label:
            ids = list(range(len(self.labels)))
            return {"accuracy": accuracy(self.gold, self.pred), "macro_f1": macro_f1(self.gold, self.pred, labels=ids)}
        import numpy as np

        _check_pair("micro_f1", self.gold, self.pred)
        gold, pred = np.asarray(self.gold), np.asarray(self.pred)  # (N, K) 0/1
        # micro-F1 pools every (frame, label) decision: the binary F1 of the flattened decisions
        # (sklearn reads an (N, 1) indicator as one binary column, so K = 1 is passed flat too)
        out = {"micro_f1": float(f1_score(gold.ravel(), pred.ravel(), zero_division=0)),
               "accuracy": float((gold == pred).all(1).mean())}
        out.update({f"f1/{name}": float(f1_score(gold[:, k], pred[:, k], zero_division=0))
                    for k, name in enumerate(self.labels)})
        return out


class PerplexityMetrics:
    """Perplexity from the head's mean loss, weighted by each batch's predicted tokens
    (``labels`` other than -100 and 0, the padding ids of docs/contracts.md)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.nll, self.tokens = 0.0, 0

    def merge(self, other) -> None:
        self.nll += other.nll
        self.tokens += other.tokens

    @torch.no_grad()
    def update(self, model, batch: dict, loss: float | None = None) -> None:
        labels = batch["labels"]
        n = int(((labels != -100) & (labels != 0)).sum())
        # the evaluator passes the batch's loss: a second loss() call would advance a carried state
        self.nll += (float(model.loss(batch)) if loss is None else loss) * n
        self.tokens += n

    def compute(self) -> dict:
        return {"perplexity": perplexity(self.nll, self.tokens)}


class BiPerplexityMetrics:
    """A bidirectional LM's perplexity per direction, and of both together (exp of the mean NLL
    over both directions' predictions: the geometric mean of the two), from the head's
    ``direction_nll(batch)``."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.nll_f, self.nll_b, self.tokens = 0.0, 0.0, 0

    def merge(self, other) -> None:
        self.nll_f, self.nll_b = self.nll_f + other.nll_f, self.nll_b + other.nll_b
        self.tokens += other.tokens

    @torch.no_grad()
    def update(self, model, batch: dict, loss: float | None = None) -> None:
        nll_f, nll_b, n = model.direction_nll(batch)
        self.nll_f, self.nll_b, self.tokens = self.nll_f + float(nll_f), self.nll_b + float(nll_b), self.tokens + n

    def compute(self) -> dict:
        return {"perplexity": perplexity(self.nll_f + self.nll_b, 2 * self.tokens),
                "forward_perplexity": perplexity(self.nll_f, self.tokens),
                "backward_perplexity": perplexity(self.nll_b, self.tokens)}


class BleuMetrics:
    """Corpus BLEU of decoded ``predict`` token ids against ``targets`` (BOS/EOS stripped).

    ``itos`` maps target ids to tokens; ``join`` glues a token list back into a string (spaces,
    or nothing for character-level targets). ``tokenize`` is sacrebleu's: ``13a`` (its default,
    for detokenised text) or ``none`` when the targets are already tokenised.
    """

    def __init__(self, itos: Sequence[str], *, join: str = " ", specials: Sequence[int] = (0, 2, 3),
                 tokenize: str = "13a") -> None:
        self.itos, self.join, self.specials, self.tokenize = list(itos), join, set(specials), tokenize
        self.reset()

    def reset(self) -> None:
        self.hyps, self.refs = [], []

    def merge(self, other) -> None:
        self.hyps += other.hyps
        self.refs += other.refs

    def text(self, ids: Sequence[int]) -> str:
        return self.join.join(self.itos[i] for i in ids if i not in self.specials)

    @torch.no_grad()
    def update(self, model, batch: dict, loss: float | None = None) -> None:
        self.hyps += [self.text(row) for row in _rows(model.predict(batch))]
        for row, n in zip(batch["targets"].tolist(), batch["target_lengths"].tolist()):
            self.refs.append(self.text(row[:n]))

    def compute(self) -> dict:
        return {"bleu": bleu(self.hyps, self.refs, tokenize=self.tokenize)}


class RegressionMetrics(_GoldPredicted):
    """MAE, RMSE and (when no target is 0) MAPE over all predicted values."""

    def __init__(self) -> None:
        self.reset()

    @torch.no_grad()
    def update(self, model, batch: dict, loss: float | None = None) -> None:
        pred = model.predict(batch)
        pred = pred if isinstance(pred, torch.Tensor) else torch.as_tensor(pred)
        self.pred += pred.reshape(-1).tolist()
        self.gold += batch["labels"].reshape(-1).tolist()

    def compute(self) -> dict:
        out = {"mae": mae(self.gold, self.pred), "rmse": rmse(self.gold, self.pred)}
        if all(y != 0 for y in self.gold):
            out["mape"] = mape(self.gold, self.pred)
        return out


class ForecastMetrics:
    """MAE and RMSE (original units, over every forecast value) and MASE of a forecaster, and the
    same three of the seasonal-naive forecast from each window (``baseline_*``).

    MASE = mean over target columns of MAE_column / ``scale[column]`` (``mase_scale`` of the
    training series), so a MASE below ``baseline_mase`` beats the baseline on these windows, and
    below 1 beats the one-step baseline inside the training data. ``targets``: the input columns
    forecast (the seasonal-naive forecast reads them from the window); ``season``: m.
    """

    def __init__(self, scale: Sequence[float], *, season: int = 1, targets: Sequence[int] | None = None) -> None:
        self.scale, self.season = torch.as_tensor(scale, dtype=torch.float64), season
        self.targets = None if targets is None else list(targets)
        self.reset()

    def reset(self) -> None:
        self.gold, self.pred, self.base = [], [], []

    def merge(self, other) -> None:
        self.gold += other.gold
        self.pred += other.pred
        self.base += other.base

    @torch.no_grad()
    def update(self, model, batch: dict, loss: float | None = None) -> None:
        y = batch["labels"]
        pred = model.predict(batch).reshape(y.shape[0], y.shape[1], -1)
        y = y.reshape(pred.shape)
        x = batch["inputs"] if self.targets is None else batch["inputs"][..., self.targets]
        if bool((batch["lengths"] != x.shape[1]).any()):
            raise ValueError("ForecastMetrics needs full windows (every length equal to T)")
        self.gold.append(y.double().cpu())
        self.pred.append(pred.double().cpu())
        self.base.append(seasonal_naive(x, y.shape[1], self.season).double().cpu())

    def compute(self) -> dict:
        if not self.gold:
            raise ValueError("ForecastMetrics: no windows")
        y = torch.cat(self.gold).flatten(0, 1)  # (windows * horizon, D_out)
        out = {}
        for prefix, pred in (("", torch.cat(self.pred)), ("baseline_", torch.cat(self.base))):
            err = pred.flatten(0, 1) - y
            out[f"{prefix}mae"] = float(err.abs().mean())
            out[f"{prefix}rmse"] = float(err.pow(2).mean().sqrt())
            out[f"{prefix}mase"] = float((err.abs().mean(0) / self.scale).mean())
        return out


class ClassPerplexityMetrics:
    """Perplexity of a class-conditioned generator over its target tokens (EOS included, BOS
    not): overall and per class (``perplexity/NAME``), from teacher-forced logits."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(labels)
        self.reset()

    def reset(self) -> None:
        self.nll = [0.0] * len(self.labels)
        self.tokens = [0] * len(self.labels)

    def merge(self, other) -> None:
        self.nll = [a + b for a, b in zip(self.nll, other.nll)]
        self.tokens = [a + b for a, b in zip(self.tokens, other.tokens)]

    @torch.no_grad()
    def update(self, model, batch: dict, loss: float | None = None) -> None:
        logits = model(batch)  # (B, T'-1, V)
        y = batch["targets"][:, 1:].to(logits.device)
        real = torch.arange(y.shape[1], device=y.device)[None] < (batch["target_lengths"].to(y.device) - 1)[:, None]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y, reduction="none")  # (B, T'-1)
        per_row, counts = (nll * real).sum(1).tolist(), real.sum(1).tolist()
        for k, total, n in zip(batch["condition"].tolist(), per_row, counts):
            self.nll[k] += total
            self.tokens[k] += n

    def compute(self) -> dict:
        out = {"perplexity": perplexity(sum(self.nll), sum(self.tokens))}
        for name, nll, n in zip(self.labels, self.nll, self.tokens):
            if n:
                out[f"perplexity/{name}"] = perplexity(nll, n)
        return out


# --- audio (issue #17): a Transcriber's error rates ---
class ErrorRateMetrics(_GoldPredicted):
    """Character and word error rate (jiwer: edit distance over the reference length, summed over
    the set) of a Transcriber's labellings, and the share of exactly right transcripts. ``itos``
    names the symbol ids (0, the blank, is never written). For digit strings written without
    spaces, ``cer`` is the digit error rate."""

    def __init__(self, itos: Sequence[str]) -> None:
        try:
            import jiwer  # noqa: F401
        except ImportError:
            raise ImportError("error rates need jiwer: pip install 'rnnkit[audio]'") from None
        self.itos = list(itos)
        self.reset()

    def text(self, ids: Sequence[int]) -> str:
        return "".join(self.itos[i] for i in ids if i != 0)

    @torch.no_grad()
    def update(self, model, batch: dict, loss: float | None = None) -> None:
        self.pred += [self.text(row) for row in _rows(model.predict(batch))]
        self.gold += [self.text(row[:n]) for row, n in zip(_rows(batch["targets"]), _rows(batch["target_lengths"]))]

    def compute(self) -> dict:
        import jiwer

        if not self.gold:
            return {"cer": float("nan"), "wer": float("nan"), "sequence_accuracy": float("nan")}
        # jiwer refuses an empty reference: those utterances count in sequence_accuracy only
        pairs = [(g, p) for g, p in zip(self.gold, self.pred) if g.strip()]
        gold, pred = [g for g, _ in pairs], [p for _, p in pairs]
        return {"cer": jiwer.cer(gold, pred) if gold else float("nan"),
                "wer": jiwer.wer(gold, pred) if gold else float("nan"),
                "sequence_accuracy": sum(g == p for g, p in zip(self.gold, self.pred)) / len(self.gold)}
