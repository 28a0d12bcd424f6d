"""Forecasting from a config: data.format series, chronological windows, MASE against the
seasonal-naive forecast, and train -> evaluate -> predict -> export through the CLI."""

import json
import math

import numpy as np
import pytest
import torch

from rnnkit import cli
from rnnkit.config import ConfigError, load_config, parse_config
from rnnkit.data import chronological_split, read_series_table, series_windows
from rnnkit.run import evaluate, predict, train
from rnnkit.training.metrics import ForecastMetrics, mase_scale, seasonal_naive

TRAINER = {"epochs": 3, "batch_size": 8, "progress": False, "plots": False, "num_threads": 1,
           "optimizer": {"name": "adam", "lr": 0.01}}


def write_series(path, n=80, *, gap_at=None):
    """A noiseless period-6 wave plus a slow ramp; column x2 is the wave shifted."""
    rows = ["t,x,x2"]
    for i in range(n):
        x = "" if i == gap_at else f"{10 + 3 * math.sin(2 * math.pi * i / 6) + 0.05 * i:.4f}"
        rows.append(f"{2000 + i},{x},{math.cos(2 * math.pi * i / 6):.4f}")
    path.write_text("\n".join(rows) + "\n")
    return path


def data(path, **more):
    return {"format": "series", "train": str(path), "time_column": "t", "columns": ["x", "x2"],
            "target_columns": ["x"], "window": 12, "horizon": 3, "season": 6, **more}


# ----------------------------------------------------------------------------- config

