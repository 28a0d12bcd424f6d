"""What the CLI writes where: predictions into a pipe that closes early, class probabilities,
and progress into a file or a pipe (plain lines, no carriage-return redraws)."""

import io
import json
import os
import subprocess
import sys

import pytest

from rnnkit.cli import main
from rnnkit.config import parse_config
from rnnkit.run import train
from rnnkit.training.trainer import _LineProgress, _progress
from tiny_runs import train_teddy_tagger


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clf")
    path = tmp / "reviews.tsv"
    rows = ["a great film\tpos", "a fine film\tpos", "a dull film\tneg", "a bad film\tneg"] * 6
    path.write_text("text\tlabel\n" + "\n".join(rows) + "\n")
    train(parse_config({
        "data": {"format": "tsv", "train": str(path), "dev": str(path)},
        "model": {"type": "SequenceClassifier", "options": {"embedding_dim": 8, "encoder": {"hidden_sizes": [8]}}},
        "trainer": {"epochs": 3, "batch_size": 4, "progress": False, "plots": False, "num_threads": 1,
                    "out_dir": str(tmp / "run"), "optimizer": {"name": "adam", "lr": 0.05}}}))
    return tmp / "run" / "best"


def test_probs_gives_each_label_a_probability_that_agrees_with_the_label(classifier, tmp_path, capsys):
    inputs = tmp_path / "in.txt"
    inputs.write_text("a great film\na bad film\n")
    assert main(["predict", str(classifier), str(inputs), "--probs"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 2
    for record in records:
        p = record["probabilities"]
        assert set(p) == {"pos", "neg"} and abs(sum(p.values()) - 1) < 1e-5
        assert max(p, key=p.get) == record["label"]
    assert main(["predict", str(classifier), str(inputs)]) == 0
    assert "probabilities" not in capsys.readouterr().out


def test_probs_of_a_tagger_is_refused(tmp_path, capsys):
    data = train_teddy_tagger(tmp_path, options={"embedding_dim": 4, "encoder": {"hidden_sizes": [4]}}, epochs=1)
    assert main(["predict", str(tmp_path / "run" / "best"), str(data), "--probs"]) == 2
    assert "probabilities are a classifier's" in capsys.readouterr().err


def test_predict_into_a_pipe_that_closes_early_exits_quietly(classifier, tmp_path):
    inputs = tmp_path / "many.txt"
    inputs.write_text("a great film\n" * 5000)  # more than a pipe holds
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run(["bash", "-c", f"set -o pipefail; '{sys.executable}' -m rnnkit predict "
                                        f"'{classifier}' '{inputs}' --batch-size 256 | head -n 1"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["label"] in ("pos", "neg")
    assert "Traceback" not in run.stderr and "BrokenPipe" not in run.stderr, run.stderr


def test_progress_into_a_file_is_plain_lines():
    out = io.StringIO()
    bar = _progress(total=4, desc="run epoch 1/1", enabled=True, stream=out)
    assert isinstance(bar, _LineProgress)
    bar.every = 0.0  # a line for every step
    for step in range(4):
        bar.set_postfix_str(f"loss {1 / (step + 1):.4f}")
        bar.update(1)
    bar.close()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0].startswith("run epoch 1/1: 1/4 steps (25%)") and lines[0].endswith("loss 1.0000")
    assert lines[-1].startswith("run epoch 1/1: 4/4 steps (100%)")


def test_training_with_progress_into_a_pipe_writes_no_carriage_returns(tmp_path, capfd):
    train_teddy_tagger(tmp_path, options={"embedding_dim": 4, "encoder": {"hidden_sizes": [4]}}, epochs=1)
    capfd.readouterr()
    path = tmp_path / "ner.conll"
    train(parse_config({
        "data": {"format": "conll", "train": str(path), "dev": str(path)},
        "model": {"type": "SequenceTagger", "options": {"embedding_dim": 4, "encoder": {"hidden_sizes": [4]}}},
        "trainer": {"epochs": 1, "batch_size": 4, "progress": True, "plots": False, "num_threads": 1,
                    "out_dir": str(tmp_path / "run2")}}))
    err = capfd.readouterr().err
    assert "\r" not in err and "steps (100%)" in err, err


@pytest.fixture(scope="module")
def char_lm(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lm")
    path = tmp / "lines.txt"
    path.write_text("abcab\n" * 60)  # short lines: a line end comes every 5 characters
    train(parse_config({
        "data": {"format": "lm_text", "train": str(path), "dev": str(path), "bptt": 8,
                 "tokenizer": {"level": "char"}},
        "model": {"type": "LanguageModel", "options": {"embedding_dim": 8,
                                                       "encoder": {"cell": "gru", "hidden_sizes": [16]}}},
        "trainer": {"epochs": 8, "batch_size": 4, "progress": False, "plots": False, "num_threads": 1,
                    "out_dir": str(tmp / "run"), "optimizer": {"name": "adam", "lr": 0.03}}}))
    return tmp / "run" / "best"


def _continuation(capsys, argv):
    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)["continuation"]


def test_language_model_prefix_max_tokens_and_across_lines(char_lm, capsys):
    ckpt = str(char_lm)
    one_line = _continuation(capsys, ["predict", ckpt, "--prefix", "abc", "--max-tokens", "30"])
    assert "\n" not in one_line and len(one_line) < 30  # it stops at the line end it learnt
    across = _continuation(capsys, ["predict", ckpt, "--prefix", "abc", "--max-tokens", "30", "--across-lines"])
    assert across.count("\n") >= 2 and len(across) == 30  # line ends written, generation goes on
    assert across.startswith(one_line + "\n")
    sampled = [_continuation(capsys, ["predict", ckpt, "--prefix", "a", "--strategy", "sample", "--temperature",
                                      "5", "--top-k", "3", "--seed", str(s), "--max-tokens", "12", "--across-lines"])
               for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] and sampled[0] != sampled[2]  # a seed repeats, another differs
    assert set("".join(sampled)) <= set("abc\n")


def test_sampling_options_are_refused_where_nothing_samples(char_lm, classifier, tmp_path, capsys):
    assert main(["predict", str(classifier), "--prefix", "a film", "--temperature", "2"]) == 2
    assert "holds a SequenceClassifier" in capsys.readouterr().err
    (tmp_path / "in.txt").write_text("a\n")
    assert main(["predict", str(char_lm), str(tmp_path / "in.txt"), "--prefix", "a"]) == 2
    assert "give it or FILE" in capsys.readouterr().err
    assert main(["predict", str(char_lm), "--prefix", "a", "--temperature", "2"]) == 2
    assert "strategy 'sample' only" in capsys.readouterr().err
