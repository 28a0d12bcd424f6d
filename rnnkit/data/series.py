"""Time series: UEA/UCR ``.ts`` files and one-series-per-row CSV/TSV (the UCR archive layout).

Series come back as ``SeriesExample(values (T, D) float32, label, where)``. Missing values
(``?``, ``NaN``) are an error naming ``path:line`` unless the caller picks a policy:

* ``"error"`` (default) -- raise;
* ``"keep"`` -- leave NaN in the array (the model must handle it);
* ``"zero"`` -- replace with 0.0;
* ``"ffill"`` -- carry the last observed value forward (a leading gap takes the first observed
  value); a dimension with no observed value at all is still an error.

Whatever the policy, the count of replaced values is reported in one warning per file.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._io import PathLike, iter_lines, show, short_list
from .examples import SeriesExample

__all__ = ["read_ts", "read_series_csv", "TSData", "SeriesScaler", "MISSING_POLICIES"]

MISSING_POLICIES = ("error", "keep", "zero", "ffill")
_MISSING = {"?", "nan", "NaN", "NAN", ""}


@dataclass
class TSData:
    """A parsed ``.ts`` file: the examples plus what the header declared."""

    examples: list[SeriesExample]
    problem_name: str | None = None
    class_labels: list[str] | None = None  # @classLabel order; use Vocab.for_labels(..., sort=False)
    dimensions: int = 1
    equal_length: bool | None = None
    series_length: int | None = None
    header: dict = field(default_factory=dict)  # every @key as written (lower-cased key)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _to_float32(value: float) -> float:
    """``value`` as float32 would hold it (inf past the range), without numpy's overflow warning.
    The cast is the test, not ``|value| > max``: values just past max still round down to max."""
    with np.errstate(over="ignore"):
        return float(np.float32(value))


def _target(raw: str, where: str, what: str, note: str = "") -> float:
    """A regression target: a finite number (it stays a Python float, so float64's range)."""
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{where}: {what} {raw!r} is not a number{note}") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: {what} {raw!r} is not a finite number{note}")
    return value


def _check_policy(missing: str) -> None:
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {', '.join(MISSING_POLICIES)}; got {missing!r}")


def _parse_values(fields: list[str], where: str, what: str, missing: str) -> tuple[np.ndarray, int]:
    """Floats of ``fields`` with the missing-value policy applied; returns (values, n_missing)."""
    values = np.empty(len(fields), dtype=np.float64)
    gaps = []
    for t, text in enumerate(fields):
        text = text.strip()
        if text in _MISSING:
            values[t] = math.nan
            gaps.append(t)
            continue
        try:
            values[t] = float(text)
        except ValueError:
            raise ValueError(f"{where}: {what}, position {t + 1}: cannot read {text!r} as a number") from None
        if math.isnan(values[t]):
            gaps.append(t)
        elif math.isinf(values[t]):
            raise ValueError(f"{where}: {what}, position {t + 1}: value {text!r} is infinite")
        elif math.isinf(_to_float32(values[t])):  # series are stored as float32; 1e39 would become inf
            raise ValueError(f"{where}: {what}, position {t + 1}: value {text!r} is beyond float32's "
                             f"range (|x| <= {_FLOAT32_MAX:.7g}); series are stored as float32, "
                             f"so rescale the data")
    if gaps and missing == "error":
        raise ValueError(f"{where}: {what}, position {gaps[0] + 1}: missing value "
                         f"{fields[gaps[0]].strip()!r} ({len(gaps)} in this line); pass "
                         f"missing='keep', 'zero' or 'ffill' to accept missing values")
    if gaps and missing == "zero":
        values[gaps] = 0.0
    elif gaps and missing == "ffill":
        observed = np.flatnonzero(~np.isnan(values))
        if observed.size == 0:
            raise ValueError(f"{where}: {what} has no observed value to fill missing values from")
        # index of the last observed value at or before each position (the first observed before it)
        last = np.maximum.accumulate(np.where(np.isnan(values), -1, np.arange(len(values))))
        values = values[np.where(last < 0, observed[0], last)]
    return values, len(gaps)


def _report(path, filled: int, missing: str) -> None:
    if filled:
        what = {"keep": "kept as NaN", "zero": "replaced by 0.0", "ffill": "filled forward"}[missing]
        warnings.warn(f"{path}: {filled} missing value(s) {what} (missing={missing!r})", stacklevel=3)


def _bool(value: str, where: str, key: str) -> bool:
    v = value.strip().lower()
    if v not in ("true", "false"):
        raise ValueError(f"{where}: @{key} must be true or false; got {value!r}")
    return v == "true"


