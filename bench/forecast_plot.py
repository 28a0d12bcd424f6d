"""The picture of docs/models.md's forecasting example: a forecaster's test-part forecasts from
non-overlapping origins, beside the series and the seasonal-naive forecast from the same origins.

    python bench/forecast_plot.py runs/forecast_sunspots/best runs/data/sunspots.csv docs/img/forecast_sunspots.png

Reads the checkpoint's run config for the columns, window, horizon, season and the test part
(``data.test_fraction``); the forecasts are those of ``rnnkit predict --windows all``.
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rnnkit.data import chronological_split, read_series_table  # noqa: E402
from rnnkit.run import predict  # noqa: E402
from rnnkit.run.heads import _restore  # noqa: E402


def main(checkpoint: str, series: str, out: str) -> None:
    _, cfg, vocabs = _restore(checkpoint)
    d = cfg.data
    table = read_series_table(series, columns=d.columns, time_column=d.time_column, delimiter=d.delimiter,
                              missing=d.missing)
    parts = chronological_split(len(table), dev_fraction=d.dev_fraction, test_fraction=d.test_fraction)
    test = parts["test"]
    target = vocabs["series"]["targets"][0]
    name = table.columns[target]
    times = [float(t) for t in table.times]
    records = {r["where"]: r for r in predict(checkpoint, [], source=series, windows="all")}
    fig, ax = plt.subplots(figsize=(8, 3.2))
    start = test.start - d.window
    ax.plot(times[start:], table.values[start:, target], color="black", lw=1.2, label=f"{name} (series)")
    ax.axvline(times[test.start] - 0.5, color="grey", ls=":", lw=1)
    for k, origin in enumerate(range(test.start, test.stop - d.horizon + 1, d.horizon)):
        record = records[table.where(origin - 1)]
        steps = times[origin:origin + d.horizon]
        m = d.season
        naive = [table.values[origin - m + j % m, target] for j in range(d.horizon)]
        ax.plot(steps, record["forecast"][name], color="tab:blue", lw=2, label="forecaster" if k == 0 else None)
        ax.plot(steps, naive, color="tab:orange", lw=1.5, ls="--", label=f"seasonal naive (m={m})" if k == 0 else None)
    ax.set_title(f"{cfg.name}: {d.horizon}-step forecasts from {d.window} steps, test part (right of the dotted line)",
                 fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
