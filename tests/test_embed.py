"""rnnkit pretrain and rnnkit embed, end to end on tiny files; contextual features from a config."""

import json
import shutil

import numpy as np
import pytest
import torch

from rnnkit import checkpoint as ckpt
from rnnkit.cli import main
from rnnkit.config import ConfigError, load_config, parse_config
from rnnkit.data import TaggedExample, collate
from rnnkit.embed import embed_file, token_vectors
from rnnkit.run import Predictor, evaluate, train
from tiny_runs import train_teddy_tagger

torch.set_num_threads(1)

SENTENCES = ["the river bank was muddy", "she paid the bank a visit", "the bank raised its rates",
             "we sat on the bank of the river", "money in the bank", "a muddy river"]
TRAINER = {"epochs": 2, "batch_size": 4, "progress": False, "plots": False, "num_threads": 1}
BILM = {"embedding_dim": 8, "encoder": {"cell": "gru", "hidden_sizes": [8, 8]}}


def _pretrain(tmp_path, data: dict | None = None, name="bilm"):
    text = tmp_path / "text.txt"
    text.write_text("\n".join(SENTENCES * 3) + "\n")
    data = data or {"format": "text", "train": str(text), "dev": str(text)}
    summary = train(parse_config({"data": data, "model": {"type": "BiLanguageModel", "options": BILM},
                                  "trainer": {**TRAINER, "out_dir": str(tmp_path / name)}}))
    return tmp_path / name / "best", summary


def _read(out, names=("forward", "backward", "merged")):
    index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    return {n: np.load(out / f"{n}.npy") for n in names if (out / f"{n}.npy").exists()}, index


def test_pretrain_reports_both_directions_and_embed_equals_the_bilm_output(tmp_path):
    path, summary = _pretrain(tmp_path)
    assert {"forward_perplexity", "backward_perplexity", "perplexity"} <= set(summary["dev"])
    lines = ["the river bank", "money in the bank was muddy"]
    info = embed_file(path, lines, tmp_path / "vec", source="in.txt")
    arrays, index = _read(tmp_path / "vec")
    assert info["tokens"] == 9 and info["dims"] == {"forward": 8, "backward": 8, "merged": 16}
    assert [(r["sentence"], r["position"], r["token"]) for r in index[2:4]] == [(0, 2, "bank"), (1, 0, "money")]
    assert index[3]["where"] == "in.txt:2"
    loaded = ckpt.load(path)
    model, stoi = loaded.model, {t: i for i, t in enumerate(loaded.vocabs["words"]["itos"])}
    ids = [[stoi[t] for t in line.split()] for line in lines]
    with torch.no_grad():
        c = model.contextual(collate([{"inputs": s} for s in ids]))
    want_f = torch.cat([c["forward"][0, :3, -1], c["forward"][1, :6, -1]]).numpy()
    want_b = torch.cat([c["backward"][0, :3, -1], c["backward"][1, :6, -1]]).numpy()
    np.testing.assert_allclose(arrays["forward"], want_f, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arrays["backward"], want_b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arrays["merged"], np.concatenate([want_f, want_b], 1), rtol=1e-5, atol=1e-6)
    # layer 0 is the static token layer: "bank" gets the same vector in every sentence
    embed_file(path, lines, tmp_path / "static", layer=0)
    static, _ = _read(tmp_path / "static")
    np.testing.assert_array_equal(static["merged"][2], static["merged"][6])
    assert not np.allclose(arrays["merged"][2], arrays["merged"][6])


def test_pretrain_reads_the_text_of_a_labelled_data_set(tmp_path):
    tsv = tmp_path / "data.tsv"
    tsv.write_text("text\tlabel\n" + "".join(f"{s}\t{'pos' if i % 2 else 'neg'}\n" for i, s in enumerate(SENTENCES)))
    path, summary = _pretrain(tmp_path, {"format": "tsv", "train": str(tsv), "dev": str(tsv)})
    assert ckpt.load(path).vocabs.keys() == {"words"}  # no label vocabulary: labels are not read
    assert summary["dev"]["forward_perplexity"] > 1