def _int(value: str, where: str, key: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{where}: @{key} must be a positive integer; got {value!r}") from None
    if n < 1:
        raise ValueError(f"{where}: @{key} must be a positive integer; got {value!r}")
    return n


def read_ts(path: PathLike, *, missing: str = "error", encoding: str = "utf-8") -> TSData:
    """Read a UEA/UCR ``.ts`` file (sktime format).

    Header lines ``@problemName``, ``@timeStamps``, ``@missing``, ``@univariate``,
    ``@dimensions``, ``@equalLength``, ``@seriesLength``, ``@classLabel``/``@targetLabel``,
    then ``@data``; ``#`` lines are comments. Each data line is one case: dimensions separated by
    ``:``, values by ``,``, the class label (or regression target) last. All dimensions of a case
    must have the same length; cases may differ in length unless ``@equalLength true``.
    ``@timeStamps true`` files are not supported (an error says so).

    Returns a ``TSData``: ``examples`` with ``values`` (T, D) float32 and the label as written
    (a string for ``@classLabel``, a float for ``@targetLabel``), plus the header's declarations.
    """
    _check_policy(missing)
    header: dict[str, str] = {}
    data = TSData(examples=[])
    labelled = target = False
    in_data = False
    filled = 0
    for line_no, line in iter_lines(path, encoding):
        where = f"{path}:{line_no}"
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if not in_data:
            if not text.startswith("@"):
                raise ValueError(f"{where}: expected a header line (@key value) or @data before the "
                                 f"data: {show(line)}")
            key, _, value = text[1:].partition(" ")
            key, value = key.lower(), value.strip()
            header[key] = value
            if key == "data":
                in_data = True
            elif key == "problemname":
                data.problem_name = value
            elif key == "timestamps" and _bool(value, where, key):
                raise ValueError(f"{where}: @timeStamps true (time-stamped values) is not supported; "
                                 f"convert to plain comma-separated values")
            elif key == "univariate" and _bool(value, where, key):
                data.dimensions = 1
            elif key == "dimensions":
                data.dimensions = _int(value, where, key)
            elif key == "equallength":
                data.equal_length = _bool(value, where, key)
            elif key == "serieslength":
                data.series_length = _int(value, where, key)
            elif key == "classlabel":
                flag, *labels = value.split()
                labelled = _bool(flag, where, key)
                if labelled and not labels:
                    raise ValueError(f"{where}: @classLabel true must list the class labels")
                data.class_labels = labels if labelled else None
            elif key == "targetlabel":
                labelled = target = _bool(value, where, key)
            elif key == "missing":
                _bool(value, where, key)
            continue

        parts = text.split(":")
        D = data.dimensions
        expected = D + (1 if labelled else 0)
        if len(parts) != expected:
            label_note = " plus the label" if labelled else ""
            raise ValueError(f"{where}: expected {D} ':'-separated dimension(s){label_note} (@dimensions "
                             f"{D}), got {len(parts)} field(s): {show(line)}")
        label = None
        if labelled:
            raw = parts[-1].strip()
            if target:
                label = _target(raw, where, "target value")
            else:
                if raw not in data.class_labels:
                    raise ValueError(f"{where}: class label {raw!r} is not declared in @classLabel "
                                     f"({short_list(data.class_labels)})")
                label = raw
        columns = []
        for d, dim_text in enumerate(parts[:D]):
            values, n = _parse_values(dim_text.split(","), where, f"dimension {d + 1}", missing)
            filled += n
            if columns and len(values) != len(columns[0]):
                raise ValueError(f"{where}: dimension {d + 1} has {len(values)} values but dimension 1 "
                                 f"has {len(columns[0])}; all dimensions of a case need the same length")
            columns.append(values)
        T = len(columns[0])
        if data.equal_length and data.series_length is not None and T != data.series_length:
            raise ValueError(f"{where}: series has length {T} but the header says @equalLength true, "
                             f"@seriesLength {data.series_length}")
        values = np.stack(columns, axis=1).astype(np.float32)  # (T, D)
        data.examples.append(SeriesExample(values, label, where))
    if not in_data:
        raise ValueError(f"{path}: no @data line; is this a .ts file?")
    if not data.examples:
        raise ValueError(f"{path}: no cases after @data")
    data.header = header
    _report(path, filled, missing)
    return data


def read_series_csv(path: PathLike, *, label_column: int | None = 0, delimiter: str | None = None,
                    header: bool = False, missing: str = "error", label_type: str = "class",
                    encoding: str = "utf-8") -> list[SeriesExample]:
    """Read univariate series, one per row: the label in ``label_column`` (0-based, negative from
    the end, None for unlabelled), every other column a time step (the UCR 2018 ``.tsv`` and the
    older UCR ``.csv`` layout). ``delimiter`` None infers it: a tab if the first line has one,
    else a comma. ``label_type`` is ``"class"`` (string) or ``"float"``.

    UCR pads unequal-length series with trailing NaN; those are missing values like any other,
    so choose ``missing=`` knowingly (``"error"`` by default).
    Returns ``SeriesExample``s with ``values`` of shape (T, 1).
    """
    _check_policy(missing)
    if label_type not in ("class", "float"):
        raise ValueError(f"label_type must be one of class, float; got {label_type!r}")
    path = Path(path)
    examples = []
    filled = 0
    width = None
    lines = iter_lines(path, encoding)
    for line_no, line in lines:
        where = f"{path}:{line_no}"
        if not line.strip():
            raise ValueError(f"{where}: blank line (one series per line expected)")
        if delimiter is None:
            delimiter = "\t" if "\t" in line else ","
        if header and width is None:
            width = len(line.split(delimiter))
            continue
        fields = line.split(delimiter)
        width = width or len(fields)
        if len(fields) != width:
            raise ValueError(f"{where}: expected {width} {'tab' if delimiter == chr(9) else repr(delimiter)}"
                             f"-separated columns, got {len(fields)}: {show(line)}")
        label = None
        if label_column is not None:
            if not -width <= label_column < width:
                raise ValueError(f"{where}: label_column={label_column} is out of range for {width} columns")
            raw = fields.pop(label_column).strip()
            if not raw:
                raise ValueError(f"{where}: empty label in column {label_column}")
            if label_type == "float":
                label = _target(raw, where, "label", " (label_type='float')")
            else:
                label = raw
        if not fields:
            raise ValueError(f"{where}: no values besides the label")
        values, n = _parse_values(fields, where, "series", missing)
        filled += n
        examples.append(SeriesExample(values.astype(np.float32)[:, None], label, where))
    if not examples:
        raise ValueError(f"{path}: no series found")
    _report(path, filled, missing)
    return examples


class SeriesScaler:
    """Per-channel standardisation of series: ``(x - mean_) / std_``, fitted on training series.

    ``fit(examples)`` computes the mean and standard deviation of each of the D channels over
    every time step of every series (NaN values, if kept, are ignored); a constant channel gets
    ``std_ = 1`` so it maps to 0 instead of dividing by zero. ``transform(examples)`` returns new
    examples; the fitted state is JSON-safe (``to_dict`` / ``from_dict``) for checkpoints.
    """

    def fit(self, examples: list[SeriesExample]) -> SeriesScaler:
        if not examples:
            raise ValueError("fit needs at least one series")
        D = examples[0].values.shape[1]
        for ex in examples:
            if ex.values.ndim != 2 or ex.values.shape[1] != D:
                raise ValueError(f"{ex.where}: series has shape {ex.values.shape}; expected (T, D={D})")
        stacked = np.concatenate([ex.values for ex in examples]).astype(np.float64)  # (sum T, D)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN channel is checked below
            mean, std = np.nanmean(stacked, axis=0), np.nanstd(stacked, axis=0)
        if np.isnan(mean).any():
            raise ValueError(f"channel(s) {np.flatnonzero(np.isnan(mean)).tolist()} have no observed value")
        self.mean_ = mean.tolist()
        self.std_ = np.where(std > 0, std, 1.0).tolist()
        return self

    def transform(self, examples: list[SeriesExample]) -> list[SeriesExample]:
        if not hasattr(self, "mean_"):
            raise RuntimeError("this SeriesScaler is not fitted yet; call fit(train_examples) first")
        mean, std = np.asarray(self.mean_), np.asarray(self.std_)
        out = []
        for ex in examples:
            if ex.values.ndim != 2 or ex.values.shape[1] != len(mean):
                raise ValueError(f"{ex.where}: series has shape {ex.values.shape}; the scaler was "
                                 f"fitted on D = {len(mean)} channels")
            values = ((ex.values - mean) / std).astype(np.float32)
            out.append(SeriesExample(values, ex.label, ex.where))
        return out

    def to_dict(self) -> dict:
        if not hasattr(self, "mean_"):
            raise RuntimeError("this SeriesScaler is not fitted yet; call fit(train_examples) first")
        return {"mean": list(self.mean_), "std": list(self.std_)}

    @classmethod
    def from_dict(cls, d: dict) -> SeriesScaler:
        scaler = cls()
        scaler.mean_, scaler.std_ = list(d["mean"]), list(d["std"])
        if len(scaler.mean_) != len(scaler.std_) or min(scaler.std_, default=1.0) <= 0:
            raise ValueError("scaler dict is inconsistent: mean and std must have the same length, std > 0")
        return scaler
