"""Issue #18 (reliability): a folder given as the data file, values past float32 in series, a
tokenizer pattern that backtracks catastrophically, and the bytes `rnnkit predict` reads (BOM,
invalid UTF-8). Every error names the path (and line) and no traceback reaches the user."""

import io
import json
import re
import subprocess
import sys
import textwrap

import pytest

from rnnkit.cli import main
from rnnkit.data import (Tokenizer, Vocab, load_embeddings, read_conll, read_conllu, read_delimited,
                         read_jsonl, read_label_text, read_lines, read_lm_text, read_parallel,
                         read_series_csv, read_ts)


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


# ------------------------------------------------------------------------------ a folder as the file

READERS = {
    "csv": (read_delimited, "train.csv"),
    "tsv": (read_delimited, "train.tsv"),
    "jsonl": (read_jsonl, "train.jsonl"),
    "label_text": (read_label_text, "train.txt"),
    "lines": (read_lines, "rt-polarity.pos"),
    "conll": (read_conll, "train.conll"),
    "conllu": (read_conllu, "en_ewt-ud-train.conllu"),
    "parallel": (read_parallel, "fra.txt"),
    "lm_text": (read_lm_text, "ptb.train.txt"),
    "ts": (read_ts, "Toy_TRAIN.ts"),
    "series_csv": (read_series_csv, "Toy_TRAIN.tsv"),
    "embeddings": (lambda path: load_embeddings(path, Vocab().fit([["a"]])), "glove.txt"),
}


@pytest.mark.parametrize("reader", READERS)
def test_a_folder_given_as_the_data_file_is_one_clear_error(tmp_path, reader):
    read, name = READERS[reader]
    folder = tmp_path / name
    folder.mkdir()
    with pytest.raises(ValueError, match=f"^{re.escape(str(folder))}: is a folder; give a file$"):
        read(folder)


def test_a_missing_file_is_still_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl: no such file"):
        read_jsonl(tmp_path / "nope.jsonl")


# ------------------------------------------------------------------------------ series past float32

TS = "@problemName Toy\n@univariate true\n@classLabel true up down\n@data\n"


@pytest.mark.parametrize("value", ["1e39", "-1e39", "3.5e38"])
def test_ts_value_beyond_float32_names_line_and_position(tmp_path, value):
    path = write(tmp_path, "toy.ts", TS + "1,2,3:up\n" + f"1,{value},3:down\n")
    with pytest.raises(ValueError, match=rf"toy.ts:6: dimension 1, position 2: value '{value}' is "
                                         r"beyond float32's range"):
        read_ts(path)


def test_series_csv_value_beyond_float32_names_line_and_position(tmp_path):
    path = write(tmp_path, "toy.tsv", "up\t1\t2\ndown\t1\t2e40\n")
    with pytest.raises(ValueError, match=r"toy.tsv:2: series, position 2: value '2e40' is beyond float32"):
        read_series_csv(path)


def test_largest_float32_values_are_kept(tmp_path):
    path = write(tmp_path, "toy.ts", TS + "3.4e38,-3.4e38,0:up\n")
    values = read_ts(path).examples[0].values
    assert values.dtype.name == "float32" and values[0, 0] == pytest.approx(3.4e38, rel=1e-6)
    assert values[1, 0] == pytest.approx(-3.4e38, rel=1e-6)


@pytest.mark.parametrize("target", ["inf", "nan", "1e400"])
def test_regression_target_must_be_finite(tmp_path, target):
    path = write(tmp_path, "reg.ts", f"@problemName R\n@univariate true\n@targetLabel true\n@data\n1,2:{target}\n")
    with pytest.raises(ValueError, match=rf"reg.ts:5: target value '{target}' is not a finite number"):
        read_ts(path)
    path = write(tmp_path, "reg.tsv", f"{target}\t1\t2\n")
    with pytest.raises(ValueError, match=rf"reg.tsv:1: label '{target}' is not a finite number"):
        read_series_csv(path, label_type="float")


# ------------------------------------------------------------------------------ regex tokenizer

def run_python(code: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """In a subprocess, so that a pattern that does hang fails this test instead of hanging the run."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)


def test_catastrophic_pattern_fails_with_a_message_instead_of_hanging():
    out = run_python("""
        from rnnkit.data import Tokenizer
        tok = Tokenizer.from_dict({"level": "regex", "pattern": "(a|a)+$"})  # as a checkpoint stores it
        try:
            tok("a" * 30 + "!")
        except ValueError as e:
            print(e)
    """)
    assert out.returncode == 0, out.stderr
    assert "tokenizer pattern '(a|a)+$' took longer than 1 s on 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!': " \
           "the pattern backtracks catastrophically" in out.stdout


def test_probe_pattern_from_issue_18_no_longer_hangs():
    out = run_python("""
        from rnnkit.data import Tokenizer
        tok = Tokenizer("regex", pattern="(a+)+$")
        print(tok("a" * 30 + "!"), tok("b aaa"))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] ['aaa']"


