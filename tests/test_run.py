"""From config to trained checkpoint and predictions, one tiny file per data format."""

import json
import re
from pathlib import Path

import pytest

from rnnkit.config import load_config, parse_config
from rnnkit.run import evaluate, predict, train

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.yaml"))
TRAINER = {"epochs": 2, "batch_size": 4, "progress": False, "plots": False, "num_threads": 1,
           "optimizer": {"name": "adam", "lr": 0.02}}
SMALL = {"embedding_dim": 8, "encoder": {"cell": "gru", "hidden_sizes": [8]}}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_config_validates(path):
    import yaml

    raw = yaml.safe_load(path.read_text())
    contextual = (raw["model"].get("options") or {}).get("contextual")
    overrides = []
    if contextual and not Path(contextual["checkpoint"]).exists():
        # a tagger on a biLM's features: the biLM is a run its first comment says to make first;
        # without it the rest of the config must still validate
        assert contextual["checkpoint"].startswith("runs/") and "rnnkit pretrain" in path.read_text().split("name:")[0]
        overrides = ["model.options.contextual=null"]
    cfg = load_config(path, overrides=overrides)
    # runs/data/: a file the config's first comment writes (statsmodels' data sets, no download);
    # data/: a standard set that is not in ../shared, whose first comment says where to get it
    assert cfg.data.train.startswith(("../shared/datasets/", "runs/data/", "data/"))
    header = path.read_text().split("name:")[0]
    if cfg.data.train.startswith("runs/data/"):
        # a one-liner that writes the file, or a bench/ script that writes the file's folder
        assert ("python -c" in header and cfg.data.train in header) or \
            ("python bench/" in header and str(Path(cfg.data.train).parent) in header)
    if cfg.data.train.startswith("data/"):
        assert re.search(r"\w+\.\w+/\S+", header) and "data/" in header


def run(tmp_path, data, model_type, options=None, **trainer):
    cfg = parse_config({"data": data, "model": {"type": model_type, "options": options or SMALL},
                        "trainer": {**TRAINER, "out_dir": str(tmp_path / "run"), **trainer}})
    return cfg, train(cfg)


def test_label_text_classifier(tmp_path):
    f = tmp_path / "sst.txt"
    f.write_text("".join(f"{i % 2} {'good fine' if i % 2 else 'bad dull'} film {i}\n" for i in range(24)))
    cfg, summary = run(tmp_path, {"format": "label_text", "train": str(f), "dev": str(f), "test": str(f)},
                       "SequenceClassifier")
    assert set(summary["test"]) == {"loss", "accuracy", "macro_f1"}
    rows = list(predict(tmp_path / "run" / "best", ["good film", '{"text": "bad dull", "id": 3}']))
    assert [set(r) for r in rows] == [{"text", "label"}, {"text", "id", "label"}]
    assert {r["label"] for r in rows} <= {"0", "1"}


def test_lm_text_language_model(tmp_path):
    f = tmp_path / "ptb.txt"
    f.write_text("the cat sat on the mat\nthe dog sat on the log\n" * 20)
    cfg, summary = run(tmp_path, {"format": "lm_text", "train": str(f), "dev": str(f), "bptt": 5},
                       "LanguageModel", {"embedding_dim": 8, "encoder": {"cell": "lstm", "hidden_sizes": [8]}})
    assert summary["dev"]["perplexity"] > 1 and summary["monitor"] == "perplexity"
    assert evaluate(tmp_path / "run" / "best", f)["perplexity"] == pytest.approx(summary["dev"]["perplexity"])
    (row,) = predict(tmp_path / "run" / "best", ["the cat"])
    assert isinstance(row["continuation"], str)


def test_parallel_seq2seq_with_bleu(tmp_path):
    f = tmp_path / "fra.txt"
    f.write_text("".join(f"go {w} .\tva {w} !\tCC-BY\n" for w in ["home", "out", "now", "up"] * 6))
    cfg, summary = run(tmp_path, {"format": "parallel", "train": str(f), "dev_fraction": 0.25},
                       "Seq2Seq", {"embedding_dim": 8, "encoder": {"cell": "gru", "hidden_sizes": [8]},
                                   "decoder": {"cell": "gru", "hidden_sizes": [8]}})
    assert 0 <= summary["dev"]["bleu"] <= 100 and summary["monitor"] == "bleu"
    (row,) = predict(tmp_path / "run" / "best", ["go home ."])
    assert isinstance(row["translation"], str)


def test_ts_series_classifier(tmp_path):
    lines = ["@problemName tiny", "@timeStamps false", "@missing false", "@univariate false",
             "@dimensions 2", "@equalLength false", "@classLabel true a b", "@data"]
    for i in range(16):
        up = i % 2
        series = [str(t if up else -t) for t in range(3 + i % 3)]
        lines.append(",".join(series) + ":" + ",".join(series) + (":a" if up else ":b"))
    f = tmp_path / "tiny.ts"
    f.write_text("\n".join(lines) + "\n")
    cfg, summary = run(tmp_path, {"format": "ts", "train": str(f), "test": str(f)}, "SequenceClassifier",
                       {"encoder": {"cell": "gru", "hidden_sizes": [8]}})
    assert set(summary["test"]) == {"loss", "accuracy", "macro_f1"}
    saved = json.loads((tmp_path / "run" / "best" / "checkpoint.json").read_text())
    assert set(saved["vocabs"]) == {"labels", "scaler"}