def test_config_errors_name_file_and_line(tmp_path):
    cfg = tmp_path / "f.yaml"
    cfg.write_text("data:\n  format: series\n  train: s.csv\n  window: 4\n  horizon: 2\n  season: 7\n"
                   "model:\n  type: Forecaster\n")
    with pytest.raises(ConfigError, match=r"f\.yaml:6: data\.season: must be at most window \(4\)"):
        load_config(cfg)
    cfg.write_text("data:\n  format: series\n  train: s.csv\n  horizon: 2\n  windw: 3\nmodel:\n  type: Forecaster\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert "f.yaml:5: data.windw: unknown field" in str(e.value) and "allowed:" in str(e.value)
    assert "data.window: required field is missing" in str(e.value)
    cfg.write_text("data:\n  format: series\n  train: s.csv\n  window: 4\n  horizon: 2\n  columns: [a]\n"
                   "  target_columns: [b]\nmodel:\n  type: Forecaster\n")
    with pytest.raises(ConfigError, match=r"f\.yaml:7: data\.target_columns: every target must be an input column"):
        load_config(cfg)
    cfg.write_text("data:\n  format: series\n  train: s.csv\n  window: 4\n  horizon: 2\n"
                   "model:\n  type: Forecaster\n  options: {horizon: 3}\n")
    with pytest.raises(ConfigError, match="options.horizon is set by rnnkit from the data"):
        load_config(cfg)


def test_a_forecaster_learns_from_series_only(tmp_path):
    with pytest.raises(ConfigError, match="model.type Forecaster cannot learn from data.format 'csv'"):
        parse_config({"data": {"format": "csv", "train": "x.csv"}, "model": {"type": "Forecaster"}})
    with pytest.raises(ConfigError, match="test_fraction must leave a training part"):
        parse_config({"data": data("s.csv", dev_fraction=0.5, test_fraction=0.5), "model": {"type": "Forecaster"}})


# ------------------------------------------------------------------------------- data

def test_missing_value_is_an_error_naming_file_line_unless_a_policy_fills_it(tmp_path):
    path = write_series(tmp_path / "s.csv", n=10, gap_at=4)
    with pytest.raises(ValueError, match=r"s\.csv:6: column 'x': missing value ''"):
        read_series_table(path, time_column="t")
    with pytest.warns(UserWarning, match=r"1 missing value\(s\) filled .* first at .*s\.csv:6"):
        table = read_series_table(path, time_column="t", missing="interpolate")
    x = table.values[:, 0]
    assert x[4] == pytest.approx((x[3] + x[5]) / 2)
    with pytest.warns(UserWarning):
        assert read_series_table(path, time_column="t", missing="ffill").values[4, 0] == x[3]
    (tmp_path / "bad.csv").write_text("t,x\n1,2\n2,abc\n")
    with pytest.raises(ValueError, match=r"bad\.csv:3: column 'x': cannot read 'abc' as a number"):
        read_series_table(tmp_path / "bad.csv", time_column="t")


def test_windows_never_forecast_across_a_split():
    from rnnkit.data import SeriesTable

    n = 50
    table = SeriesTable(np.arange(n, dtype=np.float32)[:, None], ["i"], None, list(range(2, n + 2)), "s.csv")
    parts = chronological_split(n, dev_fraction=0.2, test_fraction=0.2)
    assert (parts["train"], parts["dev"], parts["test"]) == (range(0, 30), range(30, 40), range(40, 50))
    for name, rows in parts.items():
        windows = series_windows(table, window=8, horizon=3, targets=[0], rows=rows, name=name)
        targets = {int(v) for w in windows for v in w.targets[:, 0]}
        assert targets <= set(rows), name
        assert max(targets) == rows.stop - 1  # the last row of the part is forecast
        for w in windows:  # inputs are the 8 rows right before the forecast
            assert w.inputs[:, 0].tolist() == list(range(w.origin - 8, w.origin))
        if name == "train":
            assert max(int(w.inputs.max()) for w in windows) < 30
    with pytest.raises(ValueError, match=r"the dev part .* too short for one window"):
        series_windows(table, window=8, horizon=11, targets=[0], rows=parts["dev"], name="dev")


# ----------------------------------------------------------------------------- metrics

def test_seasonal_naive_and_mase_by_hand():
    history = torch.tensor([[1.], [2.], [3.], [4.], [5.]])  # T = 5
    assert seasonal_naive(history, 5, season=2)[:, 0].tolist() == [4, 5, 4, 5, 4]
    assert seasonal_naive(history, 2, season=1)[:, 0].tolist() == [5, 5]
    train = [[1.], [3.], [2.], [6.]]  # |y_t - y_{t-2}|: |2-1|, |6-3| -> scale 2
    assert mase_scale(train, season=2) == [2.0]
    with pytest.raises(ValueError, match="MASE is undefined"):
        mase_scale([[1.], [2.], [1.], [2.]], season=2)

    class Fixed:  # a "model" that always forecasts 10, 10
        def predict(self, batch):
            return torch.full((len(batch["lengths"]), 2, 1), 10.0)

    metrics = ForecastMetrics([2.0], season=2, targets=[0])
    batch = {"inputs": torch.tensor([[[1.], [2.], [3.]], [[4.], [8.], [6.]]]), "lengths": torch.tensor([3, 3]),
             "labels": torch.tensor([[[9.], [12.]], [[7.], [10.]]])}
    metrics.update(Fixed(), batch)
    out = metrics.compute()
    # model errors 1, 2, 3, 0; baseline (seasonal naive, m = 2) forecasts 2, 3 and 8, 6
    assert out["mae"] == pytest.approx(6 / 4) and out["mase"] == pytest.approx(6 / 4 / 2)
    assert out["rmse"] == pytest.approx(math.sqrt((1 + 4 + 9 + 0) / 4))
    base_errors = [7, 9, 1, 4]
    assert out["baseline_mae"] == pytest.approx(sum(base_errors) / 4)
    assert out["baseline_mase"] == pytest.approx(sum(base_errors) / 4 / 2)


# ----------------------------------------------------------------------------- round trip

def test_train_evaluate_predict_export_round_trip(tmp_path, capsys):
    path = write_series(tmp_path / "s.csv")
    cfg = parse_config({"data": data(path, dev_fraction=0.2, test_fraction=0.2),
                        "model": {"type": "Forecaster", "options": {"encoder": {"cell": "gru", "hidden_sizes": [8]}}},
                        "trainer": {**TRAINER, "out_dir": str(tmp_path / "run")}})
    summary = train(cfg)
    assert set(summary["test"]) == {"loss", "mae", "rmse", "mase", "baseline_mae", "baseline_rmse", "baseline_mase"}
    assert summary["monitor"] == "mae"
    best = tmp_path / "run" / "best"

    # every window of the file, forecast after its end too; gold is the file's own values
    rows = list(predict(best, [], source=str(path), windows="all"))
    table = read_series_table(path, time_column="t", columns=["x", "x2"])
    assert len(rows) == 80 - 12 + 1 and rows[-1]["origin"] == "2079" and "gold" not in rows[-1]
    assert rows[0]["where"] == f"{path}:13" and rows[0]["gold"]["x"] == pytest.approx(table.values[12:15, 0].tolist())
    from rnnkit import checkpoint

    model = checkpoint.load(best).model
    x = torch.as_tensor(table.values[:12])[None]
    assert rows[0]["forecast"]["x"] == pytest.approx(model.predict({"inputs": x, "lengths": torch.tensor([12])})
                                                     [0, :, 0].tolist(), abs=1e-5)
    # evaluate's MAE on the file is the mean |forecast - gold| over the same windows
    with_gold = [r for r in rows if "gold" in r]
    mae = np.mean([abs(f - g) for r in with_gold for f, g in zip(r["forecast"]["x"], r["gold"]["x"])])
    assert evaluate(best, path)["mae"] == pytest.approx(mae, rel=1e-5)
    (last,) = predict(best, [], source=str(path))
    assert last["where"] == rows[-1]["where"] == f"{path}:81"  # batch of one: same forecast, to rounding
    assert last["forecast"]["x"] == pytest.approx(rows[-1]["forecast"]["x"], abs=1e-5)

    # inspect gradients: the untrained twin scales inputs as the checkpoint does, so its loss is
    # the MSE of an untrained head on the same scaled targets (not one of raw values in the 10s)
    from rnnkit.run import inspect_gradients

    report = inspect_gradients(best, path, tmp_path / "insp", batch_size=4)
    assert 0 < report["trained"]["loss"] and 0 < report["untrained"]["loss"] < 10

    assert cli.main(["export", str(best), "--format", "pt2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["held_out"].startswith("14 test windows of")


def test_cli_refuses_text_and_sampling_options_for_a_forecaster(tmp_path, capsys):
    path = write_series(tmp_path / "s.csv", n=40)
    train(parse_config({"data": data(path, dev_fraction=0.3),
                        "model": {"type": "Forecaster", "options": {"encoder": {"cell": "gru", "hidden_sizes": [4]}}},
                        "trainer": {**TRAINER, "epochs": 1, "out_dir": str(tmp_path / "run")}}))
    best = str(tmp_path / "run" / "best")
    assert cli.main(["predict", best, str(path), "--strategy", "sample"]) == 2
    assert "strategy set how a Generator or LanguageModel samples" in capsys.readouterr().err
    (tmp_path / "other.csv").write_text("t,y,x2\n" + "".join(f"{i},{i},{i}\n" for i in range(20)))
    assert cli.main(["predict", best, str(tmp_path / "other.csv")]) == 2
    assert "no column 'x'" in capsys.readouterr().err
