"""rnnkit inspect attention: a Seq2Seq's attention per generated token, as JSON and heat maps."""

import json

import pytest
import torch

from rnnkit import checkpoint, cli
from rnnkit.config import parse_config
from rnnkit.data import collate
from rnnkit.inspect import attention_maps
from rnnkit.models import Seq2Seq
from rnnkit.run import inspect_attention, train

WORDS = ["home", "out", "now", "up"]


def train_seq2seq(tmp_path, context="attention"):
    f = tmp_path / "fra.txt"
    f.write_text("".join(f"go {w} .\tva {w} !\tCC-BY\n" for w in WORDS * 6))
    train(parse_config({
        "data": {"format": "parallel", "train": str(f), "dev_fraction": 0.25},
        "model": {"type": "Seq2Seq", "options": {"embedding_dim": 8, "context": context,
                                                 "encoder": {"cell": "gru", "hidden_sizes": [8], "bidirectional": True},
                                                 "decoder": {"cell": "gru", "hidden_sizes": [8]}}},
        "trainer": {"epochs": 2, "batch_size": 4, "progress": False, "plots": False, "num_threads": 1,
                    "optimizer": {"name": "adam", "lr": 0.02}, "out_dir": str(tmp_path / "run")}}))
    return f


def test_maps_are_the_models_own_attention(tmp_path):
    data = train_seq2seq(tmp_path)
    best = tmp_path / "run" / "best"
    (tmp_path / "src.txt").write_text('go home .\n{"tokens": ["go", "up", "up", "."]}\n')
    summary = inspect_attention(best, tmp_path / "src.txt", tmp_path / "out")
    sentences = json.loads((tmp_path / "out" / "attention.json").read_text())
    assert summary["sentences"] == 2 and len(summary["png"]) == 2
    assert all((tmp_path / "out" / f"attention_00{i}.png").stat().st_size > 1000 for i in (1, 2))
    assert [s["source"] for s in sentences] == [["go", "home", "."], ["go", "up", "up", "."]]

    loaded = checkpoint.load(best)
    model, source, target = loaded.model, loaded.vocabs["words"]["itos"], loaded.vocabs["target"]["itos"]
    model.eval()
    for s in sentences:
        assert len(s["weights"]) == len(s["target"]) and all(len(row) == len(s["source"]) for row in s["weights"])
        assert all(sum(row) == pytest.approx(1.0, abs=1e-5) for row in s["weights"])
        # teacher-forcing the generated tokens reproduces the weights of the free-running decoder
        ids = [target.index(t) for t in s["target"]]
        if ids[-1] != model.eos_id:
            ids.append(model.eos_id)
        batch = collate([{"inputs": [source.index(t) for t in s["source"]], "targets": [model.bos_id] + ids}])
        expected = model.attention_weights(batch)[0, :len(s["target"])]
        assert torch.tensor(s["weights"]) == pytest.approx(expected, abs=1e-6)
        # and the tokens are what predict decodes
        assert [target.index(t) for t in s["target"] if t != "<eos>"] == model.predict(batch)[0]

    # a line of the parallel file is read by its source column; --max-sentences caps the count
    assert cli.main(["inspect", "attention", str(best), str(data), "--out", str(tmp_path / "par"),
                     "--max-sentences", "3"]) == 0
    par = json.loads((tmp_path / "par" / "attention.json").read_text())
    assert [s["source"] for s in par] == [["go", "home", "."], ["go", "out", "."], ["go", "now", "."]]


def test_attention_maps_match_a_batch_with_padding():
    torch.manual_seed(0)
    model = Seq2Seq(source_vocab_size=9, target_vocab_size=7, embedding_dim=4, max_target_length=5,
                    encoder={"cell": "gru", "hidden_sizes": [6]}).eval()
    batch = {"inputs": torch.tensor([[4, 5, 6, 7], [8, 4, 0, 0]]), "lengths": torch.tensor([4, 2])}
    maps = attention_maps(model, batch)
    for b, m in enumerate(maps):
        alone = attention_maps(model, {"inputs": batch["inputs"][b:b + 1, :int(batch["lengths"][b])],
                                       "lengths": batch["lengths"][b:b + 1]})[0]
        assert m["ids"] == alone["ids"] and len(m["weights"][0]) == int(batch["lengths"][b])
        assert torch.tensor(m["weights"]) == pytest.approx(torch.tensor(alone["weights"]), abs=1e-6)
        assert len(m["ids"]) <= 5


def test_refuses_a_checkpoint_without_attention(tmp_path, capsys):
    from tiny_runs import train_teddy_tagger

    train_seq2seq(tmp_path, context="init")
    (tmp_path / "src.txt").write_text("go home .\n")
    assert cli.main(["inspect", "attention", str(tmp_path / "run" / "best"), str(tmp_path / "src.txt")]) == 2
    assert "holds a Seq2Seq with context 'init'; attention maps need a Seq2Seq trained with " \
           "model.options.context: attention" in capsys.readouterr().err
    tagger = tmp_path / "tagger"
    tagger.mkdir()
    train_teddy_tagger(tagger, options={"embedding_dim": 4, "encoder": {"cell": "gru", "hidden_sizes": [4]}}, epochs=1)
    assert cli.main(["inspect", "attention", str(tagger / "run" / "best"), str(tmp_path / "src.txt")]) == 2
    assert "holds a SequenceTagger; attention maps need" in capsys.readouterr().err
