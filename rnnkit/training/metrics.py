"""Evaluation metrics, computed by the field's own libraries.

* classification: accuracy and macro-F1 (scikit-learn);
* tagging: token accuracy and span F1 (seqeval: conlleval-compatible by default, or strict
  IOB1 / IOB2 / IOBES);
* language models: perplexity, exp of the mean token negative log-likelihood (``inf`` when that
  overflows);
* translation: corpus BLEU (sacrebleu);
* regression and forecasting: MAE, RMSE, MAPE (scikit-learn).

The functions take plain Python lists. The ``*Metrics`` accumulators have ``reset()``, ``update(head, batch, loss)`` and ``compute()``:
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
    "RegressionMetrics", "HIGHER_IS_BETTER",
]

SCHEMES = ("conlleval", "IOB1", "IOB2", "IOBES")

# Which direction is "better" for each metric name the accumulators report.
HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "span_f1": True, "span_precision": True,
                    "span_recall": True, "bleu": True, "perplexity": False, "loss": False,
                    "forward_perplexity": False, "backward_perplexity": False,
                    "mae": False, "rmse": False, "mape": False}


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


# ------------------------------------------------------------------------- accumulators

def _rows(x) -> list:
    """A batch of predictions (tensor or list) as a Python list of rows."""
    return x.tolist() if isinstance(x, torch.Tensor) else list(x)


class ClassificationMetrics:
    """Accuracy and macro-F1 over a dev set; ``labels`` names the class ids (for reports)."""

    def __init__(self, labels: Sequence[str] | None = None) -> None:
        self.labels = list(labels) if labels is not None else None
        self.reset()

    def reset(self) -> None:
        self.gold, self.pred = [], []

    @torch.no_grad()
    def update(self, model, batch: dict, loss: float | None = None) -> None:
        self.pred += _rows(model.predict(batch))
        self.gold += _rows(batch["labels"])

    def compute(self) -> dict:
        ids = list(range(len(self.labels))) if self.labels is not None else None
        return {"accuracy": accuracy(self.gold, self.pred),
                "macro_f1": macro_f1(self.gold, self.pred, labels=ids)}


class TaggingMetrics:
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

    def reset(self) -> None:
        self.gold, self.pred = [], []

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


class PerplexityMetrics:
    """Perplexity from the head's mean loss, weighted by each batch's predicted tokens
    (``labels`` other than -100 and 0, the padding ids of docs/contracts.md)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.nll, self.tokens = 0.0, 0

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

    def text(self, ids: Sequence[int]) -> str:
        return self.join.join(self.itos[i] for i in ids if i not in self.specials)

    @torch.no_grad()
    def update(self, model, batch: dict, loss: float | None = None) -> None:
        self.hyps += [self.text(row) for row in _rows(model.predict(batch))]
        for row, n in zip(batch["targets"].tolist(), batch["target_lengths"].tolist()):
            self.refs.append(self.text(row[:n]))

    def compute(self) -> dict:
        return {"bleu": bleu(self.hyps, self.refs, tokenize=self.tokenize)}


class RegressionMetrics:
    """MAE, RMSE and (when no target is 0) MAPE over all predicted values."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.gold, self.pred = [], []

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
