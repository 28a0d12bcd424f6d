"""A class-conditioned Generator from a config: train -> evaluate (perplexity overall and per
class) -> predict (class names in, generated text out)."""

import io
import json
import math

import pytest
import torch

from rnnkit import checkpoint, cli
from rnnkit.config import ConfigError, parse_config
from rnnkit.run import evaluate, predict, train

LINES = {"pos": ["a fine film", "good and fine", "a good one"], "neg": ["dull stuff", "bad and dull", "so bad"]}


def write_data(path, copies=6):
    path.write_text("".join(f"{label} {text}\n" for _ in range(copies) for label, texts in LINES.items()
                            for text in texts))
    return path


def train_generator(tmp_path, **options):
    path = write_data(tmp_path / "gen.txt")
    cfg = parse_config({
        "data": {"format": "label_text", "train": str(path), "dev": str(path), "tokenizer": {"level": "char"}},
        "model": {"type": "Generator", "options": {"embedding_dim": 8, "condition_dim": 4,
                                                   "decoder": {"cell": "gru", "hidden_sizes": [16]}, **options}},
        "trainer": {"epochs": 3, "batch_size": 6, "progress": False, "plots": False, "num_threads": 1,
                    "optimizer": {"name": "adam", "lr": 0.02}, "out_dir": str(tmp_path / "run")}})
    return path, train(cfg)


def test_config_keeps_derived_generator_options_out(tmp_path):
    with pytest.raises(ConfigError, match="options.num_classes is set by rnnkit from the data"):
        parse_config({"data": {"format": "label_text", "train": "x"},
                      "model": {"type": "Generator", "options": {"num_classes": 3}}})
    with pytest.raises(ConfigError, match="model.type Generator cannot learn from data.format 'conllu'"):
        parse_config({"data": {"format": "conllu", "train": "x"}, "model": {"type": "Generator"}})


def test_train_evaluate_predict_round_trip(tmp_path):
    path, summary = train_generator(tmp_path, max_length=7)
    best = tmp_path / "run" / "best"
    assert set(summary["dev"]) == {"loss", "perplexity", "perplexity/neg", "perplexity/pos"}

    # per-class perplexity is exp of the model's mean token loss on that class's lines alone
    loaded = checkpoint.load(best)
    metrics = evaluate(best, path)
    from rnnkit.data import Encoder, Vocab, collate, read_label_text, Tokenizer

    words, labels = Vocab.from_dict(loaded.vocabs["words"]), Vocab.from_dict(loaded.vocabs["labels"])
    encoder = Encoder(vocab=words, label_vocab=labels, generate=True)
    examples = read_label_text(path, tokenizer=Tokenizer("char"))
    loaded.model.eval()
    for name in ("pos", "neg"):
        batch = collate(encoder.encode_all([ex for ex in examples if ex.label == name]))
        with torch.no_grad():
            assert metrics[f"perplexity/{name}"] == pytest.approx(math.exp(float(loaded.model.loss(batch))), rel=1e-5)
    assert min(metrics["perplexity/pos"], metrics["perplexity/neg"]) <= metrics["perplexity"] \
        <= max(metrics["perplexity/pos"], metrics["perplexity/neg"])

    rows = list(predict(best, ["pos", '{"label": "neg", "id": 3}', ""]))
    assert [r["label"] for r in rows] == ["pos", "neg"] and rows[1]["id"] == 3
    sampled = list(predict(best, ["pos"] * 4, sampling={"strategy": "sample", "seed": 0, "max_length": 5}))
    again = list(predict(best, ["pos"] * 4, sampling={"strategy": "sample", "seed": 0, "max_length": 5}))
    assert sampled == again
    for r in rows + sampled:
        limit = 7 if r in rows else 5
        # char level: one character per token, and "<unk>" (a token the sampler may draw) is one
        assert isinstance(r["text"], str) and len(r["text"].replace("<unk>", "?")) <= limit
        assert "<bos>" not in r["text"] and "<pad>" not in r["text"] and "<eos>" not in r["text"]
    # greedy output is the model's own argmax decoding, mapped through the vocabulary
    ids = loaded.model.predict({"condition": torch.tensor([labels.stoi_["pos"]])})[0]
    assert rows[0]["text"] == "".join(words.itos_[i] for i in ids)


def test_cli_predict_and_its_errors(tmp_path, capsys, monkeypatch):
    train_generator(tmp_path)
    best = str(tmp_path / "run" / "best")
    monkeypatch.setattr("sys.stdin", io.StringIO("neg\n"))
    assert cli.main(["predict", best, "--strategy", "sample", "--temperature", "0.7", "--top-k", "3",
                     "--seed", "1", "--max-length", "4"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["label"] == "neg" and len(row["text"].replace("<unk>", "?")) <= 4
    monkeypatch.setattr("sys.stdin", io.StringIO("happy\n"))
    assert cli.main(["predict", best]) == 2
    assert "<stdin>:1: 'happy' is not a class of this generator; it knows neg, pos" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("pos\n"))
    assert cli.main(["predict", best, "--temperature", "0.5"]) == 2
    assert "temperature: used by strategy 'sample' only" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("pos\n"))
    assert cli.main(["predict", best, "--windows", "all"]) == 2
    assert "windows='all' chooses a forecaster's origins; " in capsys.readouterr().err
    assert cli.main(["export", best, "--format", "pt2"]) == 2
    assert "cannot export a Generator" in capsys.readouterr().err