def test_regex_tokenizer_keeps_its_results():
    assert Tokenizer("regex")("Don't stop, 1984!") == ["Don", "'", "t", "stop", ",", "1984", "!"]
    assert Tokenizer("regex", pattern=r"\d+|[a-z]+")("ab12cd") == ["ab", "12", "cd"]
    with pytest.raises(ValueError, match=r"pattern is not a valid regular expression: .*; got '\(a'"):
        Tokenizer("regex", pattern="(a")


def test_a_tokenizer_error_inside_a_reader_names_file_and_line(tmp_path):
    def tokenize(text):
        if "bad" in text:
            raise ValueError("tokenizer pattern 'x' took longer than 1 s on 'bad'")
        return text.split()

    path = write(tmp_path, "s.txt", "good line\nbad line\n")
    for read in (read_lines, read_lm_text):
        with pytest.raises(ValueError, match=r"s.txt:2: tokenizer pattern 'x' took longer"):
            read(path, tokenizer=tokenize)


# ------------------------------------------------------------------------------ rnnkit predict's input

CONFIG = """\
name: predict-input
data: {{format: conll, train: {train}, dev: {train}, test: {train}}}
model:
  type: SequenceTagger
  options: {{embedding_dim: 8, encoder: {{cell: gru, hidden_sizes: [8], bidirectional: true}}}}
trainer:
  epochs: 2
  batch_size: 8
  optimizer: {{name: adam, lr: 0.05}}
  progress: false
  plots: false
  num_threads: 1
  out_dir: {out}
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict_input")
    sentences = ["Anna\tB-PER\nsaw\tO\nBob\tB-PER", "Bob\tB-PER\nran\tO\nhome\tO",
                 "the\tO\ncat\tO\nsaw\tO\nAnna\tB-PER"] * 8
    train = write(tmp, "train.txt", "\n\n".join(sentences) + "\n")
    config = write(tmp, "c.yaml", CONFIG.format(train=train, out=tmp / "run"))
    assert main(["train", str(config)]) == 0
    return str(tmp / "run" / "best")


def predict_file(checkpoint, path, capsys):
    code = main(["predict", checkpoint, str(path)])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines()], captured.err


def predict_stdin(checkpoint, data: bytes, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    code = main(["predict", checkpoint, "-"])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines()], captured.err


TEXT = "Anna saw Bob\r\nthe cat ran home\n"


def test_predict_drops_a_byte_order_mark_in_a_file(checkpoint, tmp_path, capsys):
    code, plain, _ = predict_file(checkpoint, write(tmp_path, "plain.txt", TEXT), capsys)
    assert code == 0
    code, bom, _ = predict_file(checkpoint, write(tmp_path, "bom.txt", b"\xef\xbb\xbf" + TEXT.encode()), capsys)
    assert code == 0
    assert bom == plain
    assert bom[0]["tokens"] == ["Anna", "saw", "Bob"]


def test_predict_drops_a_byte_order_mark_on_stdin(checkpoint, tmp_path, capsys, monkeypatch):
    code, plain, _ = predict_file(checkpoint, write(tmp_path, "plain.txt", TEXT), capsys)
    code, bom, _ = predict_stdin(checkpoint, b"\xef\xbb\xbf" + TEXT.encode(), capsys, monkeypatch)
    assert code == 0 and bom == plain


def test_predict_reports_invalid_utf8_in_a_file_with_file_and_line(checkpoint, tmp_path, capsys):
    path = write(tmp_path, "latin1.txt", "Anna saw Bob\n".encode() + "José ran home\n".encode("latin-1"))
    code, _, err = predict_file(checkpoint, path, capsys)
    assert code == 2
    assert f"rnnkit predict: error: {path}:2: cannot decode byte 0xe9 at byte offset 16 (column 4) " \
           "as utf-8" in err
    assert "rnnkit predict reads UTF-8" in err and "Traceback" not in err


def test_predict_reports_invalid_utf8_on_stdin_with_line(checkpoint, capsys, monkeypatch):
    code, _, err = predict_stdin(checkpoint, b"Anna saw Bob\n\nJos\xe9 ran\n", capsys, monkeypatch)
    assert code == 2
    assert "rnnkit predict: error: <stdin>:3: cannot decode byte 0xe9" in err and "Traceback" not in err


def test_predict_with_a_folder_as_file(checkpoint, tmp_path, capsys):
    code, _, err = predict_file(checkpoint, tmp_path, capsys)
    assert code == 2
    assert err.strip() == f"rnnkit predict: error: {tmp_path}: is a folder; give a file"
