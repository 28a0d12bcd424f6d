"""One long series in a table, for forecasting: a CSV/TSV with a header, one row per time step.

    table = read_series_table("sunspots.csv", time_column="YEAR", missing="error")
    table.values (N, D) float32, table.columns, table.times, table.where(i) -> "sunspots.csv:12"
    parts = chronological_split(len(table), dev_fraction=0.15, test_fraction=0.15)
    train = series_windows(table, window=33, horizon=11, targets=[0], rows=parts["train"])

Rows are kept in file order: time is never shuffled. A part of the series (``rows``: the range
of row indices it holds) yields the windows whose *forecast* steps all lie inside it; the
``window`` input steps before them may reach back into the part before (dev and test windows
read the end of the training part as context, as a forecaster in use would). So no window
forecasts a value of another part, and train windows never see dev or test values at all.

Missing values (an empty field, ``NA``, ``NaN``, ``?``) are an error naming ``path:line`` and
the column, unless a policy is chosen:

* ``"zero"`` -- replace with 0.0;
* ``"ffill"`` -- carry the last observed value forward (a leading gap takes the first observed);
* ``"interpolate"`` -- linear in the row index between the observed neighbours (a leading or
  trailing gap takes the nearest observed value).

The count of filled values is reported in one warning per file.
"""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass

import numpy as np

from ._io import PathLike, iter_lines, show, short_list

__all__ = ["SeriesTable", "SeriesWindow", "read_series_table", "chronological_split", "series_windows",
           "TABLE_MISSING"]

TABLE_MISSING = ("error", "zero", "ffill", "interpolate")
_MISSING = {"", "?", "na", "nan", "n/a", "null", "none"}


@dataclass
class SeriesTable:
    """The numeric columns of one file, (N, D) float32, with each row's file line and time."""

    values: np.ndarray
    columns: list[str]
    times: list[str] | None
    lines: list[int]
    path: str

    def __len__(self) -> int:
        return len(self.values)

    def where(self, row: int) -> str:
        return f"{self.path}:{self.lines[row]}"


@dataclass
class SeriesWindow:
    """``inputs`` (window, D) before row ``origin``; ``targets`` (horizon, D_out) from ``origin``
    on (None past the end of the table); ``where`` names the row of the last input step."""

    inputs: np.ndarray
    targets: np.ndarray | None
    origin: int
    where: str


def _fill(values: np.ndarray, missing: str, path, columns: list[str]) -> int:
    """Apply the policy to NaN entries of (N, D) ``values`` in place; returns how many."""
    gaps = np.isnan(values)
    n = int(gaps.sum())
    if not n or missing == "error":
        return n
    for d in range(values.shape[1]):
        column = values[:, d]
        seen = np.flatnonzero(~gaps[:, d])
        if seen.size == 0:
            raise ValueError(f"{path}: column {columns[d]!r} has no observed value to fill missing values from")
        if missing == "zero":
            column[gaps[:, d]] = 0.0
        elif missing == "ffill":
            last = np.maximum.accumulate(np.where(gaps[:, d], -1, np.arange(len(column))))
            column[:] = column[np.where(last < 0, seen[0], last)]
        else:  # interpolate: np.interp holds the end values flat outside the observed range
            column[gaps[:, d]] = np.interp(np.flatnonzero(gaps[:, d]), seen, column[seen])
    return n