@pytest.mark.parametrize("merge", ["concat", "sum"])
def test_embed_from_a_tagger_equals_its_encoder(tmp_path, merge):
    data = train_teddy_tagger(tmp_path, options={"embedding_dim": 8, "encoder": {
        "cell": "lstm", "hidden_sizes": [6, 6], "bidirectional": True, "merge": merge}}, epochs=1)
    path = tmp_path / "run" / "best"
    lines = ["Teddy Roosevelt was president", "Teddy bears"]
    embed_file(path, lines, tmp_path / "vec", format="safetensors")
    from safetensors.numpy import load_file

    arrays = load_file(str(tmp_path / "vec" / "vectors.safetensors"))
    model = ckpt.load(path).model
    p = Predictor(path)
    batch = collate([p._encoder(TaggedExample(s.split(), None, "x")) for s in lines])
    with torch.no_grad():
        x, lengths = model.encoder_input(batch)
        out, _ = model.encoder(x, lengths=lengths)
        top = model.encoder.layers[-1]
        below = model.encoder.layers[0](x, lengths=lengths)[0]
        f, _ = top.forward_layer(below, lengths=lengths)
        b, _ = top.backward_layer(below, lengths=lengths, reverse=True)
    rows = lambda t: torch.cat([t[0, :4], t[1, :2]]).numpy()  # noqa: E731
    np.testing.assert_allclose(arrays["merged"], rows(out), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arrays["forward"], rows(f), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(arrays["backward"], rows(b), rtol=1e-4, atol=1e-5)
    assert arrays["merged"].shape == (6, 12 if merge == "concat" else 6)


def test_embed_from_a_language_model_has_a_forward_half_only(tmp_path):
    text = tmp_path / "lm.txt"
    text.write_text("\n".join(SENTENCES * 3) + "\n")
    train(parse_config({"data": {"format": "lm_text", "train": str(text), "dev": str(text), "bptt": 5},
                        "model": {"type": "LanguageModel", "options": {"embedding_dim": 8,
                                                                       "encoder": {"hidden_sizes": [8]}}},
                        "trainer": {**TRAINER, "epochs": 1, "out_dir": str(tmp_path / "lm")}}))
    info = embed_file(tmp_path / "lm" / "best", ["the bank"], tmp_path / "vec")
    assert info["dims"] == {"forward": 8, "merged": 8} and info["tokens"] == 2
    model = ckpt.load(tmp_path / "lm" / "best").model
    words = ckpt.load(tmp_path / "lm" / "best").vocabs["words"]
    stoi = {t: i for i, t in enumerate(words["itos"])}
    vectors = token_vectors(model, collate([{"inputs": [3, stoi["the"], stoi["bank"]]}]))
    np.testing.assert_allclose(np.load(tmp_path / "vec" / "forward.npy"), vectors["forward"][0, 1:].numpy(),
                               rtol=1e-5, atol=1e-6)


def _tagger_config(tmp_path, data, checkpoint):
    return {"data": {"format": "conll", "train": str(data), "dev": str(data)},
            "model": {"type": "SequenceTagger", "options": {
                "embedding_dim": 8, "encoder": {"hidden_sizes": [8], "bidirectional": True},
                "contextual": {"checkpoint": str(checkpoint), "freeze": True}}},
            "trainer": {**TRAINER, "epochs": 1, "out_dir": str(tmp_path / "tagger")}}


def test_tagger_with_bilm_features_trains_and_loads_without_the_bilm_folder(tmp_path):
    bilm, _ = _pretrain(tmp_path)
    data = tmp_path / "ner.conll"
    data.write_text("the O\nriver O\nbank B-LOC\n\nmoney O\nin O\nthe O\nbank B-ORG\n\n" * 4)
    train(parse_config(_tagger_config(tmp_path, data, bilm)))
    saved = ckpt.read_manifest(tmp_path / "tagger" / "best")
    assert "checkpoint" not in saved["extra"]["config"]["model"]["options"]["contextual"]
    loaded = ckpt.load(tmp_path / "tagger" / "best").model
    pretrained = ckpt.load(bilm).model
    torch.testing.assert_close(loaded.contextual.bilm.input.embedding.weight, pretrained.input.embedding.weight)
    shutil.rmtree(tmp_path / "bilm")  # the biLM's folder is gone: the tagger still loads and runs
    before = evaluate(tmp_path / "tagger" / "best", data)
    records = list(Predictor(tmp_path / "tagger" / "best").records(["the river bank"]))
    assert len(records[0]["tags"]) == 3 and before["accuracy"] >= 0
    # training again from the config now fails, naming the option and the missing folder
    with pytest.raises(ConfigError, match=r"options\.contextual\.checkpoint: checkpoint '.*bilm/best' cannot be read"):
        parse_config(_tagger_config(tmp_path, data, bilm))


def test_missing_bilm_checkpoint_is_named_with_the_config_line(tmp_path):
    cfg = tmp_path / "tagger.yaml"
    cfg.write_text("data: {format: conll, train: x.conll}\nmodel:\n  type: SequenceTagger\n  options:\n"
                   "    contextual:\n      checkpoint: runs/nowhere\n")
    with pytest.raises(ConfigError, match=r"tagger.yaml:6: model.options.contextual.checkpoint: checkpoint "
                                          r"'runs/nowhere' cannot be read as a pre-trained biLM"):
        load_config(cfg)


def test_cli_pretrain_embed_and_their_one_line_errors(tmp_path, capsys):
    bilm, _ = _pretrain(tmp_path)
    text = tmp_path / "in.txt"
    text.write_text("the river bank\n")
    assert main(["embed", str(bilm), str(text), "-o", str(tmp_path / "v")]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == 3
    assert main(["embed", str(bilm), str(text), "--layer", "3"]) == 2
    assert "layer must be top or an integer from 0 to 2" in capsys.readouterr().err
    assert main(["predict", str(bilm), str(text)]) == 2
    assert "use is its vectors: rnnkit embed" in capsys.readouterr().err
    cfg = tmp_path / "tagger.yaml"
    cfg.write_text("data: {format: conll, train: x.conll}\nmodel: {type: SequenceTagger}\n")
    assert main(["pretrain", str(cfg)]) == 2
    assert "rnnkit pretrain trains a BiLanguageModel; got SequenceTagger" in capsys.readouterr().err
