"""The rnnkit command end to end on tiny files: help, train, evaluate, predict, and the bad-input
errors (unknown label, bad config, truncated checkpoint, checkpoint of another model type)."""

import json
import random
import subprocess
import sys

import pytest

from rnnkit.cli import main

NAMES, OTHER = ["Anna", "Bob", "Carl", "Dora"], ["saw", "the", "cat", "and", "ran", "home"]


def conll(path, n, seed):
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        for _ in range(rng.randint(2, 6)):
            if rng.random() < 0.3:
                lines += [f"{rng.choice(NAMES)}\tB-PER", f"{rng.choice(NAMES)}son\tI-PER"]
            else:
                lines.append(f"{rng.choice(OTHER)}\tO")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return path


CONFIG = """\
name: cli-test
data:
  format: conll
  train: {train}
  dev: {dev}
  test: {dev}
  chars: true
model:
  type: {model}
  options:
    embedding_dim: 8
    encoder: {{cell: gru, hidden_sizes: [8], bidirectional: true}}
trainer:
  epochs: 2
  batch_size: 8
  optimizer: {{name: adam, lr: 0.02}}
  progress: false
  plots: false
  num_threads: 1
  out_dir: {out}
"""


@pytest.fixture
def trained(tmp_path, capsys):
    train, dev = conll(tmp_path / "train.txt", 40, 0), conll(tmp_path / "dev.txt", 10, 1)
    config = tmp_path / "tagger.yaml"
    config.write_text(CONFIG.format(train=train, dev=dev, model="SequenceTagger", out=tmp_path / "run"))
    assert main(["train", str(config), "--set", "trainer.epochs=3"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return tmp_path, summary


@pytest.mark.parametrize("command", ["demo", "train", "evaluate", "predict"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert f"usage: rnnkit {command}" in capsys.readouterr().out


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "rnnkit", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "demo" in out.stdout and "predict" in out.stdout


def test_train_writes_results_and_checkpoints(trained):
    tmp_path, summary = trained
    run = tmp_path / "run"
    assert summary["epochs"] == 3 and summary["monitor"] == "accuracy"
    assert {"accuracy", "span_f1", "loss"} <= set(summary["test"])
    assert json.loads((run / "results.json").read_text()) == summary
    assert len((run / "log.jsonl").read_text().splitlines()) == 3
    assert (run / "best" / "checkpoint.json").is_file() and (run / "last" / "trainer_state.json").is_file()


def test_evaluate_prints_metrics(trained, capsys):
    tmp_path, summary = trained
    assert main(["evaluate", str(tmp_path / "run" / "best"), str(tmp_path / "dev.txt")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    assert result["span_f1"] == pytest.approx(summary["test"]["span_f1"])


def test_predict_writes_jsonl_from_file_and_stdin(trained, capsys, monkeypatch):
    import io

    tmp_path, _ = trained
    inputs = tmp_path / "in.txt"
    inputs.write_text('Anna Annason saw the cat\n\n{"tokens": ["Bob", "ran"], "id": 7}\n')
    assert main(["predict", str(tmp_path / "run" / "best"), str(inputs)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["tokens"] for r in rows] == [["Anna", "Annason", "saw", "the", "cat"], ["Bob", "ran"]]
    assert rows[1]["id"] == 7 and all(len(r["tags"]) == len(r["tokens"]) for r in rows)
    assert set(rows[0]["tags"]) <= {"O", "B-PER", "I-PER"}
    monkeypatch.setattr("sys.stdin", io.StringIO("Dora ran home\n"))
    assert main(["predict", str(tmp_path / "run" / "best"), "-"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == ["Dora", "ran", "home"]


def test_unknown_label_at_evaluation_names_file_and_line(trained, capsys):
    tmp_path, _ = trained
    bad = tmp_path / "bad.txt"
    bad.write_text("Anna\tB-PER\nsaw\tO\n\nthe\tO\ncat\tB-ANIMAL\n")
    assert main(["evaluate", str(tmp_path / "run" / "best"), str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:" in err and "'B-ANIMAL'" in err and "B-PER" in err


def test_truncated_checkpoint_is_reported(trained, capsys):
    tmp_path, _ = trained
    weights = tmp_path / "run" / "best" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert main(["evaluate", str(tmp_path / "run" / "best"), str(tmp_path / "dev.txt")]) == 2
    assert "model.safetensors: truncated or overwritten: 100 bytes" in capsys.readouterr().err


def test_resume_from_a_checkpoint_of_another_model_type(trained, capsys):
    tmp_path, _ = trained
    lines = tmp_path / "lines.txt"
    lines.write_text("1 good film\n0 bad film\n1 fine\n0 dull\n")
    config = tmp_path / "clf.yaml"
    config.write_text(CONFIG.format(train=lines, dev=lines, model="SequenceClassifier", out=tmp_path / "run")
                      .replace("format: conll", "format: label_text").replace("  chars: true\n", ""))
    assert main(["train", str(config), "--resume"]) == 2
    assert "holds a SequenceTagger model; expected SequenceClassifier" in capsys.readouterr().err


def test_bad_config_exits_with_the_field(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(CONFIG.format(train="a", dev="b", model="SequenceTagger", out=tmp_path / "run")
                      .replace("epochs: 2", "epochs: two"))
    assert main(["train", str(config)]) == 2
    assert f"{config}:14: trainer.epochs: Input should be a valid integer" in capsys.readouterr().err


def test_missing_data_file(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.format(train=tmp_path / "nope.txt", dev=tmp_path / "nope.txt",
                                    model="SequenceTagger", out=tmp_path / "run"))
    assert main(["train", str(config)]) == 2
    assert "nope.txt" in capsys.readouterr().err


def test_demo_command_prints_the_table(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--train-size", "60", "--test-size", "40",
                 "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "BiGRU" in out and str(tmp_path / "demo") in out
    assert (tmp_path / "demo" / "bigru" / "best" / "model.safetensors").is_file()


def test_build_reports_the_compiled_recurrence(capsys, monkeypatch):
    assert main(["build"]) == 0
    assert "compiled recurrence ready" in capsys.readouterr().out
    from rnnkit import _compiled

    monkeypatch.setattr(_compiled, "_ext", None)
    monkeypatch.setattr(_compiled, "_error", "CalledProcessError: g++ not found")
    assert main(["build"]) == 1
    err = capsys.readouterr().err
    assert "could not be built: CalledProcessError: g++ not found" in err
    assert "torch's kernels and the Python loop instead" in err