def read_series_table(path: PathLike, *, columns: list[str] | None = None, time_column: str | None = None,
                      delimiter: str = ",", missing: str = "error", encoding: str = "utf-8") -> SeriesTable:
    """Read a delimited file with a header row: ``columns`` (default: every column but
    ``time_column``) become the (N, D) float32 values; ``time_column``'s text is kept as
    ``times``. A value that is not a number, an infinite value, a row with another number of
    fields than the header, or (with ``missing="error"``) a missing value is an error naming
    ``path:line`` and the column."""
    if missing not in TABLE_MISSING:
        raise ValueError(f"missing must be one of {', '.join(TABLE_MISSING)}; got {missing!r}")
    header: list[str] | None = None
    rows: list[list[float]] = []
    times: list[str] = []
    lines: list[int] = []
    first_gap = None
    for line_no, line in iter_lines(path, encoding):
        where = f"{path}:{line_no}"
        if not line.strip():
            continue
        fields = next(csv.reader([line], delimiter=delimiter))
        if header is None:
            header = [f.strip().lstrip("\ufeff") for f in fields]
            if len(set(header)) != len(header):
                raise ValueError(f"{where}: the header names a column twice: {show(line)}")
            wanted = [c for c in header if c != time_column] if columns is None else list(columns)
            for name in wanted + ([time_column] if time_column is not None else []):
                if name not in header:
                    raise ValueError(f"{where}: no column {name!r} in the header; it has {short_list(header)}")
            if not wanted:
                raise ValueError(f"{where}: no value columns: the header has only the time column {time_column!r}")
            index = [header.index(c) for c in wanted]
            t_index = header.index(time_column) if time_column is not None else None
            continue
        if len(fields) != len(header):
            raise ValueError(f"{where}: expected {len(header)} fields (as the header), got {len(fields)}: {show(line)}")
        row = []
        for name, i in zip(wanted, index):
            text = fields[i].strip()
            if text.lower() in _MISSING:
                if missing == "error":
                    raise ValueError(f"{where}: column {name!r}: missing value {text!r}; choose a policy "
                                     f"for missing values: missing = {', '.join(TABLE_MISSING[1:])}")
                first_gap = first_gap or where
                row.append(math.nan)
                continue
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{where}: column {name!r}: cannot read {text!r} as a number") from None
            if not math.isfinite(value) or not math.isfinite(float(np.float32(value))):
                raise ValueError(f"{where}: column {name!r}: {text!r} is not a finite float32 number")
            row.append(value)
        rows.append(row)
        lines.append(line_no)
        if t_index is not None:
            times.append(fields[t_index].strip())
    if header is None or not rows:
        raise ValueError(f"{path}: no data rows after the header")
    values = np.asarray(rows, dtype=np.float64)
    filled = _fill(values, missing, path, wanted)
    if filled:
        warnings.warn(f"{path}: {filled} missing value(s) filled (missing={missing!r}), the first at {first_gap}",
                      stacklevel=2)
    return SeriesTable(values.astype(np.float32), wanted, times if time_column is not None else None, lines, str(path))


def chronological_split(n: int, *, dev_fraction: float | None = None,
                        test_fraction: float | None = None) -> dict[str, range]:
    """Row ranges of the parts of a series of ``n`` rows, in time order: train first, then dev
    (the next ``dev_fraction``), then test (the last ``test_fraction``). A part given as a
    fraction gets at least one row."""
    sizes = {}
    for name, fraction in (("test", test_fraction), ("dev", dev_fraction)):
        if fraction is not None:
            if not 0 < fraction < 1:
                raise ValueError(f"{name}_fraction must be in (0, 1); got {fraction!r}")
            sizes[name] = max(1, round(n * fraction))
    n_train = n - sum(sizes.values())
    if n_train < 1:
        raise ValueError(f"dev_fraction and test_fraction leave no training rows of {n}")
    dev_end = n_train + sizes.get("dev", 0)
    parts = {"train": range(0, n_train)}
    if "dev" in sizes:
        parts["dev"] = range(n_train, dev_end)
    if "test" in sizes:
        parts["test"] = range(dev_end, n)
    return parts


def series_windows(table: SeriesTable, *, window: int, horizon: int, targets: list[int], stride: int = 1,
                   rows: range | None = None, name: str = "series") -> list[SeriesWindow]:
    """Windows whose ``horizon`` forecast steps all lie in ``rows`` (default: the whole table)
    and whose ``window`` input steps precede them (reaching before ``rows`` if need be), one
    every ``stride`` origins from the first possible one. ``name`` is the part, for errors."""
    rows = range(len(table)) if rows is None else rows
    first = max(rows.start, window)
    if first + horizon > rows.stop:
        raise ValueError(f"{table.path}: the {name} part (rows {rows.start + 1}-{rows.stop} of {len(table)}, "
                         f"lines {table.lines[rows.start]}-{table.lines[rows.stop - 1]}) is too short for one window: "
                         f"it needs window + horizon = {window} + {horizon} rows counting the context before it")
    out = []
    for t in range(first, rows.stop - horizon + 1, stride):
        out.append(SeriesWindow(table.values[t - window:t], table.values[t:t + horizon][:, targets],
                                t, table.where(t - 1)))
    return out
