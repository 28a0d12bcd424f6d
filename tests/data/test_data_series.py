"""UEA/UCR .ts files and one-series-per-row CSV."""

import re

import numpy as np
import pytest

from rnnkit.data import read_series_csv, read_ts


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


HEADER = """#comment line
@problemName Toy
@timeStamps false
@missing {missing}
@univariate false
@dimensions 2
@equalLength false
@classLabel true up down
@data
"""


def ts(tmp_path, data, missing="false", name="toy.ts"):
    return write(tmp_path, name, HEADER.format(missing=missing) + data)


def test_multivariate_unequal_lengths(tmp_path):
    path = ts(tmp_path, "1,2,3:4,5,6:up\n7,8:9,10:down\n")
    data = ts_data = read_ts(path)
    assert ts_data.problem_name == "Toy" and data.dimensions == 2 and data.class_labels == ["up", "down"]
    first, second = data.examples
    np.testing.assert_array_equal(first.values, [[1, 4], [2, 5], [3, 6]])  # (T, D)
    assert first.values.dtype == np.float32 and second.values.shape == (2, 2)
    assert (first.label, second.label, second.where) == ("up", "down", f"{path}:11")
    assert data.header["equallength"] == "false"


def test_univariate_regression_target(tmp_path):
    path = write(tmp_path, "r.ts", "@problemName R\n@univariate true\n@targetLabel true\n@data\n"
                                    "0.5,1.5:3.25\n2,3,4:-1\n")
    data = read_ts(path)
    assert [ex.label for ex in data.examples] == [3.25, -1.0] and data.examples[1].values.shape == (3, 1)


@pytest.mark.parametrize("token", ["?", "NaN"])
def test_missing_value_is_an_error_naming_line_dimension_and_position(tmp_path, token):
    path = ts(tmp_path, f"1,2:3,4:up\n1,{token},3:4,5,6:down\n", missing="true")
    with pytest.raises(ValueError, match=re.escape(f"{path}:11: dimension 1, position 2: missing value "
                                                   f"'{token}'") + r".*missing='keep', 'zero' or 'ffill'"):
        read_ts(path)


def test_missing_value_policies_are_reported(tmp_path):
    path = ts(tmp_path, "?,2,?,4:1,1,1,1:up\n", missing="true")
    for policy, expected in [("zero", [0, 2, 0, 4]), ("ffill", [2, 2, 2, 4])]:
        with pytest.warns(UserWarning, match=rf"2 missing value\(s\) .*missing='{policy}'"):
            values = read_ts(path, missing=policy).examples[0].values
        np.testing.assert_array_equal(values[:, 0], expected)
    with pytest.warns(UserWarning, match="kept as NaN"):
        assert np.isnan(read_ts(path, missing="keep").examples[0].values[[0, 2], 0]).all()
    all_missing = ts(tmp_path, "?,?:1,2:up\n", name="m.ts")
    with pytest.raises(ValueError, match=r"m.ts:10: dimension 1 has no observed value"):
        read_ts(all_missing, missing="ffill")
    with pytest.raises(ValueError, match=r"missing must be one of error, keep, zero, ffill; got 'drop'"):
        read_ts(path, missing="drop")


@pytest.mark.parametrize("data, message", [
    ("1,2:3,4\n", r"toy.ts:10: expected 2 ':'-separated dimension\(s\) plus the label .*got 2 field"),
    ("1,2:3:up\n", r"toy.ts:10: dimension 2 has 1 values but dimension 1 has 2"),
    ("1,2:3,4:sideways\n", r"toy.ts:10: class label 'sideways' is not declared in @classLabel \(up, down\)"),
    ("1,x:3,4:up\n", r"toy.ts:10: dimension 1, position 2: cannot read 'x' as a number"),
    ("1,inf:3,4:up\n", r"toy.ts:10: dimension 1, position 2: value 'inf' is infinite"),
])
def test_malformed_cases(tmp_path, data, message):
    with pytest.raises(ValueError, match=message):
        read_ts(ts(tmp_path, data))