@pytest.mark.parametrize("fmt", ["label_text", "lm_text"])
def test_resumed_run_equals_an_uninterrupted_one(tmp_path, fmt):
    import torch

    from rnnkit import checkpoint

    f = tmp_path / "data.txt"
    if fmt == "label_text":
        f.write_text("".join(f"{i % 2} {'good fine' if i % 2 else 'bad dull'} film {i % 5}\n" for i in range(30)))
        model_type, options = "SequenceClassifier", {**SMALL, "dropout": 0.3}
    else:
        f.write_text("the cat sat on the mat\nthe dog sat on the log\n" * 10)
        model_type, options = "LanguageModel", {**SMALL, "dropout": 0.3}
    data = {"format": fmt, "train": str(f), "dev": str(f), **({"bptt": 4} if fmt == "lm_text" else {})}

    def config(out, epochs):
        return parse_config({"data": data, "model": {"type": model_type, "options": options},
                             "trainer": {**TRAINER, "epochs": epochs, "out_dir": str(out),
                                         "scheduler": {"name": "step", "gamma": 0.5}}})

    train(config(tmp_path / "full", 3))
    train(config(tmp_path / "split", 2))
    train(config(tmp_path / "split", 3), resume=True)
    full = checkpoint.load(tmp_path / "full" / "last").model.state_dict()
    split = checkpoint.load(tmp_path / "split" / "last").model.state_dict()
    assert all(torch.equal(full[k], split[k]) for k in full)


def test_ts_prediction_reports_class_and_gold(tmp_path):
    lines = ["@problemName tiny", "@timeStamps false", "@missing false", "@univariate true",
             "@equalLength false", "@classLabel true a b", "@data"]
    lines += [",".join(str(t if i % 2 else -t) for t in range(4)) + (":a" if i % 2 else ":b") for i in range(12)]
    f = tmp_path / "tiny.ts"
    f.write_text("\n".join(lines) + "\n")
    run(tmp_path, {"format": "ts", "train": str(f), "dev": str(f)}, "SequenceClassifier",
        {"encoder": {"cell": "gru", "hidden_sizes": [8]}}, epochs=8)
    rows = list(predict(tmp_path / "run" / "best", [], source=str(f)))
    assert len(rows) == 12 and rows[0]["where"] == f"{f}:8"
    assert sum(r["label"] == r["gold"] for r in rows) >= 10
    with pytest.raises(ValueError, match="give FILE"):
        list(predict(tmp_path / "run" / "best", [], source="-"))


def test_regression_reads_float_targets_and_reports_mae(tmp_path):
    f = tmp_path / "reg.jsonl"
    f.write_text("".join(json.dumps({"text": "up " * (1 + i % 4), "label": float(1 + i % 4)}) + "\n"
                         for i in range(24)))
    cfg, summary = run(tmp_path, {"format": "jsonl", "train": str(f), "dev": str(f)},
                       "SequenceClassifier", {**SMALL, "task": "regression"})
    assert summary["monitor"] == "mae" and {"mae", "rmse", "mape"} <= set(summary["dev"])
    (row,) = predict(tmp_path / "run" / "best", ["up up"])
    assert isinstance(row["value"], float)


def test_a_line_past_the_default_length_limit_is_an_error_naming_it(tmp_path):
    from rnnkit.config import TEXT_MAX_LENGTH

    f = tmp_path / "sst.txt"
    f.write_text("".join(f"{i % 2} good film {i}\n" for i in range(8)))
    run(tmp_path, {"format": "label_text", "train": str(f), "dev": str(f)}, "SequenceClassifier")
    long = tmp_path / "long.txt"
    long.write_text("fine\n" + " ".join(["good"] * (TEXT_MAX_LENGTH + 1)) + "\n")
    with pytest.raises(ValueError, match=rf"long.txt:2: .* more than max_length={TEXT_MAX_LENGTH}; raise max_length "
                                         r"\(the config's data.max_length; null for no limit\)"):
        list(predict(tmp_path / "run" / "best", open(long), source=str(long)))


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["extra"]["config"]["trainer"].update(epochz=3),
     r"checkpoint.json \(extra.config\): trainer.epochz: unknown field"),
    (lambda m: m["vocabs"]["labels"]["itos"].pop(),
     r"checkpoint.json: vocabs.labels names 1 labels but the model scores 2"),
])
def test_a_checkpoint_whose_run_config_or_labels_are_wrong_is_refused_before_any_record(tmp_path, capsys,
                                                                                        edit, message):
    from rnnkit.cli import main

    f = tmp_path / "sst.txt"
    f.write_text("".join(f"{i % 2} good film {i}\n" for i in range(8)))
    run(tmp_path, {"format": "label_text", "train": str(f), "dev": str(f)}, "SequenceClassifier")
    manifest = tmp_path / "run" / "best" / "checkpoint.json"
    data = json.loads(manifest.read_text())
    edit(data)
    manifest.write_text(json.dumps(data))
    assert main(["predict", str(tmp_path / "run" / "best"), str(f)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and re.search(message, out.err) and "Traceback" not in out.err