def test_header_problems(tmp_path):
    path = write(tmp_path, "a.ts", "@problemName A\n@equalLength true\n@seriesLength 3\n@classLabel false\n"
                                   "@data\n1,2,3\n1,2\n")
    with pytest.raises(ValueError, match=r"a.ts:7: series has length 2 but the header says @equalLength true"):
        read_ts(path)
    path = write(tmp_path, "b.ts", "@timeStamps true\n@data\n(0,1)\n")
    with pytest.raises(ValueError, match=r"b.ts:1: @timeStamps true .* is not supported"):
        read_ts(path)
    path = write(tmp_path, "c.ts", "1,2,3\n")
    with pytest.raises(ValueError, match=r"c.ts:1: expected a header line"):
        read_ts(path)
    path = write(tmp_path, "d.ts", "@dimensions two\n@data\n")
    with pytest.raises(ValueError, match=r"d.ts:1: @dimensions must be a positive integer; got 'two'"):
        read_ts(path)
    with pytest.raises(ValueError, match=r"e.ts: no cases after @data"):
        read_ts(write(tmp_path, "e.ts", "@problemName E\n@data\n"))
    with pytest.raises(ValueError, match=r"f.ts: file is empty"):
        read_ts(write(tmp_path, "f.ts", b""))


def test_unlabelled_ts(tmp_path):
    path = write(tmp_path, "u.ts", "@univariate true\n@classLabel false\n@data\n1,2\n")
    assert read_ts(path).examples[0].label is None


# ------------------------------------------------------------------------------ CSV

def test_series_csv_label_first_and_tsv(tmp_path):
    path = write(tmp_path, "Coffee_TRAIN.tsv", "1\t0.1\t0.2\t0.3\n2\t1\t2\t3\n")
    examples = read_series_csv(path)
    assert [ex.label for ex in examples] == ["1", "2"] and examples[0].values.shape == (3, 1)
    np.testing.assert_allclose(examples[1].values[:, 0], [1, 2, 3])
    path = write(tmp_path, "r.csv", "a,b,y\n1,2,0.5\n3,4,1.5\n")
    examples = read_series_csv(path, header=True, label_column=-1, label_type="float")
    assert [ex.label for ex in examples] == [0.5, 1.5] and examples[1].where == f"{path}:3"


def test_series_csv_nan_and_column_errors(tmp_path):
    path = write(tmp_path, "s.csv", "a,1,2,3\nb,4,NaN,6\n")
    with pytest.raises(ValueError, match=r"s.csv:2: series, position 2: missing value 'NaN'"):
        read_series_csv(path)
    with pytest.warns(UserWarning, match="1 missing value"):
        np.testing.assert_array_equal(read_series_csv(path, missing="ffill")[1].values[:, 0], [4, 4, 6])
    path = write(tmp_path, "t.csv", "a,1,2\nb,1\n")
    with pytest.raises(ValueError, match=r"t.csv:2: expected 3 ','-separated columns, got 2"):
        read_series_csv(path)
    path = write(tmp_path, "u.csv", b"a,1,\xff\n")
    with pytest.raises(ValueError, match=r"u.csv:1: cannot decode byte 0xff at byte offset 4"):
        read_series_csv(path)


# ------------------------------------------------------------------------------ scaling

def test_scaler_standardises_each_channel_and_round_trips_json():
    import json

    from rnnkit.data import SeriesExample, SeriesScaler
    train = [SeriesExample(np.array([[1.0, 5.0], [3.0, 5.0]]), "a"), SeriesExample(np.array([[2.0, 5.0]]), "b")]
    scaler = SeriesScaler().fit(train)
    assert scaler.mean_ == [2.0, 5.0] and scaler.std_[1] == 1.0  # constant channel: std 1, not 0
    out = scaler.transform(train)
    np.testing.assert_allclose(out[0].values[:, 0], [-1 / np.sqrt(2 / 3), 1 / np.sqrt(2 / 3)], rtol=1e-6)
    np.testing.assert_array_equal(out[0].values[:, 1], [0, 0])
    assert out[1].label == "b" and out[0].values.dtype == np.float32
    again = SeriesScaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    np.testing.assert_array_equal(again.transform(train)[0].values, out[0].values)
    with pytest.raises(ValueError, match=r"x:1: series has shape \(2, 3\); the scaler was fitted on D = 2"):
        scaler.transform([SeriesExample(np.zeros((2, 3)), None, "x:1")])
    with pytest.raises(RuntimeError, match="not fitted yet"):
        SeriesScaler().transform(train)
